//go:build !race

package keyedpool_test

const raceEnabled = false
