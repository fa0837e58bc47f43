package hostile

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the table in docs/security.md")

const (
	docPath  = "../../docs/security.md"
	docBegin = "<!-- hostile table: generated from internal/hostile (go test ./internal/hostile -update); do not edit -->\n"
	docEnd   = "<!-- end of hostile table -->\n"
)

// TestDocsTable: docs/security.md shows exactly the table the suite runs.
func TestDocsTable(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no hostile table between %q and %q", docPath, docBegin, docEnd)
	}
	want := doc[:i+len(docBegin)] + Markdown() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the table in %s differs from internal/hostile's: run go test ./internal/hostile -update", docPath)
}

// TestTable: IDs are unique, every numbered defect of issue 10 has a row,
// every kind of object is truncated, deleted, reordered or replayed, and
// every test a row names exists.
func TestTable(t *testing.T) {
	ids := map[string]bool{}
	issues := map[int]bool{}
	for _, a := range Table {
		if ids[a.ID] {
			t.Errorf("row ID %s twice", a.ID)
		}
		ids[a.ID] = true
		issues[a.Issue] = true
		if a.Outcome != Detected && a.Outcome != Ignored && a.Outcome != Refused {
			t.Errorf("row %s: outcome %q", a.ID, a.Outcome)
		}
		if strings.Contains(a.Target+a.Attack+a.Detail, "|") {
			t.Errorf("row %s: a '|' would break the Markdown table", a.ID)
		}
		pkg, test, ok := strings.Cut(a.Test, " ")
		if !ok || !testExists(t, pkg, test) {
			t.Errorf("row %s: no test %q", a.ID, a.Test)
		}
	}
	for n := 1; n <= 17; n++ {
		if !issues[n] {
			t.Errorf("defect %d of issue 10 has no row", n)
		}
	}
	for _, kind := range []string{"config", "keys", "points", "manifests", "index", "packs", "markers"} {
		for _, attack := range []string{"truncate", "delete"} {
			if !ids[kind+"-"+attack] && !(kind == "markers" && attack == "delete" && ids["issue-4"]) {
				t.Errorf("no row %s-%s", kind, attack)
			}
		}
		if kind != "config" && !ids[kind+"-swap"] {
			t.Errorf("no row %s-swap (reordering)", kind)
		}
	}
	for _, kind := range []string{"config", "keys", "points", "manifests", "index", "packs", "deleted", "settings", "catalog"} {
		if !ids[kind+"-replay"] {
			t.Errorf("no row %s-replay", kind)
		}
	}
	// The kinds added after the first table: soft delete's tombstones and
	// settings, drill results, catalog snapshots.
	for _, kind := range []string{"deleted", "settings", "drills", "catalog"} {
		for _, attack := range []string{"truncate", "delete"} {
			if !ids[kind+"-"+attack] {
				t.Errorf("no row %s-%s", kind, attack)
			}
		}
	}
}

// testExists reports whether package dir pkg (from the module root) has a
// test function named test.
func testExists(t *testing.T, pkg, test string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", pkg, "*_test.go"))
	if err != nil || len(files) == 0 {
		return false
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), fmt.Sprintf("\nfunc %s(t *testing.T)", test)) {
			return true
		}
	}
	return false
}
