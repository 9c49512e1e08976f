package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/keyledger/keyledger/api"
)

// The OpenAPI document (api/openapi.yaml) is held to keysd's real traffic: every request the
// end-to-end tests make that keysd accepts must be one the document allows, and every
// response must be one it describes.

var openAPI struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// openAPIRouter loads and validates the document once.
func openAPIRouter(t testing.TB) routers.Router {
	t.Helper()
	openAPI.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPIDocument)
		if err != nil {
			openAPI.err = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			openAPI.err = err
			return
		}
		openAPI.doc = doc
		openAPI.router, openAPI.err = gorillamux.NewRouter(doc)
	})
	if openAPI.err != nil {
		t.Fatalf("api/openapi.yaml: %v", openAPI.err)
	}
	return openAPI.router
}

// checkAgainstOpenAPI validates one exchange against the document: the response always, the
// request when keysd accepted it (2xx or 304). A request to no route of the document must
// have been answered ROUTE_NOT_FOUND or METHOD_NOT_ALLOWED.
func checkAgainstOpenAPI(t testing.TB, req *http.Request, body string, res response) {
	t.Helper()
	router := openAPIRouter(t)
	probe := req.Clone(context.Background())
	// The document's server is not the test's; route on the path alone.
	probe.URL = &url.URL{Scheme: "http", Host: "127.0.0.1:8080", Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	route, params, err := router.FindRoute(probe)
	if err != nil {
		if code := res.code(); code != "ROUTE_NOT_FOUND" && code != "METHOD_NOT_ALLOWED" {
			t.Errorf("%s %s is not in api/openapi.yaml (%v), yet keysd answered %s", req.Method, req.URL.Path, err, res)
		}
		return
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route, Options: opts}
	if res.status/100 == 2 || res.status == http.StatusNotModified {
		probe.Body = io.NopCloser(strings.NewReader(body))
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("%s %s was accepted (%d) but api/openapi.yaml refuses the request: %v", req.Method, req.URL.Path, res.status, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.status, Header: res.header, Options: opts}
	out.SetBodyBytes(res.raw)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s: the response does not match api/openapi.yaml: %v\n%s", req.Method, req.URL.Path, err, bytes.TrimSpace(res.raw))
	}
}

func TestOpenAPIDocumentIsServed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	r := call(t, e.url, http.MethodGet, "/api/v1/openapi.yaml", nil, "")
	if r.status != http.StatusOK || !bytes.Equal(r.raw, api.OpenAPIDocument) {
		t.Fatalf("GET /api/v1/openapi.yaml: %d, %d bytes", r.status, len(r.raw))
	}
	if doc := openAPIRouter(t); doc == nil || !openAPI.doc.IsOpenAPI31OrLater() {
		t.Fatalf("api/openapi.yaml is not OpenAPI 3.1")
	}
}
