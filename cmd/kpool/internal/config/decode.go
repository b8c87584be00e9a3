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
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/kpool-go/kpool/cmd/kpool/internal/typo"
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
	return &valueError{fmt.Sprintf("want %s, got %q", want, shown(n.Value))}
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

	// failed holds the paths whose values could not be decoded, and
	// within holds every path that encloses one, so that the checks after
	// decoding say nothing about what decoding left at zero.
	failed, within map[string]bool

	values int // values decoded so far, aliases followed; see maxValues

	// alias is the outermost alias being followed, and aliasPath the
	// field it stands for: where a file that aliases take past maxValues
	// is refused.
	alias     *yaml.Node
	aliasPath string
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, lines: map[string]int{}, failed: map[string]bool{}, within: map[string]bool{}}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// fail reports that the value at path could not be decoded.
func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errorf(n, path, format, args...)
	d.failed[path] = true
	for p := path; ; {
		i := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if i < 0 {
			break
		}
		p = p[:i]
		d.within[p] = true
	}
}

// spoiled reports whether path could not be decoded, or lies within or
// around a value that could not: a check of it would judge zero values
// the file did not write.
func (d *decoder) spoiled(path string) bool {
	if d.within[path] {
		return true
	}
	for p := path; ; {
		if d.failed[p] {
			return true
		}
		i := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if i < 0 {
			// The file's root, path "", spoils everything in it: a file
			// that is not a mapping wrote no field at all.
			return p != "" && d.failed[""]
		}
		p = p[:i]
	}
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

// spend counts n, at path, against maxValues, and reports whether the
// decoder may read it. Past the bound it reads nothing more: only aliases
// take a file there, as checkSize bounds the values written.
func (d *decoder) spend(n *yaml.Node, path string) bool {
	if d.values >= maxValues {
		return false // reported once, when the bound was reached
	}
	if d.values++; d.values == maxValues {
		if d.alias != nil {
			n, path = d.alias, d.aliasPath
		}
		d.errorf(n, path, "aliases expand the file past %d values here, the most a configuration file may hold", maxValues)
		return false
	}
	return true
}

// decode reads n into v, the field at path.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	if !d.spend(n, path) {
		return
	}
	if n.Kind == yaml.AliasNode && d.alias == nil {
		d.alias, d.aliasPath = n, path
		defer func() { d.alias, d.aliasPath = nil, "" }()
	}
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
			d.fail(n, path, "%v", err)
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
			d.fail(n, path, "%v", errWant("a list", n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "%v", errWant("a string", n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		i, err := strconv.ParseInt(n.Value, 0, strconv.IntSize)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil {
			d.fail(n, path, "%v", errWant("an integer", n))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&f) != nil {
			d.fail(n, path, "%v", errWant("a number", n))
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
			d.fail(n, path, "%v", errWant("true or false", n))
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
		d.fail(n, path, "%v", errWant("a mapping of keys to values", n))
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
		key := shown(k.Value)
		fp := join(path, key)
		if !d.spend(k, fp) {
			return
		}
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
// be a typo (2 edits), and lists the valid names otherwise.
func known(names []string, key string) string {
	if best := typo.Nearest(strings.ReplaceAll(key, "-", "_"), names, 2); best != "" {
		return fmt.Sprintf("did you mean %s?", best)
	}
	return "want one of " + strings.Join(names, ", ")
}

// parse decodes data, the contents of the file called name, into f. It
// reports whether the file could be read as YAML within the bounds (see
// MaxFileSize), so that the checks after decoding make sense.
func (d *decoder) parse(data []byte, f *File) bool {
	if !d.checkSize(data) {
		return false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return true // an empty file: every default, and the checks say what is missing
	}
	if err != nil {
		d.errs = append(d.errs, yamlError(d.file, data, err))
		return false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			line = yamlError(d.file, data, err).Line
		}
		d.errorf(&yaml.Node{Line: line}, "", "want one YAML document, found another")
		return false
	}
	if !d.checkDepth(&doc, 0) {
		return false
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d.decode(root, "", reflect.ValueOf(f).Elem())
	return d.values < maxValues
}

// yamlError turns a syntax error of the YAML library ("yaml: line 3: did
// not find expected key") into an *Error at its line, in data. The library
// leaves the line out on the first line, and for bytes that are not
// UTF-8 or not allowed in YAML, whose line is found here.
func yamlError(file string, data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(num); err == nil {
				line, msg = l, tail
			}
		}
	} else if l := badByteLine(data); l > 0 {
		line = l
	}
	return &Error{File: file, Line: line, Msg: "invalid YAML: " + msg}
}

// badByteLine returns the line of the first byte of data that YAML does
// not allow (not UTF-8, or a control character other than tab and line
// breaks), or 0. YAML's UTF-16 forms are left to the library.
func badByteLine(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1,
			r < 0x20 && r != '\t' && r != '\n' && r != '\r',
			r == 0x7f, r >= 0x80 && r <= 0x9f && r != 0x85, r == 0xfffe, r == 0xffff:
			return line
		case r == '\n':
			line++
		}
		i += size
	}
	return 0
}

// joined returns the errors, sorted by line, as one error; nil for none.
// Past maxProblems, one more error counts the rest.
func joined(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	if len(errs) > maxProblems {
		rest := errs[maxProblems]
		errs = append(errs[:maxProblems:maxProblems], &Error{File: rest.File, Line: rest.Line,
			Msg: fmt.Sprintf("%d more problems from this line on; fix those above first", len(errs)-maxProblems)})
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
