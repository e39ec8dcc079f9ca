// Package tools holds, besides the tools themselves (in its subdirectories),
// the project's own lint rules, written as a Go test (STYLE.md, "Lint is
// code"): go vet and staticcheck check Go; this checks Sluice.
package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sluice-shuffle/sluice"

// mayImport lists, for each top-level package of the module, the top-level
// packages it may import (DESIGN.md, "Layers and packages"): imports point
// down only, tools → manager, netsvc, client → scheduler → engine →
// layout, uring. A package may always import its own subpackages. tools,
// and the Go helpers of the connectors' tests, may import anything.
var mayImport = map[string][]string{
	"uring":     {},
	"layout":    {},
	"engine":    {"layout", "uring"},
	"scheduler": {"engine", "layout", "uring"},
	"netsvc":    {"scheduler", "engine", "layout", "uring"},
	// The manager never imports the data plane or the storage layers: the
	// worker wiring in tools/sluice converts between them.
	"manager": {},
}

// clientMayImport is narrower than a top-level rule: compute tasks link
// the client, which speaks the netsvc protocol through its transport and
// the manager through its generated API, and nothing else of Sluice.
var clientMayImport = []string{"netsvc/wire", "netsvc/transport", "manager/api"}

// goPackage is what `go list -json` says of a package.
type goPackage struct {
	ImportPath   string
	Dir          string
	Export       string
	GoFiles      []string
	Imports      []string
	TestImports  []string
	XTestImports []string
	DepOnly      bool
	Error        *struct{ Err string }
}

// listPackages returns the module's packages and the export data of every
// package they depend on, from one `go list -deps -export`.
func listPackages(t *testing.T) (ours []*goPackage, export map[string]string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-export", "-json", "./...")
	cmd.Dir = ".." // the module's root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	export = make(map[string]string)
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(goPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
		}
		export[p.ImportPath] = p.Export
		if !p.DepOnly && (p.ImportPath == module || strings.HasPrefix(p.ImportPath, module+"/")) {
			ours = append(ours, p)
		}
	}
	return ours, export
}

// within reports whether the module-relative package path rel is pkg or
// one of its subpackages.
func within(rel, pkg string) bool { return rel == pkg || strings.HasPrefix(rel, pkg+"/") }

// importAllowed reports whether the package at module-relative path from
// may import the one at to.
func importAllowed(from, to string) bool {
	top, _, _ := strings.Cut(from, "/")
	switch {
	case top == "tools" || top == "connectors" || within(to, top):
		return true
	case top == "client":
		return slices.ContainsFunc(clientMayImport, func(p string) bool { return within(to, p) })
	}
	allowed, known := mayImport[top]
	if !known {
		return false
	}
	return slices.ContainsFunc(allowed, func(p string) bool { return within(to, p) })
}

// testSupport reports whether the package at module-relative path p exists
// for tests (its last element ends in "test", like net/http/httptest):
// tests may use it whatever layer it builds on, since nothing that ships
// links a test.
func testSupport(p string) bool { return strings.HasSuffix(p[strings.LastIndex(p, "/")+1:], "test") }

// TestImportsPointDown enforces the layering of DESIGN.md on every package
// of the module, and on its tests, which may besides use test-support
// packages: a cycle or an upward import is a design bug.
func TestImportsPointDown(t *testing.T) {
	ours, _ := listPackages(t)
	if len(ours) < 10 {
		t.Fatalf("go list found %d packages of the module; is the test running in tools/?", len(ours))
	}
	for _, p := range ours {
		from := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for i, imports := range [][]string{p.Imports, p.TestImports, p.XTestImports} {
			for _, imp := range imports {
				to, ok := strings.CutPrefix(imp, module+"/")
				if !ok || importAllowed(from, to) || (i > 0 && testSupport(to)) {
					continue
				}
				what := "imports"
				if i > 0 {
					what = "tests import"
				}
				t.Errorf("%s %s %s: against the layering of DESIGN.md (imports point down only)", from, what, to)
			}
		}
	}
}

