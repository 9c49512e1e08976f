package api

import (
	_ "embed"
	"net/http"
)

// OpenAPIDocument is the OpenAPI 3.1 description of every endpoint keysd serves (openapi.yaml
// beside this file), served at GET /api/v1/openapi.yaml. The end-to-end tests validate every
// request they make and every response they get against it, so it cannot drift from the code.
//
//go:embed openapi.yaml
var OpenAPIDocument []byte

// openAPI is GET /api/v1/openapi.yaml.
func (s *server) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(OpenAPIDocument)
}
