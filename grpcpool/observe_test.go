package grpcpool_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// observed records what an Observer is told.
type observed struct {
	mu   sync.Mutex
	rpcs []string // "target method code"
	durs []time.Duration
}

func (o *observed) ObserveRPC(target, method string, code codes.Code, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rpcs = append(o.rpcs, target+" "+method+" "+code.String())
	o.durs = append(o.durs, d)
}

func (o *observed) snapshot() ([]string, []time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.rpcs), slices.Clone(o.durs)
}

func TestObserverSeesEveryRPC(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{Delay: 20 * time.Millisecond})
	obs := &observed{}
	p := newPool(t, config{Observer: obs}, keyedpool.Config{MaxSharesPerObject: 10})
	conn := grpcpool.NewConn(p, srv.Addr)
	c := testpb.NewBenchmarkServiceClient(conn)

	if _, err := c.UnaryCall(grpctest.Context(t, testTimeout), req("ok")); err != nil {
		t.Fatalf("UnaryCall() = %v", err)
	}
	if _, err := c.UnaryCall(grpctest.Context(t, testTimeout), failing(int32(codes.NotFound), "nope")); err == nil {
		t.Fatalf("UnaryCall(failing) = nil error, want NotFound")
	}
	// A stream that ends with the server's status, and one the caller
	// abandons by cancelling its context: both are observed once.
	sreq := req("s")
	sreq.ResponseSize = 2
	s, err := c.StreamingFromServer(grpctest.Context(t, testTimeout), sreq)
	if err != nil {
		t.Fatalf("StreamingFromServer() = %v", err)
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("Recv() = %v", err)
		}
	}
	sctx, cancel := context.WithCancel(grpctest.Context(t, testTimeout))
	if _, err := c.StreamingCall(sctx); err != nil {
		t.Fatalf("StreamingCall() = %v", err)
	}
	cancel()

	uc, sc := "/grpc.testing.BenchmarkService/UnaryCall", "/grpc.testing.BenchmarkService/"
	want := []string{
		srv.Addr + " " + uc + " OK",
		srv.Addr + " " + uc + " NotFound",
		srv.Addr + " " + sc + "StreamingFromServer OK",
		srv.Addr + " " + sc + "StreamingCall Canceled",
	}
	grpctest.WaitFor(t, testTimeout, "4 RPCs observed", func() bool {
		got, _ := obs.snapshot()
		return len(got) >= len(want)
	})
	got, durs := obs.snapshot()
	if !slices.Equal(got, want) {
		t.Errorf("observed RPCs:\n got %q\nwant %q", got, want)
	}
	if durs[0] < 20*time.Millisecond {
		t.Errorf("observed duration of a 20 ms call = %v, want at least 20 ms", durs[0])
	}
}

func TestHealthStats(t *testing.T) {
	up := grpctest.Start(t, grpctest.Options{})
	down := grpctest.Start(t, grpctest.Options{})
	down.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	f := clienttest.NewFactory(t, config{HealthCheck: &grpcpool.HealthCheck{}})
	p, err := keyedpool.New(f, keyedpool.Config{TestOnBorrow: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := p.Borrow(grpctest.Context(t, testTimeout), up.Addr)
	if err != nil {
		t.Fatalf("Borrow(up) = %v", err)
	}
	if _, err := p.Borrow(grpctest.Context(t, testTimeout), down.Addr); err == nil {
		t.Fatalf("Borrow(not serving) = nil error, want ErrNotServing")
	}
	got := f.HealthStats()
	want := grpcpool.HealthStats{Serving: 1, NotServing: 1, Targets: 1}
	if !equalHealth(got, want) {
		t.Errorf("HealthStats() = %+v, want %+v (the not-serving client was destroyed)", got, want)
	}

	// The backend turns NOT_SERVING while a client of it lives: it is
	// listed until the client goes.
	up.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if err := f.Validate(grpctest.Context(t, testTimeout), up.Addr, h.Value()); err == nil {
		t.Fatalf("Validate() = nil, want ErrNotServing")
	}
	got = f.HealthStats()
	want = grpcpool.HealthStats{Serving: 1, NotServing: 2, Targets: 1, Unhealthy: []string{up.Addr}}
	if !equalHealth(got, want) {
		t.Errorf("HealthStats() = %+v, want %+v", got, want)
	}
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatal(err)
	}
	got = f.HealthStats()
	want = grpcpool.HealthStats{Serving: 1, NotServing: 2}
	if !equalHealth(got, want) {
		t.Errorf("after Close: HealthStats() = %+v, want %+v", got, want)
	}
}

func equalHealth(a, b grpcpool.HealthStats) bool {
	return a.Serving == b.Serving && a.NotServing == b.NotServing && a.Failed == b.Failed &&
		a.Targets == b.Targets && slices.Equal(a.Unhealthy, b.Unhealthy)
}