// TestImportRules checks importAllowed itself, both ways.
func TestImportRules(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"engine", "layout", true},
		{"engine", "engine/diskio", true},
		{"engine/diskio", "uring", true},
		{"engine/diskio", "engine/mem", true},
		{"scheduler", "engine/mem", true},
		{"netsvc/server", "scheduler", true},
		{"client", "netsvc/wire", true},
		{"client", "manager/api", true},
		{"manager/agent", "manager/api", true},
		{"tools/sluice", "netsvc/server", true},
		{"layout", "uring", false},
		{"uring", "layout", false},
		{"engine", "scheduler", false},
		{"engine/diskio", "engine", true}, // a cycle, which Go refuses anyway
		{"scheduler", "netsvc/wire", false},
		{"manager", "engine", false},
		{"manager/agent", "layout", false},
		{"client", "netsvc/server", false},
		{"client", "layout", false},
		{"client", "manager", false},
		{"netsvc/wire", "client", false},
		{"netsvc", "manager/api", false},
		{"connectors/flink/src/test/go/dataworker", "netsvc/worktest", true},
	} {
		if got := importAllowed(tc.from, tc.to); got != tc.ok {
			t.Errorf("importAllowed(%q, %q) = %v, want %v", tc.from, tc.to, got, tc.ok)
		}
	}
	for p, want := range map[string]bool{"netsvc/worktest": true, "worktest": true, "layout": false, "engine/testdata": false} {
		if got := testSupport(p); got != want {
			t.Errorf("testSupport(%q) = %v, want %v", p, got, want)
		}
	}
}

// unwrappedAllowed lists the fmt.Errorf calls that format an error value
// without wrapping it, each with why: module-relative file, then the format.
var unwrappedAllowed = map[[2]string]string{
	{"client/decoder.go", "LZ4 payload of %d bytes decodes to %d bytes (%v), the header says %d"}: "err may be nil here (a short decode without an error), and %w of nil prints %!w(<nil>)",
}

// TestErrorfWraps enforces STYLE.md's "wrap with %w": a fmt.Errorf that
// formats an error value wraps it, so that errors.Is and errors.As see the
// cause (a CorruptError, an errno) through the context. Test files are not
// checked: their messages are for people only.
func TestErrorfWraps(t *testing.T) {
	ours, export := listPackages(t)
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := export[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	errorType := types.Universe.Lookup("error").Type().Underlying().(*types.Interface)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	used := make(map[[2]string]bool)
	for _, p := range ours {
		if len(p.GoFiles) == 0 {
			continue
		}
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Types: make(map[ast.Expr]types.TypeAndValue), Uses: make(map[*ast.Ident]types.Object)}
		conf := types.Config{Importer: imp}
		if _, err := conf.Check(p.ImportPath, fset, files, info); err != nil {
			t.Errorf("type-checking %s: %v", p.ImportPath, err)
			continue
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || !isFmtErrorf(call, info) || len(call.Args) < 2 {
					return true
				}
				format := info.Types[call.Args[0]].Value
				if format == nil || format.Kind() != constant.String {
					return true // built at run time: nothing to check here
				}
				errs := 0
				for _, a := range call.Args[1:] {
					if tv := info.Types[a]; !tv.IsNil() && tv.Type != nil && types.Implements(tv.Type, errorType) {
						errs++
					}
				}
				s := constant.StringVal(format)
				if errs == 0 || strings.Count(s, "%w") >= errs {
					return true
				}
				pos := fset.Position(call.Pos())
				rel, err := filepath.Rel(root, pos.Filename)
				if err != nil {
					t.Fatal(err)
				}
				key := [2]string{filepath.ToSlash(rel), s}
				if _, ok := unwrappedAllowed[key]; ok {
					used[key] = true
					return true
				}
				t.Errorf("%s:%d: fmt.Errorf(%q) formats %d error value(s) but wraps %d: use %%w (STYLE.md, \"Wrap with %%w\")",
					key[0], pos.Line, s, errs, strings.Count(s, "%w"))
				return true
			})
		}
	}
	for key, why := range unwrappedAllowed {
		if !used[key] {
			t.Errorf("unwrappedAllowed names %s: %q (%s), which no longer exists: remove it", key[0], key[1], why)
		}
	}
}

func isFmtErrorf(call *ast.CallExpr, info *types.Info) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	fn, ok := info.Uses[sel.Sel].(*types.Func)
	return ok && fn.Pkg() != nil && fn.Pkg().Path() == "fmt" && fn.Name() == "Errorf"
}
