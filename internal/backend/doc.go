// Package backend runs a real gRPC backend on loopback TCP: the
// grpc.testing.BenchmarkService (an echo with knobs: a handler delay, a hold
// on unary calls, failures on demand) and the standard grpc.health.v1
// service, with a count of the TCP connections it accepted and holds open,
// a stop, a graceful stop, a shutdown a rolling release would do, and a
// restart on the same port.
//
// It is what `kpool demo`, `kpool bench` and `kpool backends` serve, and
// what the tests dial through internal/grpctest, which wraps it for a
// testing.TB. It does not import testing, so that the kpool binary does not
// link it.
package backend
