package grpcpool_test

import (
	"context"
	"testing"

	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// A unary RPC through a Conn allocates no more than the same RPC on a plain
// ClientConn: Borrow and Return allocate nothing, and Conn adds nothing of
// its own.
func TestConnInvokeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; allocation budgets are checked without -race")
	}
	srv := grpctest.Start(t, grpctest.Options{})
	p, pooled := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{})
	h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	plain := h.Value().Stub() // the same connection, without the pool
	p.Return(h)

	c := context.Background()
	in := req("x")
	measure := func(foo stub) float64 {
		return testing.AllocsPerRun(200, func() {
			if _, err := foo.UnaryCall(c, in); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Interleaved and the best of three, so that gRPC's own background
	// allocations (flow control, pings) do not decide the result.
	best := func(foo stub) float64 {
		m := measure(foo)
		for range 2 {
			m = min(m, measure(foo))
		}
		return m
	}
	want := best(plain)
	got := best(pooled)
	t.Logf("allocs per UnaryCall: Conn %v, plain ClientConn %v", got, want)
	if got > want {
		t.Errorf("UnaryCall through a Conn allocs = %v, want at most %v (a plain ClientConn's)", got, want)
	}
}
