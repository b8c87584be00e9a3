package config_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
)

// maxAlloc is the memory a file may cost to accept or refuse: a hard
// bound, not a speed target. It counts every byte allocated, freed or not,
// so the peak is lower still.
const maxAlloc = 50 << 20

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// aliasBomb returns a file of n services, each an alias of the first,
// whose addresses are an alias of n addresses: about 12n bytes that a
// decoder following aliases without a bound reads as n*n addresses.
func aliasBomb(n int) string {
	var b strings.Builder
	b.WriteString("grpc: {insecure: true}\nservices:\n  - &s\n    name: a\n    discovery:\n      static:\n        addresses: [")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("h:1")
	}
	b.WriteString("]\n")
	for range n - 1 {
		b.WriteString("  - *s\n")
	}
	return b.String()
}

// laughs is the classic "billion laughs": ten levels of ten aliases of
// the level below, under a key kpool does not know.
func laughs() string {
	var b strings.Builder
	b.WriteString("grpc: {insecure: true}\nx:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		fmt.Fprintf(&b, "  %s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	fmt.Fprintf(&b, "services: [*%s]\n", prev)
	return b.String()
}

// padded returns minimal followed by comment lines of width bytes until
// the file holds size bytes.
func padded(size, width int) string {
	line := "# " + strings.Repeat("x", width-3) + "\n"
	var b strings.Builder
	b.WriteString(minimal)
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	return b.String()
}

var fileLineRE = regexp.MustCompile(`^kpool\.yaml:[1-9][0-9]*: `)

// TestParseRefusesHostileFiles feeds Parse files made to cost time and
// memory: each is refused with one problem naming the file and line, in
// less than maxAlloc.
func TestParseRefusesHostileFiles(t *testing.T) {
	deepFlow := func(depth int) string {
		return "grpc: {insecure: true}\npool: " + strings.Repeat("[", depth) + strings.Repeat("]", depth) + "\n"
	}
	var deepBlock strings.Builder
	for i := range 40 {
		fmt.Fprintf(&deepBlock, "%sk%d:\n", strings.Repeat(" ", i), i)
	}
	tests := []struct {
		name string
		yaml string
		want string // the whole message, past "kpool.yaml:LINE: "
	}{
		{"alias bomb", aliasBomb(1000),
			fmt.Sprintf("services[49]: aliases expand the file past %d values here, the most a configuration file may hold", config.MaxValues)},
		{"flow nesting past MaxDepth", deepFlow(config.MaxDepth + 1),
			fmt.Sprintf("nested too deep: more than %d levels, the most a configuration file may have", config.MaxDepth)},
		{"flow nesting past the YAML library's bound", deepFlow(20000),
			"invalid YAML: exceeded max depth of 10000"},
		{"dashes past the YAML library's bound on line 1", strings.Repeat("- ", 12000) + "a\n",
			"invalid YAML: exceeded max depth of 10000"},
		{"control character", minimal + "name: a\x01b\n",
			"invalid YAML: control characters are not allowed"},
		{"block nesting", deepBlock.String(),
			fmt.Sprintf("nested too deep: more than %d levels, the most a configuration file may have", config.MaxDepth)},
		{"2 MB", padded(2<<20, 100),
			"file too large: it passes 1048576 bytes (1 MiB) on this line, the most a configuration file may hold"},
		{"1 MB flow list", "x: [" + strings.Repeat("0,", 500_000) + "0]\n",
			"file too large: its lines, keys and list items pass 25000 on this line, the most a configuration file may hold"},
		{"1 MB of keys without values", "x: {" + strings.Repeat("a,", 500_000) + "a}\n",
			"file too large: its lines, keys and list items pass 25000 on this line, the most a configuration file may hold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if n := allocated(func() { _, err = config.Parse("kpool.yaml", []byte(tt.yaml)) }); n > maxAlloc {
				t.Errorf("Parse() of %d bytes allocated %d MiB, want at most %d", len(tt.yaml), n>>20, maxAlloc>>20)
			}
			if err == nil {
				t.Fatal("Parse() = nil error, want the file refused")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("Parse() gave several problems, want one:\n%s", msg)
			}
			if !fileLineRE.MatchString(msg) || fileLineRE.ReplaceAllString(msg, "") != tt.want {
				t.Errorf("Parse() = %q\nwant        kpool.yaml:LINE: %s", msg, tt.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Line == 0 {
				t.Errorf("Parse() = %v, want a *config.Error with a line", err)
			}
		})
	}
}

// TestParseAliasesBounded shows the decoder stops at MaxValues however far
// aliases would take it, and that aliases within the bound are followed.
func TestParseAliasesBounded(t *testing.T) {
	for _, n := range []int{300, 1000, 5000} {
		if got := config.ValuesDecoded([]byte(aliasBomb(n))); got != config.MaxValues {
			t.Errorf("values decoded of the %d×%d alias bomb = %d, want %d (the bound)", n, n, got, config.MaxValues)
		}
	}
	if got := config.ValuesDecoded([]byte(laughs())); got > 100 {
		t.Errorf("values decoded of billion laughs under an unknown key = %d, want a handful (unknown keys are not read)", got)
	}
	_, err := config.Parse("kpool.yaml", []byte(laughs()))
	if err == nil || !strings.HasPrefix(err.Error(), "kpool.yaml:2: x: unknown field") {
		t.Errorf("Parse(billion laughs) = %v, want the unknown key named first", err)
	}

	shared := minimal + `  - name: users
    discovery: &consul
      consul: {address: 127.0.0.1:8500, tags: [grpc]}
  - name: orders
    discovery: *consul
`
	f, err := config.Parse("kpool.yaml", []byte(shared))
	if err != nil {
		t.Fatalf("Parse(a shared alias) = %v", err)
	}
	if c := f.Services[2].Discovery.Consul; c == nil || c.Service != "orders" || c.Tags[0] != "grpc" {
		t.Errorf("service through an alias = %+v, want orders with tag grpc", c)
	}
}

// TestParseAcceptsLargeValidFiles checks the bounds leave room for real
// files: a long static list, and a file near MaxFileSize of long lines.
func TestParseAcceptsLargeValidFiles(t *testing.T) {
	var list strings.Builder
	list.WriteString(minimal)
	list.WriteString("  - name: many\n    discovery:\n      static:\n        addresses:\n")
	for i := range 8000 {
		fmt.Fprintf(&list, "          - 10.%d.%d.1:50051\n", i/256, i%256)
	}
	for name, data := range map[string]string{
		"8000 addresses":     list.String(),
		"long comment lines": padded(config.MaxFileSize, 4000),
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if n := allocated(func() { _, err = config.Parse("kpool.yaml", []byte(data)) }); n > maxAlloc {
				t.Errorf("Parse() of %d bytes allocated %d MiB, want at most %d", len(data), n>>20, maxAlloc>>20)
			}
			if err != nil {
				t.Errorf("Parse() of %d bytes = %v", len(data), err)
			}
		})
	}
}

