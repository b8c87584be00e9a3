// Package grpctest runs real gRPC backends on loopback TCP for kpool's tests
// and benchmarks, bound to a testing.TB: a Server of internal/backend (the
// grpc.testing.BenchmarkService with knobs a test needs, the standard
// grpc.health.v1 service, connection counts, stop and restart on the same
// port) that stops when the test ends and fails the test rather than
// return errors; DeadAddr, an address nobody serves; WaitFor, to poll
// instead of sleeping, and Context, a context bounded like every wait of a
// test; continuous traffic; and certificates made at run time for TLS and
// mTLS. The client side (factories, routers) is internal/clienttest.
//
// What needs no testing.TB lives in internal/backend, which programs (the
// kpool command) use: this package imports testing.
package grpctest

import (
	"net"
	"testing"

	"github.com/kpool-go/kpool/internal/backend"
)

// Options configure a Server: see backend.Options. The zero value is a
// plaintext server on 127.0.0.1 at a free port, with no stream limit and no
// handler delay.
type Options = backend.Options

// Server is a backend.Server that belongs to a test. All methods are safe
// for concurrent use.
type Server struct {
	*backend.Server
	tb testing.TB
}

// Start starts a Server and stops it when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := backend.Listen(opts)
	if err != nil {
		tb.Fatalf("grpctest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return &Server{Server: s, tb: tb}
}

// Restart stops the server if it runs and serves again on the same address,
// as backend.Server.Restart, and fails the test if it cannot listen again
// within 5 seconds.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.Server.Restart(); err != nil {
		s.tb.Fatal(err)
	}
}

// DeadAddr returns a loopback address nobody listens on: the port was free
// a moment ago and is closed again, so a dial is refused at once.
func DeadAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}
