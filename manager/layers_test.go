package manager

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/sluice-shuffle/sluice/"

// TestLayers enforces the import rules of DESIGN.md for manager/: it never
// imports the data plane or the storage layers, manager/api (which clients
// link) imports nothing else of Sluice, and the agent speaks manager/api
// only.
func TestLayers(t *testing.T) {
	forbidden := []string{"engine", "scheduler", "netsvc", "client", "layout", "uring", "tools"}
	allowed := map[string][]string{
		"api":       {},
		"agent":     {"manager/api"},
		"placement": {"manager/api"},
		"config":    {},
		"metrics":   {},
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkgDir := filepath.ToSlash(filepath.Dir(path))
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			ours, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			for _, bad := range forbidden {
				if ours == bad || strings.HasPrefix(ours, bad+"/") {
					t.Errorf("%s imports %s: manager/ must not import %s/", path, p, bad)
				}
			}
			if list, strict := allowed[pkgDir]; strict && !strings.HasSuffix(path, "_test.go") {
				ok := false
				for _, a := range list {
					ok = ok || ours == a
				}
				if !ok {
					t.Errorf("%s imports %s: manager/%s may import only %v of Sluice", path, p, pkgDir, list)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
