// Package grpctest runs real gRPC backends on loopback TCP for kpool's tests
// and benchmarks: the grpc.testing.BenchmarkService with knobs a test needs
// (a handler delay, a hold on unary calls, failures on demand), the standard
// grpc.health.v1 service, a count of the TCP connections the server accepted
// and holds open, a stop and a restart on the same port, and certificates
// made at run time for TLS and mTLS.
package grpctest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Options configure a Server. The zero value is a plaintext server with no
// stream limit and no handler delay.
type Options struct {
	// MaxConcurrentStreams is the server's HTTP/2 MAX_CONCURRENT_STREAMS.
	// Zero: gRPC's default (no practical limit).
	MaxConcurrentStreams uint32
	// Delay is how long UnaryCall takes before it answers, standing in for
	// a backend's work. Zero: it answers at once.
	Delay time.Duration
	// TLS, when set, makes the server speak TLS with this configuration.
	TLS *tls.Config
}

// Server is a gRPC backend on 127.0.0.1. All methods are safe for concurrent
// use.
type Server struct {
	// Addr is host:port. It stays the same across Restart.
	Addr string
	// Health is the server's grpc.health.v1 service; set statuses on it.
	Health *health.Server

	opts Options
	tb   testing.TB // nil for a Server made by Listen

	accepted atomic.Int64 // TCP connections accepted, over all restarts
	open     atomic.Int64 // TCP connections accepted and not yet closed
	unary    atomic.Int64 // UnaryCalls received
	inFlight atomic.Int64 // UnaryCalls being handled
	failNext atomic.Int64 // UnaryCalls still to fail with Unavailable

	mu   sync.Mutex // protects the fields below
	srv  *grpc.Server
	hold chan struct{} // non-nil: UnaryCall waits until it is closed
}

// Start starts a Server on 127.0.0.1 port 0 and stops it when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Listen(opts)
	if err != nil {
		tb.Fatal(err)
	}
	s.tb = tb
	tb.Cleanup(s.Stop)
	return s
}

// Listen starts a Server on 127.0.0.1 port 0 outside a test, for programs
// such as the kpool command; the caller stops it with Stop. Restart on such
// a server panics if it cannot listen again, as there is no test to fail.
func Listen(opts Options) (*Server, error) {
	s := &Server{opts: opts, Health: health.NewServer()}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("grpctest: listen: %w", err)
	}
	s.Addr = lis.Addr().String()
	s.serve(lis)
	return s, nil
}

func (s *Server) serve(lis net.Listener) {
	opts := []grpc.ServerOption{
		// kpool's client defaults ping every 30 s, with or without streams;
		// a default server would call that abuse and close the connection.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if s.opts.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(s.opts.MaxConcurrentStreams))
	}
	if s.opts.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.opts.TLS)))
	}
	srv := grpc.NewServer(opts...)
	testpb.RegisterBenchmarkServiceServer(srv, &benchService{s: s})
	healthpb.RegisterHealthServer(srv, s.Health)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(&countingListener{Listener: lis, s: s})
}

// Stop stops the server at once: its listener and every connection close,
// and RPCs in flight fail on the client with Unavailable. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		// Held handlers see their contexts end as their connections close.
		srv.Stop()
	}
	// A hold ends with the server, now that no answer can reach a client:
	// the restarted server answers at once.
	s.mu.Lock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
	s.mu.Unlock()
}

// GracefulStop stops the server as a backend leaving in a rolling release
// does: it stops accepting connections and new RPCs at once (clients get
// GOAWAY) and returns when the RPCs in flight have finished. A hold is not
// ended: release it, or GracefulStop waits for the held RPCs. Stopping a
// stopped server does nothing.
func (s *Server) GracefulStop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.GracefulStop()
	}
}

// Restart stops the server if it runs and serves again on the same address.
// The port may stay busy for a moment after the stop; Restart retries the
// listen for up to 5 seconds.
func (s *Server) Restart() {
	if s.tb != nil {
		s.tb.Helper()
	}
	s.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lis, err := net.Listen("tcp", s.Addr)
		if err == nil {
			s.serve(lis)
			return
		}
		if time.Now().After(deadline) {
			if s.tb == nil {
				panic(fmt.Sprintf("grpctest: listen again on %s: %v", s.Addr, err))
			}
			s.tb.Fatalf("grpctest: listen again on %s: %v", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Accepted returns the number of TCP connections the server has accepted,
// over all restarts.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// Open returns the number of accepted TCP connections not yet closed.
func (s *Server) Open() int64 { return s.open.Load() }

// UnaryCalls returns the number of UnaryCalls received.
func (s *Server) UnaryCalls() int64 { return s.unary.Load() }

// InFlight returns the number of UnaryCalls being handled now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// FailNext makes the next n UnaryCalls fail with an Unavailable status sent
// by the handler: an application error on a healthy connection.
func (s *Server) FailNext(n int) { s.failNext.Store(int64(n)) }

// Hold makes UnaryCalls wait, from now on, until release is called (or their
// context ends, or the server stops), so that a test controls how many RPCs
// are in flight. release may be called more than once.
func (s *Server) Hold() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == ch {
				s.hold = nil
				close(ch)
			}
			s.mu.Unlock()
		})
	}
}

// WaitFor polls cond until it holds or the timeout passes, and fails the
// test in that case with msg. Tests use it instead of sleeping: the wait is
// as short as the condition allows, and bounded.
func WaitFor(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(time.Millisecond)
	}
}

type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.accepted.Add(1)
	l.s.open.Add(1)
	return &countingConn{Conn: c, s: l.s}, nil
}

type countingConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *countingConn) Close() error {
	c.once.Do(func() { c.s.open.Add(-1) })
	return c.Conn.Close()
}

// benchService implements grpc.testing.BenchmarkService.
type benchService struct {
	testpb.UnimplementedBenchmarkServiceServer
	s *Server
}

// UnaryCall echoes the request's payload after the server's Delay. A
// request's ResponseStatus, when set, is returned as the call's status.
func (b *benchService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s := b.s
	s.unary.Add(1)
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	if s.failNext.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "grpctest: failing on demand")
	}
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if s.opts.Delay > 0 {
		time.Sleep(s.opts.Delay)
	}
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

// StreamingCall echoes every request until the client closes its side.
func (b *benchService) StreamingCall(stream grpc.BidiStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.SimpleResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// StreamingFromClient answers with the last payload once the client closes
// its side.
func (b *benchService) StreamingFromClient(stream grpc.ClientStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	var last *testpb.Payload
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.SimpleResponse{Payload: last})
		}
		if err != nil {
			return err
		}
		last = req.GetPayload()
	}
}

// StreamingFromServer sends the request's payload ResponseSize times and
// ends the stream. With ResponseSize 0 it sends the payload once and then
// waits, without end, until the client goes away.
func (b *benchService) StreamingFromServer(req *testpb.SimpleRequest, stream grpc.ServerStreamingServer[testpb.SimpleResponse]) error {
	n := req.GetResponseSize()
	for i := int32(0); i < max(n, 1); i++ {
		if err := stream.Send(&testpb.SimpleResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
	if n == 0 {
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
	return nil
}
