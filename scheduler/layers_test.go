package scheduler

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayers enforces DESIGN.md's import rules for scheduler/: it builds on
// the engine and the formats, and never imports the layers above it.
func TestLayers(t *testing.T) {
	const module = "github.com/sluice-shuffle/sluice/"
	allowed := []string{"engine", "layout", "uring"}
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			ours, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			top, _, _ := strings.Cut(ours, "/")
			ok = false
			for _, a := range allowed {
				ok = ok || top == a
			}
			if !ok {
				t.Errorf("%s imports %s: scheduler/ may import only %v of Sluice", path, p, allowed)
			}
		}
	}
}
