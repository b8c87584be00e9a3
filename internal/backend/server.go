package backend

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
)

// Options configure a Server. The zero value is a plaintext server on
// 127.0.0.1 at a free port, with no stream limit and no handler delay.
type Options struct {
	// Addr is the host:port to listen on. Empty: 127.0.0.1 at a port the
	// system picks (Server.Addr says which).
	Addr string
	// MaxConcurrentStreams is the server's HTTP/2 MAX_CONCURRENT_STREAMS.
	// Zero: gRPC's default (no practical limit).
	MaxConcurrentStreams uint32
	// Delay is how long UnaryCall takes before it answers, standing in for
	// a backend's work. Zero: it answers at once.
	Delay time.Duration
	// TLS, when set, makes the server speak TLS with this configuration.
	TLS *tls.Config
}

// Server is a gRPC backend. All methods are safe for concurrent use.
type Server struct {
	// Addr is host:port. It stays the same across Restart.
	Addr string
	// Health is the server's grpc.health.v1 service; set statuses on it.
	// The server as a whole ("") starts SERVING.
	Health *health.Server

	opts Options

	accepted atomic.Int64 // TCP connections accepted, over all restarts
	open     atomic.Int64 // TCP connections accepted and not yet closed
	unary    atomic.Int64 // UnaryCalls received
	inFlight atomic.Int64 // UnaryCalls being handled
	failNext atomic.Int64 // UnaryCalls still to fail with Unavailable

	mu   sync.Mutex // protects the fields below
	srv  *grpc.Server
	hold chan struct{} // non-nil: UnaryCall waits until it is closed
}

// Listen starts a Server on opts.Addr; the caller stops it with Stop,
// GracefulStop or Shutdown. The error is the listener's, which names the
// address (one already in use, for example).
func Listen(opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: lis.Addr().String(), Health: health.NewServer(), opts: opts}
	s.serve(lis)
	return s, nil
}

func (s *Server) serve(lis net.Listener) {
	opts := []grpc.ServerOption{
		// A kpool client may be set to ping idle connections
		// (Keepalive.PermitWithoutStream) as often as every 10 s; a server
		// with gRPC's default policy would call that abuse and close the
		// connection.
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

// take returns the running grpc.Server, nil if none, and forgets it, so
// that exactly one stop acts on it.
func (s *Server) take() *grpc.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.srv
	s.srv = nil
	return srv
}

// endHold ends a hold, once no answer can reach a client: the restarted
// server answers at once.
func (s *Server) endHold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Stop stops the server at once: its listener and every connection close,
// and RPCs in flight fail on the client with Unavailable. A hold ends.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if srv := s.take(); srv != nil {
		// Held handlers see their contexts end as their connections close.
		srv.Stop()
	}
	s.endHold()
}

// GracefulStop stops the server as a backend leaving in a rolling release
// does: it stops accepting connections and new RPCs at once (clients get
// GOAWAY) and returns when the RPCs in flight have finished. A hold is not
// ended: release it, or GracefulStop waits for the held RPCs. Stopping a
// stopped server does nothing.
func (s *Server) GracefulStop() {
	if srv := s.take(); srv != nil {
		srv.GracefulStop()
	}
}

// Shutdown stops the server as a backend that is told to go does: its
// health service reports NOT_SERVING for every service (and ignores new
// statuses until Health.Resume), then it stops gracefully, as GracefulStop;
// if ctx ends before the RPCs in flight have finished, it closes their
// connections as Stop does and returns ctx's error. Shutting down a stopped
// server only sets the health statuses.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Health.Shutdown()
	srv := s.take()
	if srv == nil {
		return nil
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		srv.Stop() // makes the GracefulStop return
		<-stopped
		s.endHold()
		return ctx.Err()
	}
}

// Restart stops the server if it runs and serves again on the same address.
// The port may stay busy for a moment after the stop; Restart retries the
// listen for up to 5 seconds, then returns the error.
func (s *Server) Restart() error {
	s.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lis, err := net.Listen("tcp", s.Addr)
		if err == nil {
			s.serve(lis)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("backend: listen again on %s: %w", s.Addr, err)
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
// context ends, or the server stops), so that a caller controls how many
// RPCs are in flight. release may be called more than once.
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
