package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem of a configuration file, at a line and a field.
// Load and Parse return every problem they find as *Error values joined with
// errors.Join; match one with errors.As.
type Error struct {
	// File is the file's name, Line its 1-based line (0 when the problem
	// is the file as a whole).
	File string
	Line int
	// Path is the field, as written in the file: "pool.max_wait",
	// "services[1].discovery.static.addresses[0]". Empty for the file as a
	// whole.
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error returns "file:line: path: msg".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Path != "" {
		b.WriteString(": " + e.Path)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// nodeDecoder is implemented by the field types that read a YAML node in
// their own way (Duration, Exhausted).
type nodeDecoder interface {
	decodeNode(n *yaml.Node) error
}

// valueError is a decodeNode failure; its message follows the path.
type valueError struct{ msg string }

func (e *valueError) Error() string { return e.msg }

// errWant says the node holds something else than want.
func errWant(want string, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &valueError{fmt.Sprintf("want %s, got a %s", want, kindName(n))}
	}
	return &valueError{fmt.Sprintf("want %s, got %q", want, n.Value)}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

// decoder walks a YAML tree into Go structs by their yaml tags, refusing
// unknown and repeated keys, and remembers where each field was written.
type decoder struct {
	file  string
	lines map[string]int // field path -> the line of its key (list items: of the item)
	errs  []*Error
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// at returns the line of path's node, or of the nearest enclosing field
// written in the file, for errors found after decoding.
func (d *decoder) at(path string) int {
	for p := path; ; {
		if line, ok := d.lines[p]; ok {
			return line
		}
		i := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

var nodeDecoderType = reflect.TypeFor[nodeDecoder]()

// decode reads n into v, the field at path.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // as if absent: the zero value
	}
	if v.CanAddr() && v.Addr().Type().Implements(nodeDecoderType) {
		if err := v.Addr().Interface().(nodeDecoder).decodeNode(n); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, path, v.Elem())
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "%v", errWant("a list", n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "%v", errWant("a string", n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		i, err := strconv.ParseInt(n.Value, 0, strconv.IntSize)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil {
			d.errorf(n, path, "%v", errWant("an integer", n))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&f) != nil {
			d.errorf(n, path, "%v", errWant("a number", n))
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
			d.errorf(n, path, "%v", errWant("true or false", n))
			return
		}
		v.SetBool(b)
	default:
		panic(fmt.Sprintf("config: field %s of unsupported type %v", path, v.Type()))
	}
}

// decodeStruct reads the mapping n into the struct v by yaml tags.
func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "%v", errWant("a mapping of keys to values", n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		fp := join(path, key)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be names, got a %s", kindName(k))
			continue
		}
		if line, dup := seen[key]; dup {
			d.errorf(k, fp, "repeated; first set on line %d", line)
			continue
		}
		seen[key] = k.Line
		d.lines[fp] = k.Line
		fi, ok := fields[key]
		if !ok {
			d.errorf(k, fp, "unknown field; %s", known(names, key))
			continue
		}
		d.decode(val, fp, v.Field(fi))
	}
}

// known suggests the field name closest to key when one is close enough to
// be a typo, and lists the valid names otherwise.
func known(names []string, key string) string {
	best, bestDist := "", 3 // more than 2 edits away is not a typo
	for _, name := range names {
		if d := editDistance(strings.ReplaceAll(key, "-", "_"), name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %s?", best)
	}
	return "want one of " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// parse decodes data, the contents of the file called name, into f.
func (d *decoder) parse(data []byte, f *File) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return // an empty file: every default, and the checks say what is missing
	}
	if err != nil {
		d.errs = append(d.errs, yamlError(d.file, err))
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := 0
		if err == nil {
			line = extra.Line
		}
		d.errorf(&yaml.Node{Line: line}, "", "want one YAML document, found another")
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d.decode(root, "", reflect.ValueOf(f).Elem())
}

// yamlError turns a syntax error of the YAML library ("yaml: line 3: did
// not find expected key") into an *Error at its line.
func yamlError(file string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(num); err == nil {
				line, msg = l, tail
			}
		}
	}
	return &Error{File: file, Line: line, Msg: "invalid YAML: " + msg}
}

// joined returns the errors, sorted by line, as one error; nil for none.
func joined(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
