// Package api is keyledger's HTTP surface: Stack Auth's user-API-key endpoints under /api/v1
// (CONTRACT sections 2 and 3), plus /healthz, /readyz and /metrics.
//
// It maps HTTP to commands (create, update) and read-model queries (get, list, check), and
// the errors of the layers below to the contract's error codes in one table (errors.go).
//
// A request to /api/v1 is handled in this order: load shedding (503 when MaxInFlight
// requests are in flight), authentication (auth.go: project id header, access type, project,
// secret server key, admin token), then the request's params, query and body (decode.go:
// size, content type, UTF-8, JSON syntax, then every schema problem at once as one
// SCHEMA_ERROR), and only then any lookup. So a refused request never reaches the event store
// except for the project lookup, and never appends an event.
//
// Decisions the contract leaves open:
//   - Request ids: every response carries a fresh x-stack-request-id (a UUIDv7) made here; a
//     client-supplied value is ignored, so the request_id on an event always names a request
//     this service handled and logged.
//   - Trailing data after the JSON object is BODY_PARSING_ERROR (the body is not one JSON
//     document); a duplicate property is SCHEMA_ERROR.
//   - expires_at_millis 0 is the epoch (an expired key), not "never": only null or absent
//     mean never.
//   - A 500 is INTERNAL_SERVER_ERROR JSON naming the request id, without x-stack-known-error
//     (it is no known error); its cause is logged, never sent.
//   - Create waits for the projector like update does, but answers 200 even if the wait
//     times out: the key exists and its secret is in this response only.
//   - Get and check fall back to the event store for a key the read model has not seen, so a
//     key created through another instance is found at once.
package api
