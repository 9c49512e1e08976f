package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// The baseline is what a user would write instead of keyledger: the same HTTP API for create,
// get and PATCH of one key, with the same JSON and the same authentication (project id and
// secret server key checked against a keyed hash), on one PostgreSQL table, one statement per
// request (PATCH is one UPDATE ... RETURNING), no events, no history.

// baselineProjectsPath creates a project on the baseline: a benchmark-only endpoint without
// authentication, standing in for keysctl.
const baselineProjectsPath = "/_bench/projects"

// baselineInfoPath tells how the baseline is configured, for keysbench's reports.
const baselineInfoPath = "/_bench/info"

// baselineInfo is the answer of baselineInfoPath.
type baselineInfo struct {
	MaxConns          int    `json:"max_conns"`
	SynchronousCommit string `json:"synchronous_commit"`
}

const baselineSchema = `
CREATE SCHEMA IF NOT EXISTS keysbench_baseline;
CREATE TABLE IF NOT EXISTS keysbench_baseline.projects (
    id              uuid PRIMARY KEY,
    server_key_hash text NOT NULL
);
CREATE TABLE IF NOT EXISTS keysbench_baseline.api_keys (
    project_id          uuid        NOT NULL,
    id                  uuid        NOT NULL,
    user_id             text        NOT NULL,
    description         text        NOT NULL,
    expires_at          timestamptz,
    manually_revoked_at timestamptz,
    created_at          timestamptz NOT NULL,
    is_public           boolean     NOT NULL,
    secret_hash         text        NOT NULL,
    last_four           text        NOT NULL,
    PRIMARY KEY (project_id, id)
)`

const (
	baselineColumns = `id::text, user_id, description, expires_at, manually_revoked_at, created_at, is_public, last_four`
	baselineInsert  = `INSERT INTO keysbench_baseline.api_keys
(project_id, id, user_id, description, expires_at, manually_revoked_at, created_at, is_public, secret_hash, last_four)
VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $7, $8)`
	baselineSelect = `SELECT ` + baselineColumns + ` FROM keysbench_baseline.api_keys WHERE project_id = $1 AND id = $2`
	// baselineUpdate is the whole PATCH: the description if given, the revocation if asked
	// (the first one wins), refused when revoked:false meets a revoked key.
	baselineUpdate = `UPDATE keysbench_baseline.api_keys SET
    description = COALESCE($3, description),
    manually_revoked_at = CASE WHEN $4::boolean IS TRUE
        THEN COALESCE(manually_revoked_at, date_trunc('milliseconds', now())) ELSE manually_revoked_at END
WHERE project_id = $1 AND id = $2 AND NOT ($4::boolean IS FALSE AND manually_revoked_at IS NOT NULL)
RETURNING ` + baselineColumns
)

type baselineServer struct {
	pool     *pgxpool.Pool
	hasher   *domain.Hasher
	projects sync.Map // id -> server key hash; projects never change
}

// runBaselineServer serves the baseline until ctx is done.
func runBaselineServer(fs *flag.FlagSet, _ *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	addr := fs.String("http-addr", "127.0.0.1:8091", "HTTP listen address")
	dbURL := fs.String("database-url", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL (pgx connection string)")
	maxConns := fs.Int("max-conns", 4, "connection pool size; a user sizes it for the best throughput: compare several baselines (4, 16, 64) with keysbench compare --other-url a,b,c")
	syncCommit := fs.String("synchronous-commit", "on", "PostgreSQL synchronous_commit for the pool's sessions: on (every commit on disk before the answer) or off")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		pcfg, err := pgxpool.ParseConfig(*dbURL)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench baseline-server: --database-url: %v\n", err)
			return 2
		}
		pcfg.MaxConns = int32(*maxConns)
		pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = *syncCommit
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench baseline-server: %v\n", err)
			return 1
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, baselineSchema); err != nil {
			fmt.Fprintf(stderr, "keysbench baseline-server: schema: %v\n", err)
			return 1
		}
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		hasher, _ := domain.NewHasher(secret)
		s := &baselineServer{pool: pool, hasher: hasher}
		mux := http.NewServeMux()
		mux.HandleFunc("POST "+baselineProjectsPath, s.createProject)
		mux.HandleFunc("GET "+baselineInfoPath, func(w http.ResponseWriter, _ *http.Request) {
			baselineJSON(w, http.StatusOK, baselineInfo{MaxConns: *maxConns, SynchronousCommit: *syncCommit})
		})
		mux.HandleFunc("POST /api/v1/user-api-keys", s.auth(s.createKey))
		mux.HandleFunc("GET /api/v1/user-api-keys/{id}", s.auth(s.getKey))
		mux.HandleFunc("PATCH /api/v1/user-api-keys/{id}", s.auth(s.updateKey))
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench baseline-server: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "keysbench baseline-server: http://%s (pool %d, synchronous_commit=%s)\n", ln.Addr(), *maxConns, *syncCommit)
		return serveUntilDone(ctx, ln, api.NewServer(*addr, mux), stderr)
	}
}

