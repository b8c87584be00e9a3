package depcheck_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is kpool's main module path; packages of other modules (the
// benchmarks and tools modules included) are third-party to the rules.
const module = "github.com/kpool-go/kpool"

// rules is the table of import rules: each row names a package and the rule
// that the package and every package it depends on, directly or not, must
// pass (what `go list -deps` lists: the non-test build). Add a promise of
// DESIGN.md as one row.
var rules = []struct {
	pkg  string
	rule rule
}{
	// keyedpool: the standard library and kpool's own stdlib-only
	// packages alone; never gRPC, Consul, Prometheus or another pool.
	{module + "/keyedpool", stdlibAndKpool},
	// factory holds the interface and adapters without third-party
	// imports; the go-commons-pool adapter lives in factory/commonspool.
	{module + "/factory", stdlibAndKpool},
	// Below the core: the factory interface and its adapters never import
	// the pool. The gRPC layer, which does (Conn, Borrow, Release), is
	// grpcpool, at the top of the tree beside discovery and metrics.
	{module + "/factory", forbid(module + "/keyedpool")},
	{module + "/factory/commonspool", forbid(module + "/keyedpool")},
	// The evictor never imports the pool it serves.
	{module + "/evictor", all(stdlibAndKpool, forbid(module+"/keyedpool"))},
	// The shipped binary does not link testing: its demo and backends
	// serve internal/backend, and only the tests' wrapper of it,
	// internal/grpctest, imports testing.
	{module + "/cmd/kpool", forbid("testing")},
	// A plain keyed pool's metrics do not link gRPC: the pool collectors
	// and the HTTP endpoints are metrics; the RPC observer and the
	// adapters of the gRPC factory and router are metrics/grpcmetrics.
	{module + "/metrics", forbid("google.golang.org/grpc")},
}

// pkg is the part of `go list -json` output the rules read.
type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Module     *struct{ Path string }
	Error      *struct{ Err string }
}

// A rule reports why a package may not be a dependency, or "" if it may.
type rule func(dep *pkg) string

// stdlibAndKpool allows the standard library and the packages of kpool's
// main module. Since the rule is checked on every dependency, a kpool
// package it allows is itself free of third-party imports.
func stdlibAndKpool(dep *pkg) string {
	if dep.Standard || dep.Module != nil && dep.Module.Path == module {
		return ""
	}
	return "neither the standard library nor a package of " + module
}

// forbid refuses the packages at the given paths and below them.
func forbid(paths ...string) rule {
	return func(dep *pkg) string {
		for _, p := range paths {
			if dep.ImportPath == p || strings.HasPrefix(dep.ImportPath, p+"/") {
				return "forbidden: " + p
			}
		}
		return ""
	}
}

// all passes the packages every rule passes and reports the first refusal.
func all(rules ...rule) rule {
	return func(dep *pkg) string {
		for _, r := range rules {
			if why := r(dep); why != "" {
				return why
			}
		}
		return ""
	}
}

// violations returns one line for every package reachable from root in
// graph that r refuses, with why and the import chain from root to it, so
// that the failure says which import to remove. It does not look below a
// refused package: what that one pulls in goes with it.
func violations(graph map[string]*pkg, root string, r rule) []string {
	// Breadth first, so that the chain reported is a shortest one.
	parent := map[string]string{root: ""}
	queue := []string{root}
	var out []string
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		p, ok := graph[path]
		if !ok {
			out = append(out, fmt.Sprintf("%s: not in the go list output", path))
			continue
		}
		if why := r(p); why != "" {
			out = append(out, fmt.Sprintf("%s: %s; imported through %s", path, why, chain(parent, path)))
			continue
		}
		for _, imp := range p.Imports {
			if _, seen := parent[imp]; !seen && imp != "C" {
				parent[imp] = path
				queue = append(queue, imp)
			}
		}
	}
	return out
}

// chain is the import chain from the root of parent to path.
func chain(parent map[string]string, path string) string {
	var c []string
	for p := path; p != ""; p = parent[p] {
		c = append(c, p)
	}
	slices.Reverse(c)
	return strings.Join(c, " -> ")
}

// goList runs `go list -deps -json` on pkgs and returns every package of
// its output by import path.
func goList(t *testing.T, pkgs ...string) map[string]*pkg {
	t.Helper()
	// go test puts its own GOROOT/bin first on the PATH of the test
	// binary, so this is the go command that runs the tests.
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	args := append([]string{"list", "-deps", "-json=ImportPath,Standard,Imports,Module,Error"}, pkgs...)
	cmd := exec.Command(gocmd, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	graph := map[string]*pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		graph[p.ImportPath] = p
	}
	return graph
}

func TestImportRules(t *testing.T) {
	var pkgs []string
	for _, r := range rules {
		pkgs = append(pkgs, r.pkg)
	}
	graph := goList(t, pkgs...)
	for _, r := range rules {
		t.Run(strings.TrimPrefix(r.pkg, module+"/"), func(t *testing.T) {
			for _, v := range violations(graph, r.pkg, r.rule) {
				t.Error(v)
			}
		})
	}
}

// The checker itself: on a made-up graph it reports each refused package
// with the shortest chain that pulls it in, and nothing else: not the
// packages only a refused one pulls in, and not a path that merely starts
// like a forbidden one.
func TestViolationsNameTheImportChain(t *testing.T) {
	kpool := &struct{ Path string }{module}
	other := &struct{ Path string }{"example.com/pool"}
	graph := map[string]*pkg{}
	for _, p := range []*pkg{
		{ImportPath: module + "/keyedpool", Module: kpool, Imports: []string{"context", module + "/factory", module + "/evictor"}},
		{ImportPath: module + "/factory", Module: kpool, Imports: []string{"context", "example.com/pool"}},
		{ImportPath: module + "/evictor", Module: kpool, Imports: []string{"time", module + "/factory"}},
		{ImportPath: "example.com/pool", Module: other, Imports: []string{"context"}},
		{ImportPath: "context", Standard: true, Imports: []string{"time"}},
		{ImportPath: "time", Standard: true},
	} {
		graph[p.ImportPath] = p
	}

	tests := []struct {
		name string
		root string
		rule rule
		want []string
	}{
		{
			name: "third party",
			root: module + "/keyedpool",
			rule: stdlibAndKpool,
			want: []string{"example.com/pool: neither the standard library nor a package of " + module +
				"; imported through " + module + "/keyedpool -> " + module + "/factory -> example.com/pool"},
		},
		{
			name: "forbidden kpool package",
			root: module + "/evictor",
			rule: all(stdlibAndKpool, forbid(module+"/factory")),
			// Only factory: example.com/pool goes with it.
			want: []string{module + "/factory: forbidden: " + module + "/factory; imported through " + module + "/evictor -> " + module + "/factory"},
		},
		{
			name: "forbidden path and below",
			root: "context",
			rule: forbid("tim"),
			want: nil,
		},
		{
			name: "standard library only",
			root: "context",
			rule: stdlibAndKpool,
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := violations(graph, tt.root, tt.rule)
			if !slices.Equal(got, tt.want) {
				t.Errorf("violations(%s) = %q, want %q", tt.root, got, tt.want)
			}
		})
	}
}
