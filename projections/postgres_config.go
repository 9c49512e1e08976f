package projections

// This file configures the PostgreSQL read model.

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// PostgresConfig configures the PostgreSQL read model.
type PostgresConfig struct {
	// Schema holds the read model's tables. Default "keyledger". Rebuilds (keysctl replay)
	// fill another schema and swap it in, so the name must be a plain lowercase identifier.
	Schema string
	// MaxConns caps the connection pool. 0 keeps pool_max_conns from the URL, or pgxpool's
	// default (the greater of 4 and the number of CPUs).
	MaxConns int32
}

// DefaultSchema is the schema of the live read model.
const DefaultSchema = "keyledger"

func (c *PostgresConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Validate reports every problem with the configuration at once.
func (c PostgresConfig) Validate() error {
	var errs []error
	switch {
	case !schemaName.MatchString(c.Schema):
		errs = append(errs, fmt.Errorf("schema %q must be lowercase letters, digits and underscores, not starting with a digit", c.Schema))
	case len(c.Schema) > 63:
		errs = append(errs, fmt.Errorf("schema %q is longer than PostgreSQL's 63 bytes", c.Schema))
	case strings.HasPrefix(c.Schema, "pg_"):
		errs = append(errs, fmt.Errorf("schema %q: names starting with pg_ are reserved by PostgreSQL", c.Schema))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max conns must not be negative, got %d", c.MaxConns))
	}
	return errors.Join(errs...)
}
