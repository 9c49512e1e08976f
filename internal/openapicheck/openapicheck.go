// Package openapicheck holds the HTTP traffic of keyledger's tests to its OpenAPI document
// (api/openapi.yaml): every request keysd accepted must be one the document allows, and every
// response one it describes. The api end-to-end tests and cmd/keysd's black-box tests check
// each exchange they make through it, so the document cannot drift from the code.
package openapicheck

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Document is a loaded and validated OpenAPI document with its router.
type Document struct {
	// Spec is the parsed document.
	Spec   *openapi3.T
	router routers.Router
}

// Load parses an OpenAPI document, validates it, and builds its router.
func Load(data []byte) (*Document, error) {
	spec, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if err := spec.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	router, err := gorillamux.NewRouter(spec)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI document: %w", err)
	}
	return &Document{Spec: spec, router: router}, nil
}

// Exchange is one request a test made and the response it got.
type Exchange struct {
	Request      *http.Request
	RequestBody  []byte
	Status       int
	Header       http.Header
	ResponseBody []byte
	// ErrorCode is the response's error code, if it is an error.
	ErrorCode string
}

// Check validates an exchange: the response always, the request when keysd accepted it (2xx
// or 304). A request for no operation of the document must have been answered
// ROUTE_NOT_FOUND or METHOD_NOT_ALLOWED. It returns what does not match, or nil.
func (d *Document) Check(x Exchange) error {
	req := x.Request
	probe := req.Clone(context.Background())
	// The document's server is not the test's: route on the path and query alone.
	probe.URL = &url.URL{Scheme: "http", Host: "127.0.0.1:8080", Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	route, params, err := d.router.FindRoute(probe)
	if err != nil {
		if x.ErrorCode != "ROUTE_NOT_FOUND" && x.ErrorCode != "METHOD_NOT_ALLOWED" {
			return fmt.Errorf("%s %s is not in the OpenAPI document (%v), yet keysd answered %d %s", req.Method, req.URL.Path, err, x.Status, x.ErrorCode)
		}
		return nil
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route, Options: opts}
	if x.Status/100 == 2 || x.Status == http.StatusNotModified {
		probe.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			return fmt.Errorf("%s %s was accepted (%d) but the OpenAPI document refuses the request: %w", req.Method, req.URL.Path, x.Status, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: x.Status, Header: x.Header, Options: opts}
	out.SetBodyBytes(x.ResponseBody)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("%s %s: the %d response does not match the OpenAPI document: %w\n%s", req.Method, req.URL.Path, x.Status, err, bytes.TrimSpace(x.ResponseBody))
	}
	return nil
}
