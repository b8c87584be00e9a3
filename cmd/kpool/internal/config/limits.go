package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"go.yaml.in/yaml/v3"
)

// Bounds on a configuration file, so that a hostile or broken one is
// refused quickly, in little memory: the YAML library builds a tree of
// about 240 bytes per value, and aliases could make the decoder walk a
// small tree a huge number of times (a "billion laughs" file). Within
// them, a file is accepted or refused in well under 50 MiB.
const (
	// MaxFileSize is the size of the largest file Load and Parse accept.
	MaxFileSize = 1 << 20

	// MaxEntries bounds what a file may hold: lines, keys, list items and
	// the indicators of flow collections ("[", "{", ",") together. One
	// entry makes at most two YAML values, so counting them bounds the
	// tree before it is built; a kpool file needs a few hundred, and a
	// static list of some thousands of addresses fits.
	MaxEntries = 25_000

	// maxValues bounds the values the decoder reads, aliases followed:
	// what MaxEntries allows a file without aliases to hold.
	maxValues = 2*MaxEntries + 2

	// MaxDepth bounds how deep collections may nest. A kpool file needs 7
	// levels (services[0].discovery.consul.tls.ca_file).
	MaxDepth = 32

	// maxProblems bounds the problems reported: past it, a count of the
	// others stands for them.
	maxProblems = 100

	// maxShown bounds how much of a key or value a message quotes.
	maxShown = 64
)

// ReadFile reads the configuration file at path, at most MaxFileSize+1
// bytes of it (Parse refuses more). An error reads "cannot read PATH:
// REASON" and wraps the reason (fs.ErrNotExist, ...).
func ReadFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, readError(path, err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, readError(path, err)
	}
	return data, nil
}

func readError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is said once, first
	}
	return fmt.Errorf("cannot read %s: %w", path, err)
}

// entryBytes are the bytes that count as entries: every way a YAML value
// can begin but the first value of the file. Line breaks are counted
// whatever they hold, and the parts of quoted text and comments too: the
// count may exceed the values but never falls short of them. "\x85",
// "\xa8" and "\xa9" end the UTF-8 forms of NEL, LS and PS, which YAML
// takes as line breaks.
var entryBytes = [256]bool{
	'\n': true, '\r': true, '-': true, '?': true, ':': true, ',': true,
	'[': true, '{': true, 0x85: true, 0xa8: true, 0xa9: true,
}

// checkSize refuses data that is larger than MaxFileSize or holds more
// than MaxEntries entries, at the line where it passes the bound.
func (d *decoder) checkSize(data []byte) bool {
	if len(data) > MaxFileSize {
		line := 1 + bytes.Count(data[:MaxFileSize], []byte{'\n'})
		d.errorf(&yaml.Node{Line: line}, "", "file too large: it passes %d bytes (1 MiB) on this line, the most a configuration file may hold", MaxFileSize)
		return false
	}
	if n, line := entries(data, MaxEntries); n > MaxEntries {
		d.errorf(&yaml.Node{Line: line}, "", "file too large: its lines, keys and list items pass %d on this line, the most a configuration file may hold", MaxEntries)
		return false
	}
	return true
}

// entries counts the entries of data, up to limit+1, and returns the line
// where it stopped.
func entries(data []byte, limit int) (n, line int) {
	line = 1
	for _, b := range data {
		if !entryBytes[b] {
			continue
		}
		if n++; n > limit {
			break
		}
		if b == '\n' {
			line++
		}
	}
	return n, line
}

// checkDepth refuses a tree that nests deeper than MaxDepth, at the first
// value too deep. Aliases are not followed: the values they stand for are
// checked where they are written.
func (d *decoder) checkDepth(n *yaml.Node, depth int) bool {
	if depth > MaxDepth {
		d.errorf(n, "", "nested too deep: more than %d levels, the most a configuration file may have", MaxDepth)
		return false
	}
	for _, c := range n.Content {
		if !d.checkDepth(c, depth+1) {
			return false
		}
	}
	return true
}

// shown returns s, cut to maxShown bytes (at a rune boundary) and marked
// as cut, for a message.
func shown(s string) string {
	if len(s) <= maxShown {
		return s
	}
	cut := maxShown
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
