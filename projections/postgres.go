package projections

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// This file opens and closes the PostgreSQL read model; postgres_config.go configures it,
// postgres_migrations.go creates its tables, postgres_queries.go reads them and
// postgres_apply.go writes them.

// Postgres is the read model in PostgreSQL, shared by every keysd instance of a deployment.
// Each instance's projector writes to it; the checkpoint row's lock makes them take turns,
// and whichever applies an event first makes the others skip it.
type Postgres struct {
	pool   *pgxpool.Pool
	schema string
	sql    pgStatements
}

var _ ReadModel = (*Postgres)(nil)

// OpenPostgres connects to PostgreSQL, brings the schema up to date (several instances may
// do so at once) and returns the read model.
func OpenPostgres(ctx context.Context, databaseURL string, cfg PostgresConfig) (*Postgres, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("read model database URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("read model database: %w", err)
	}
	p := &Postgres{pool: pool, schema: cfg.Schema, sql: newStatements(cfg.Schema)}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("read model schema %s on %s:%d: %w", cfg.Schema, pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, explain(err))
	}
	return p, nil
}

// explain adds what an operator should do to the PostgreSQL errors that opening can meet.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "3D000": // invalid_catalog_name
		return fmt.Errorf("%w (create the database first)", err)
	case "42501": // insufficient_privilege
		return fmt.Errorf("%w (the role needs CREATE on the database, or an existing schema it owns)", err)
	case "28P01", "28000": // invalid_password, invalid_authorization_specification
		return fmt.Errorf("%w (check the user and password of the database URL)", err)
	}
	return err
}

// Schema is the schema holding this read model's tables.
func (p *Postgres) Schema() string { return p.schema }

// Close implements ReadModel.
func (p *Postgres) Close() { p.pool.Close() }

// Ping implements ReadModel: one round trip to PostgreSQL.
func (p *Postgres) Ping(ctx context.Context) error {
	if err := p.pool.Ping(ctx); err != nil {
		return fmt.Errorf("PostgreSQL read model: %w", err)
	}
	return nil
}
