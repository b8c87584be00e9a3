package grpcpool_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// With keyedpool's make backoff, RPCs to a backend that is down fail fast
// with Unavailable instead of each dialling it, and traffic comes back by
// itself once the backend does.
func TestConnMakeBackoffWhileBackendDown(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	srv.Stop()
	var dials atomic.Int64
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	p := newPool(t, config{
		ConnectTimeout: testTimeout / 2,
		DialOptions:    []grpc.DialOption{grpc.WithContextDialer(dialer)},
	}, keyedpool.Config{
		MaxSharesPerObject:   100,
		MakeFailureThreshold: 2,
		MakeBackoffBase:      200 * time.Millisecond,
		MakeBackoffMax:       200 * time.Millisecond,
	})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))

	for i := range 10 {
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("down"))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("RPC %d to a stopped backend = %v, want Unavailable", i, err)
		}
		if wantBackoff := i >= 2; errors.Is(err, keyedpool.ErrBackoff) != wantBackoff {
			t.Errorf("RPC %d: errors.Is(err, ErrBackoff) = %v, want %v (threshold 2): %v", i, !wantBackoff, wantBackoff, err)
		}
	}
	if got := dials.Load(); got > 4 {
		t.Errorf("dials for 10 RPCs to a dead backend = %d, want about 2: the rest must fail fast", got)
	}

	srv.Restart()
	grpctest.WaitFor(t, testTimeout, "an RPC to succeed after the backend came back", func() bool {
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("up"))
		return err == nil
	})
	if ks := p.KeyStats(srv.Addr); ks.MakeFailures != 0 || !ks.BackoffUntil.IsZero() {
		t.Errorf("KeyStats after recovery = %+v, want the backoff closed", ks)
	}
}
