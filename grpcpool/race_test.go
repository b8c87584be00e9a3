//go:build race

package grpcpool_test

const raceEnabled = true
