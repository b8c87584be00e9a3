package config

import "math"

// MaxValues is maxValues, for tests of the alias bound.
const MaxValues = maxValues

// Entries counts the entries of data, as checkSize does.
func Entries(data []byte) int {
	n, _ := entries(data, math.MaxInt)
	return n
}

// ValuesDecoded parses data and returns how many values (and keys) the
// decoder read, aliases followed.
func ValuesDecoded(data []byte) int {
	d := newDecoder("kpool.yaml")
	d.parse(data, &File{})
	return d.values
}
