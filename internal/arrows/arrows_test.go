package arrows

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/keyledger/keyledger"

// tableHeader starts the table of allowed imports in docs/architecture.md.
const tableHeader = "| package | may import |"

// rules maps a layer (domain, cmd/*, internal/secretfile) to the layers it may import; "*" is
// every layer but cmd/*.
type rules map[string][]string

// readRules parses the table under tableHeader: each row names layers in its first column
// and what they may import in its second, as `code` spans ("none" for nothing).
func readRules(doc []byte) (rules, error) {
	code := regexp.MustCompile("`([^`]+)`")
	r := rules{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, tableHeader):
			in = true
			continue
		case !in:
			continue
		case !strings.HasPrefix(line, "|"):
			in = false
			continue
		case strings.HasPrefix(line, "|---"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			return nil, errors.New("row with fewer than two cells: " + line)
		}
		var may []string
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			may = append(may, m[1])
		}
		for _, m := range code.FindAllStringSubmatch(cells[0], -1) {
			r[m[1]] = may
		}
	}
	if len(r) == 0 {
		return nil, errors.New("no table starting " + tableHeader)
	}
	return r, nil
}

// layer is the part of a package path the picture names: the first element, or the first
// two under cmd/ and internal/.
func layer(rel string) string {
	parts := strings.Split(rel, "/")
	if (parts[0] == "cmd" || parts[0] == "internal") && len(parts) > 1 {
		return parts[0] + "/" + parts[1]
	}
	return parts[0]
}

// rowOf is the row of the table a layer falls under: its own, or cmd/* for a command.
func (r rules) rowOf(l string) (string, bool) {
	if _, ok := r[l]; ok {
		return l, true
	}
	if strings.HasPrefix(l, "cmd/") {
		_, ok := r["cmd/*"]
		return "cmd/*", ok
	}
	return "", false
}

// allows says whether layer from may import layer to. A layer imports its own packages
// freely; nothing imports a command.
func (r rules) allows(from, to string) bool {
	if from == to {
		return true
	}
	if strings.HasPrefix(to, "cmd/") {
		return false
	}
	row, _ := r.rowOf(from)
	return slices.Contains(r[row], to) || slices.Contains(r[row], "*")
}

type goPackage struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func TestImportsFollowTheArchitecture(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := readRules(doc)
	if err != nil {
		t.Fatalf("docs/architecture.md: %v", err)
	}
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
		if !ok {
			continue // the module's root, if it ever has a package
		}
		from := layer(rel)
		if _, ok := r.rowOf(from); !ok {
			t.Errorf("package %s is not in the table of docs/architecture.md: add its row (and its place in the picture)", rel)
			continue
		}
		for _, imp := range p.Imports {
			if to, ok := strings.CutPrefix(imp, module+"/"); ok && !r.allows(from, layer(to)) {
				t.Errorf("%s imports %s: not an arrow of docs/architecture.md (change the picture and its table first)", rel, to)
			}
		}
		for _, imp := range append(p.TestImports, p.XTestImports...) {
			if to, ok := strings.CutPrefix(imp, module+"/"); ok && strings.HasPrefix(to, "cmd/") && layer(to) != from {
				t.Errorf("tests of %s import %s: nothing imports a command", rel, to)
			}
		}
	}
	if seen < 5 {
		t.Fatalf("go list found %d packages", seen)
	}
}

// TestRulesCatchAWrongArrow: the check itself, on a table and imports made up for it.
func TestRulesCatchAWrongArrow(t *testing.T) {
	r, err := readRules([]byte("intro\n\n" + tableHeader + " why |\n|---|---|---|\n| `domain` | none | pure |\n| `commands` | `domain` | |\n| `cmd/*` | `*` | |\n\nafter\n| `x` | `domain` |\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		want     bool
	}{
		{"commands", "domain", true},
		{"domain", "commands", false},
		{"domain", "domain", true},
		{"cmd/keysd", "commands", true},
		{"cmd/keysd", "cmd/keysctl", false},
		{"commands", "cmd/keysd", false},
		{"commands", "internal/testenv", false},
	} {
		if got := r.allows(tc.from, tc.to); got != tc.want {
			t.Errorf("%s -> %s allowed: %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
	if _, ok := r.rowOf("x"); ok {
		t.Error("a row after the table was read as part of it")
	}
	if _, ok := r.rowOf("api"); ok {
		t.Error("a layer with no row has rules")
	}
}