func serveUntilDone(ctx context.Context, ln net.Listener, srv *http.Server, stderr io.Writer) int {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return 0
	case err := <-errc:
		fmt.Fprintf(stderr, "keysbench: HTTP server: %v\n", err)
		return 1
	}
}

func (s *baselineServer) createProject(w http.ResponseWriter, r *http.Request) {
	random := make([]byte, 32)
	_, _ = rand.Read(random)
	key := domain.FormatServerKey(random)
	id := uuid.NewString()
	if _, err := s.pool.Exec(r.Context(), `INSERT INTO keysbench_baseline.projects (id, server_key_hash) VALUES ($1, $2)`,
		id, s.hasher.HashServerKey(key)); err != nil {
		baselineError(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error())
		return
	}
	baselineJSON(w, http.StatusOK, createdProject{ProjectID: id, SecretServerKey: key})
}

// auth checks the project id and secret server key as keysd does, caching projects.
func (s *baselineServer) auth(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pid := r.Header.Get("x-stack-project-id")
		if pid == "" {
			baselineError(w, http.StatusBadRequest, "ACCESS_TYPE_WITHOUT_PROJECT_ID", "no project id")
			return
		}
		if _, err := uuid.Parse(pid); err != nil {
			baselineError(w, http.StatusBadRequest, "CURRENT_PROJECT_NOT_FOUND", "no such project")
			return
		}
		hash, ok := s.projects.Load(pid)
		if !ok {
			var hv string
			err := s.pool.QueryRow(r.Context(), `SELECT server_key_hash FROM keysbench_baseline.projects WHERE id = $1`, pid).Scan(&hv)
			if err != nil {
				baselineError(w, http.StatusBadRequest, "CURRENT_PROJECT_NOT_FOUND", "no such project")
				return
			}
			s.projects.Store(pid, hv)
			hash = hv
		}
		key := r.Header.Get("x-stack-secret-server-key")
		if key == "" {
			baselineError(w, http.StatusUnauthorized, "SERVER_AUTHENTICATION_REQUIRED", "no server key")
			return
		}
		if !s.hasher.ServerKeyMatches(key, hash.(string)) {
			baselineError(w, http.StatusUnauthorized, "INVALID_SECRET_SERVER_KEY", "invalid server key")
			return
		}
		h(w, r, pid)
	}
}

// baselineKey is keysd's key object (CONTRACT section 3).
type baselineKey struct {
	ID                string  `json:"id"`
	Description       string  `json:"description"`
	UserID            string  `json:"user_id"`
	ExpiresAt         *string `json:"expires_at"`
	ManuallyRevokedAt *string `json:"manually_revoked_at"`
	CreatedAt         string  `json:"created_at"`
	Type              string  `json:"type"`
	IsPublic          bool    `json:"is_public"`
	Value             any     `json:"value"`
}

const baselineTime = "2006-01-02T15:04:05.000Z"

func scanBaselineKey(row pgx.Row) (baselineKey, error) {
	var (
		k                baselineKey
		expires, revoked *time.Time
		created          time.Time
		lastFour         string
	)
	if err := row.Scan(&k.ID, &k.UserID, &k.Description, &expires, &revoked, &created, &k.IsPublic, &lastFour); err != nil {
		return k, err
	}
	f := func(t *time.Time) *string {
		if t == nil {
			return nil
		}
		s := t.UTC().Format(baselineTime)
		return &s
	}
	k.ExpiresAt, k.ManuallyRevokedAt, k.CreatedAt = f(expires), f(revoked), created.UTC().Format(baselineTime)
	k.Type, k.Value = "user", map[string]string{"last_four": lastFour}
	return k, nil
}

