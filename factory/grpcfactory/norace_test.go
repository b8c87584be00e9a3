//go:build !race

package grpcfactory_test

const raceEnabled = false
