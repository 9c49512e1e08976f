package api_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestAPIReferenceMatchesOpenAPI holds docs/api.md to api/openapi.yaml: the page has a
// section for exactly the document's operations ("### `METHOD /path`"), and names every error
// code the document lists.
func TestAPIReferenceMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	doc := openAPIDoc(t).Spec
	page, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}

	var inDoc []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inDoc = append(inDoc, method+" "+path)
		}
	}
	var onPage []string
	for _, m := range regexp.MustCompile("(?m)^### `([A-Z]+) (/[^`]*)`$").FindAllStringSubmatch(string(page), -1) {
		onPage = append(onPage, m[1]+" "+m[2])
	}
	slices.Sort(inDoc)
	slices.Sort(onPage)
	for _, op := range inDoc {
		if !slices.Contains(onPage, op) {
			t.Errorf("docs/api.md has no section for %s, which api/openapi.yaml describes", op)
		}
	}
	for _, op := range onPage {
		if !slices.Contains(inDoc, op) {
			t.Errorf("docs/api.md describes %s, which api/openapi.yaml does not", op)
		}
	}

	codes := doc.Components.Schemas["Error"].Value.Properties["code"].Value.Enum
	if len(codes) == 0 {
		t.Fatal("api/openapi.yaml lists no error codes")
	}
	for _, c := range codes {
		if !strings.Contains(string(page), "`"+c.(string)+"`") {
			t.Errorf("docs/api.md does not name the error code %s", c)
		}
	}
}