func (s *baselineServer) createKey(w http.ResponseWriter, r *http.Request, pid string) {
	var in struct {
		UserID      string `json:"user_id"`
		Description string `json:"description"`
		IsPublic    bool   `json:"is_public"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil || in.UserID == "" {
		baselineError(w, http.StatusBadRequest, "SCHEMA_ERROR", "user_id is required")
		return
	}
	id := uuid.NewString()
	random := make([]byte, domain.SecretKeyBytes)
	_, _ = rand.Read(random)
	secret, _ := domain.FormatSecretKey(id, domain.KeyTypeUser, in.IsPublic, random)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := s.pool.Exec(r.Context(), baselineInsert, pid, id, in.UserID, in.Description, now, in.IsPublic,
		s.hasher.HashSecretKey(secret), domain.LastFour(secret)); err != nil {
		baselineError(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "insert failed")
		return
	}
	baselineJSON(w, http.StatusOK, baselineKey{ID: id, Description: in.Description, UserID: in.UserID,
		CreatedAt: now.Format(baselineTime), Type: "user", IsPublic: in.IsPublic, Value: secret})
}

func (s *baselineServer) getKey(w http.ResponseWriter, r *http.Request, pid string) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		baselineError(w, http.StatusNotFound, "API_KEY_NOT_FOUND", "API key not found.")
		return
	}
	k, err := scanBaselineKey(s.pool.QueryRow(r.Context(), baselineSelect, pid, id))
	if errors.Is(err, pgx.ErrNoRows) {
		baselineError(w, http.StatusNotFound, "API_KEY_NOT_FOUND", "API key not found.")
		return
	}
	if err != nil {
		baselineError(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "select failed")
		return
	}
	baselineJSON(w, http.StatusOK, k)
}

func (s *baselineServer) updateKey(w http.ResponseWriter, r *http.Request, pid string) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		baselineError(w, http.StatusNotFound, "API_KEY_NOT_FOUND", "API key not found.")
		return
	}
	var in struct {
		Description *string `json:"description"`
		Revoked     *bool   `json:"revoked"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		baselineError(w, http.StatusBadRequest, "SCHEMA_ERROR", "bad body")
		return
	}
	k, err := scanBaselineKey(s.pool.QueryRow(r.Context(), baselineUpdate, pid, id, in.Description, in.Revoked))
	if errors.Is(err, pgx.ErrNoRows) {
		// Not there, or revoked:false on a revoked key: a second query tells which (rare).
		if _, gerr := scanBaselineKey(s.pool.QueryRow(r.Context(), baselineSelect, pid, id)); gerr == nil {
			baselineError(w, http.StatusConflict, "API_KEY_ALREADY_REVOKED", "API key is already revoked.")
			return
		}
		baselineError(w, http.StatusNotFound, "API_KEY_NOT_FOUND", "API key not found.")
		return
	}
	if err != nil {
		baselineError(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "update failed")
		return
	}
	baselineJSON(w, http.StatusOK, k)
}

func baselineError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("x-stack-known-error", code)
	baselineJSON(w, status, map[string]string{"code": code, "error": msg})
}

func baselineJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// floorBody is what the HTTP floor answers: a key object as check returns it.
var floorBody = []byte(`{"id":"6f48d739-92d8-4fc6-b7ae-a93c60a1a640","description":"ci deploy key","user_id":"user-1","expires_at":null,"manually_revoked_at":null,"created_at":"2026-11-26T00:52:09.796Z","type":"user","is_public":false,"value":{"last_four":"6c14"}}`)

// runFloorServer serves the HTTP floor: a trivial Go handler that reads the request body and
// answers every request with the same JSON, through the same http.Server settings as keysd.
func runFloorServer(fs *flag.FlagSet, _ *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	addr := fs.String("http-addr", "127.0.0.1:8092", "HTTP listen address")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = w.Write(floorBody)
		})
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench floor-server: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "keysbench floor-server: http://%s\n", ln.Addr())
		return serveUntilDone(ctx, ln, api.NewServer(*addr, h), stderr)
	}
}
