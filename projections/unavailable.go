package projections

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsUnavailable reports whether err means the read model's database could not be reached or
// did not answer in time: a refused or broken connection, a network error, a timeout, or one
// of PostgreSQL's own "come back later" errors (connection exceptions, shutdown, too many
// connections). Such a failure says nothing about the request, so the API answers it with
// 503 and Retry-After rather than 500; the projector retries it by itself.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return unavailableSQLState(pgErr.Code)
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// unavailableSQLState: class 08 (connection exception), 53 (insufficient resources: too many
// connections, out of memory or disk), 57P01-57P03 (the server is shutting down or starting).
func unavailableSQLState(code string) bool {
	if len(code) == 5 && (code[:2] == "08" || code[:2] == "53") {
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03":
		return true
	}
	return false
}
