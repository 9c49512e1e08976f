// Package api is keyledger's HTTP surface: Stack Auth's user-API-key endpoints under /api/v1
// (CONTRACT sections 2 and 3), plus /healthz, /readyz and /metrics.
//
// It maps HTTP to commands (create, update) and read-model queries (get, list, check), and
// the errors of the layers below to the contract's error codes in one table (errors.go).
// Requests are authenticated per project with the secret server key and, optionally, an
// admin access token that names the human actor recorded on the events.
//
// Request ids: every response carries a fresh x-stack-request-id (a UUIDv7) generated here;
// a client-supplied value is ignored, so the request_id on an event always names a request
// this service handled and can be found in its logs.
package api
