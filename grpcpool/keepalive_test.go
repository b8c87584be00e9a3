package grpcpool_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// defaultServerMinTime is the keepalive.EnforcementPolicy.MinTime of a
// server made by grpc.NewServer() without a KeepaliveEnforcementPolicy
// option. Such a server also refuses pings while no stream is open
// (PermitWithoutStream false): it counts a ping as a strike when it comes
// sooner than MinTime after the last one with streams open, or sooner than
// two hours after it with none (a constant of grpc-go, which no option
// changes), and answers the third strike in a row without data sent in
// between with GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
const defaultServerMinTime = 5 * time.Minute

// keepaliveScale divides every keepalive time of
// TestDefaultKeepaliveIsAcceptedByDefaultServer, the server's MinTime and
// the client's Time and Timeout alike. gRPC raises a client's Time under
// 10 s to 10 s, so 3 is the most that time can be shrunk while the former
// default Time, 30 s, still scales exactly (to the floor, 10 s); with it
// every time in play scales exactly, but the two-hour window for pings
// without streams, which only makes the server stricter.
const keepaliveScale = 3

// keepaliveWindow is how long the test watches the connections. A client
// that pings every 10 s with a policy-breaking ping due on each (the former
// default, scaled) makes its third strike about 30 s after its last RPC:
// the data of that RPC's answer makes the client send a flow-control ping,
// which resets the server's strikes but starts its clock. The window leaves
// that six seconds of room for slow timers under -race.
const keepaliveWindow = 36 * time.Second

// connCounter is a server stats.Handler that counts the server's
// connections, and signals ended as the server closes one.
type connCounter struct {
	begun, closed atomic.Int64
	ended         chan struct{} // gets a value, when there is room, as a connection closes
}

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		c.begun.Add(1)
	case *stats.ConnEnd:
		c.closed.Add(1)
		select {
		case c.ended <- struct{}{}:
		default:
		}
	}
}

// silentBackend answers UnaryCall at once and holds every StreamingCall
// open, sending nothing, until the client ends it.
type silentBackend struct {
	testpb.UnimplementedBenchmarkServiceServer
	streaming chan struct{} // gets a value, when there is room, as a StreamingCall begins
}

func (silentBackend) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{}, nil
}

func (b silentBackend) StreamingCall(stream grpc.BidiStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	select {
	case b.streaming <- struct{}{}:
	default:
	}
	<-stream.Context().Done()
	return nil
}

// startDefaultPolicyServer serves a silentBackend on 127.0.0.1, with
// grpc-go's default keepalive enforcement policy scaled down by
// keepaliveScale, until the test ends.
func startDefaultPolicyServer(t *testing.T) (addr string, conns *connCounter, b silentBackend) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = &connCounter{ended: make(chan struct{}, 1)}
	b = silentBackend{streaming: make(chan struct{}, 1)}
	srv := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: defaultServerMinTime / keepaliveScale}),
		grpc.StatsHandler(conns),
	)
	testpb.RegisterBenchmarkServiceServer(srv, b)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), conns, b
}

// expectConnsKept waits keepaliveWindow and fails the test if the server
// closes a connection meanwhile, or if then it has not accepted exactly
// want connections or a client's connection is no longer READY.
func expectConnsKept(t *testing.T, conns *connCounter, want int64, clients ...*client) {
	t.Helper()
	start := time.Now()
	select {
	case <-conns.ended:
		t.Fatalf("the server closed a connection after %v, want none closed in %v: "+
			"the default keepalive pings more often than a default server allows (GOAWAY ENHANCE_YOUR_CALM \"too_many_pings\")",
			time.Since(start).Round(time.Second), keepaliveWindow)
	case <-time.After(keepaliveWindow):
	}
	if got := conns.begun.Load(); got != want {
		t.Errorf("server accepted %d connections, want %d", got, want)
	}
	for i, c := range clients {
		if s := c.ClientConn().GetState(); s != connectivity.Ready {
			t.Errorf("connection %d is %v after %v, want READY", i, s, keepaliveWindow)
		}
	}
}

// TestDefaultKeepaliveIsAcceptedByDefaultServer holds pooled connections
// made with the default Keepalive to a server with grpc-go's default
// enforcement policy, idle and with a stream open that sends nothing, and
// checks that the server does not close them for pinging too often. Real
// time runs, as the pings go over real sockets; keepaliveScale keeps it
// short, and the subtests run in parallel.
func TestDefaultKeepaliveIsAcceptedByDefaultServer(t *testing.T) {
	t.Parallel()
	// The window cannot reach the scaled Time of a default that pings
	// no sooner than a default server allows: pings that break the policy
	// while a stream is open are only seen when Time is under MinTime, so
	// that is checked here.
	if grpcpool.DefaultKeepaliveTime < defaultServerMinTime {
		t.Errorf("DefaultKeepaliveTime = %v, want %v or more (a default server's MinTime)", grpcpool.DefaultKeepaliveTime, defaultServerMinTime)
	}
	// The default Keepalive, scaled: the zero value of every other field.
	cfg := config{
		Keepalive: grpcpool.Keepalive{
			Time:    grpcpool.DefaultKeepaliveTime / keepaliveScale,
			Timeout: grpcpool.DefaultKeepaliveTimeout / keepaliveScale,
		},
		ConnectTimeout: testTimeout,
	}

	t.Run("IdleConnections", func(t *testing.T) {
		t.Parallel()
		const n = 3
		addr, conns, _ := startDefaultPolicyServer(t)
		p := newPool(t, cfg, keyedpool.Config{MaxTotalPerKey: n})
		c := grpctest.Context(t, testTimeout)
		var clients []*client
		var hs []*handle
		for range n {
			h, err := p.Borrow(c, addr)
			if err != nil {
				t.Fatalf("Borrow() error = %v", err)
			}
			hs = append(hs, h)
			clients = append(clients, h.Value())
			// Each connection carries an RPC before it idles in the pool, as
			// a pooled connection does.
			if _, err := h.Value().Stub().UnaryCall(c, req("x")); err != nil {
				t.Fatalf("UnaryCall() error = %v", err)
			}
		}
		for _, h := range hs {
			if err := p.Return(h); err != nil {
				t.Fatalf("Return() = %v, want nil", err)
			}
		}
		expectConnsKept(t, conns, n, clients...)
	})

	t.Run("SilentStream", func(t *testing.T) {
		t.Parallel()
		addr, conns, b := startDefaultPolicyServer(t)
		p := newPool(t, cfg, keyedpool.Config{MaxTotalPerKey: 1})
		c := grpctest.Context(t, testTimeout)
		h, err := p.Borrow(c, addr)
		if err != nil {
			t.Fatalf("Borrow() error = %v", err)
		}
		defer p.Return(h)
		if _, err := h.Value().Stub().UnaryCall(c, req("x")); err != nil {
			t.Fatalf("UnaryCall() error = %v", err)
		}
		sc, cancel := context.WithTimeout(context.Background(), keepaliveWindow+testTimeout)
		defer cancel() // before Return: the stream ends first
		if _, err := h.Value().Stub().StreamingCall(sc); err != nil {
			t.Fatalf("StreamingCall() error = %v", err)
		}
		select {
		case <-b.streaming:
		case <-c.Done():
			t.Fatal("the server never saw the stream begin")
		}
		expectConnsKept(t, conns, 1, h.Value())
	})
}
