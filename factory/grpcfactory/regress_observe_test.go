package grpcfactory_test

// Regression tests from an independent review of the observer and the
// health tracking: each failed before the fix its comment names.

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// Was a bug: HealthStats is documented "It is all zero without HealthCheck", but
// Make and Destroy track targets whatever the config, so a factory without
// HealthCheck reports Targets 1 for one live client; /stats then shows
// "health": {"targets": 1, ...} for a pool that runs no health checks.
// Fix: track targets only when HealthCheck is set (f.r.healthTimeout > 0),
// or change the doc to say Targets counts live targets in any case.
func TestRegressHealthStatsNotZeroWithoutHealthCheck(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := newFactory(t, config{})
	c, err := f.Make(ctx(t), srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Destroy(ctx(t), srv.Addr, c)
	if got := f.HealthStats(); !equalHealth(got, grpcfactory.HealthStats{}) {
		t.Errorf("HealthStats() of a factory without HealthCheck = %+v, want all zero (as documented)", got)
	}
}

// slowHealth is a grpc.health.v1 service whose Checks wait until release is
// closed (or their context ends).
type slowHealth struct {
	healthpb.UnimplementedHealthServer
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (s *slowHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// Was a bug: a health Check cut short because the factory itself closed the
// client (Destroy while Validate's Check is in flight: abandoned-lease
// removal, a user's own probe, Close/Clear racing with a check) is counted
// as a backend failure and marks the TARGET unhealthy. check only drops the
// result when the caller's ctx ended; here ctx is fine, the RPC fails with
// Canceled ("the client connection is closing") and targets.checked counts
// Failed++ and sets bad on the target's state, which is shared by every
// client of that target. Another live client of the same target (same key,
// or another key with the same target), whose backend answers SERVING, is
// then reported in HealthStats.Unhealthy / grpc_unhealthy_nodes until it
// is checked again (with shared leases and Conn: up to HealthCheck.Interval
// per RPC, for an idle connection possibly never).
// Fix: in check, ignore the answer (like the ctx.Err() case) when the
// client has been destroyed: set a flag in Destroy before closing the
// conn, or test c.conn.GetState() == connectivity.Shutdown after the RPC.
func TestRegressCheckCutShortByDestroyMarksTargetUnhealthy(t *testing.T) {
	hs := &slowHealth{entered: make(chan struct{}), release: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	releaseOnce := sync.OnceFunc(func() { close(hs.release) })
	t.Cleanup(releaseOnce)
	addr := lis.Addr().String()

	f := newFactory(t, config{HealthCheck: &grpcfactory.HealthCheck{Timeout: testTimeout}})
	c1, err := f.Make(ctx(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := f.Make(ctx(t), addr) // a second live client of the same target
	if err != nil {
		t.Fatal(err)
	}
	defer f.Destroy(ctx(t), addr, c2)

	checked := make(chan error, 1)
	go func() { checked <- f.Validate(ctx(t), addr, c1) }()
	select {
	case <-hs.entered:
	case <-ctx(t).Done():
		t.Fatal("the Check did not reach the backend")
	}
	if err := f.Destroy(ctx(t), addr, c1); err != nil {
		t.Fatal(err)
	}
	if err := <-checked; err == nil {
		t.Fatal("Validate() of a client destroyed during its Check = nil error")
	}
	releaseOnce() // the backend is and was SERVING

	got := f.HealthStats()
	want := grpcfactory.HealthStats{Targets: 1}
	if !equalHealth(got, want) {
		t.Errorf("HealthStats() after a Check cut short by Destroy = %+v, want %+v: no backend answered badly, and %s still has a live client",
			got, want, addr)
	}
}
