package api_test

import (
	"bytes"
	"net/http"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/internal/openapicheck"
)

// The OpenAPI document (api/openapi.yaml) is held to keysd's real traffic: every request the
// end-to-end tests make that keysd accepts must be one the document allows, and every
// response must be one it describes.

var openAPI struct {
	once sync.Once
	doc  *openapicheck.Document
	err  error
}

// openAPIDoc loads and validates the document once.
func openAPIDoc(t testing.TB) *openapicheck.Document {
	t.Helper()
	openAPI.once.Do(func() { openAPI.doc, openAPI.err = openapicheck.Load(api.OpenAPIDocument) })
	if openAPI.err != nil {
		t.Fatalf("api/openapi.yaml: %v", openAPI.err)
	}
	return openAPI.doc
}

// checkAgainstOpenAPI validates one exchange against the document.
func checkAgainstOpenAPI(t testing.TB, req *http.Request, body string, res response) {
	t.Helper()
	err := openAPIDoc(t).Check(openapicheck.Exchange{Request: req, RequestBody: []byte(body),
		Status: res.status, Header: res.header, ResponseBody: res.raw, ErrorCode: res.code()})
	if err != nil {
		t.Error(err)
	}
}

func TestOpenAPIDocumentIsServed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	r := call(t, e.url, http.MethodGet, "/api/v1/openapi.yaml", nil, "")
	if r.status != http.StatusOK || !bytes.Equal(r.raw, api.OpenAPIDocument) {
		t.Fatalf("GET /api/v1/openapi.yaml: %d, %d bytes", r.status, len(r.raw))
	}
	if !openAPIDoc(t).Spec.IsOpenAPI31OrLater() {
		t.Fatalf("api/openapi.yaml is not OpenAPI 3.1")
	}
}