// TestEntriesBoundValues checks the count that checkSize bounds before
// the YAML library builds a tree is never below what the tree holds: at
// most two values per entry, and the document and its root.
func TestEntriesBoundValues(t *testing.T) {
	pieces := []string{"a", "b", " ", "  ", "\n", "\r\n", "\r", "-", "- ", ":", ": ", ",", ", ", "[", "]", "{", "}",
		"?", "? ", "&x ", "*x", "!!str ", "'", "\"", "#", "|", ">", "...", "---", "\t", "\u0085", "\u2028", "null"}
	r := rand.New(rand.NewPCG(1, 2))
	tried, parsed := 0, 0
	for range 20000 {
		var b strings.Builder
		for range 1 + r.IntN(30) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		tried++
		if checkEntries(t, b.String()) {
			parsed++
		}
	}
	for _, s := range []string{"{a,b}", "{a}", "[a: b]", "[? ]", "? \n? \n", "a\n...\nb\n", "- - - a", "a:\n- b\n- c: d\n", laughs(), aliasBomb(10)} {
		checkEntries(t, s)
	}
	t.Logf("%d of %d generated inputs parsed", parsed, tried)
	if parsed < tried/10 {
		t.Errorf("only %d of %d generated inputs parsed: the test checks too little", parsed, tried)
	}
}

func FuzzEntriesBoundValues(f *testing.F) {
	for _, s := range []string{minimal, "{a,b}", "[a: b, c]", "? \n? \n", "a\n...\nb\n", "- - - a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkEntries(t, s) })
}

// checkEntries checks the bound on s, and reports whether it parsed.
func checkEntries(t *testing.T, s string) bool {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(s))
	values := 0
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if values == 0 {
				return false
			}
			break
		}
		values += count(&doc)
	}
	if bound := 2*config.Entries([]byte(s)) + 2; values > bound {
		t.Errorf("%q holds %d YAML values, more than 2×entries+2 = %d", s, values, bound)
	}
	return true
}

func count(n *yaml.Node) int {
	c := 1
	for _, k := range n.Content {
		c += count(k)
	}
	return c
}

// TestLoadBoundsTheRead checks Load reads no more than it accepts: a
// file that never ends is refused as too large.
func TestLoadBoundsTheRead(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "kpool.yaml")
	if err := os.Symlink("/dev/zero", path); err != nil {
		t.Skip(err)
	}
	var err error
	if n := allocated(func() { _, err = config.Load(path) }); n > maxAlloc {
		t.Errorf("Load(/dev/zero) allocated %d MiB, want at most %d", n>>20, maxAlloc>>20)
	}
	if want := path + ":1: file too large"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(/dev/zero) = %v, want %q...", err, want)
	}
}
