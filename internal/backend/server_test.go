package backend_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/internal/backend"
	"github.com/kpool-go/kpool/internal/grpctest"
)

const testTimeout = 10 * time.Second

// listen starts a backend and stops it when the test ends.
func listen(t *testing.T, opts backend.Options) *backend.Server {
	t.Helper()
	s, err := backend.Listen(opts)
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// dial returns a client of s's echo service, closed when the test ends.
func dial(t *testing.T, s *backend.Server) testpb.BenchmarkServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewBenchmarkServiceClient(cc)
}

func healthStatus(t *testing.T, s *backend.Server, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := s.Health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("Health.Check(%q) = %v", service, err)
	}
	return resp.GetStatus()
}

// A backend listens where it is told (kpool backends serves a file's
// addresses), answers the echo service and counts what it served; an
// address in use is the listener's error, which names it.
func TestListenServesTheGivenAddress(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	s := listen(t, backend.Options{Addr: addr})
	if s.Addr != addr {
		t.Errorf("Addr = %s, want %s", s.Addr, addr)
	}
	if got := healthStatus(t, s, ""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of the server as a whole = %v, want SERVING", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("kpool")}}
	resp, err := dial(t, s).UnaryCall(ctx, req)
	if err != nil || string(resp.GetPayload().GetBody()) != "kpool" {
		t.Fatalf("UnaryCall() = %v, %v; want the payload echoed", resp, err)
	}
	if s.UnaryCalls() != 1 || s.Accepted() != 1 || s.Open() != 1 {
		t.Errorf("UnaryCalls, Accepted, Open = %d, %d, %d; want 1, 1, 1", s.UnaryCalls(), s.Accepted(), s.Open())
	}

	_, err = backend.Listen(backend.Options{Addr: addr})
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Addr == nil || opErr.Addr.String() != addr {
		t.Errorf("Listen(%s) while it is served = %v, want the listener's error naming the address", addr, err)
	}
}

// Shutdown reports NOT_SERVING at once and lets the RPCs in flight finish
// before it returns.
func TestShutdownLetsRPCsInFlightFinish(t *testing.T) {
	s := listen(t, backend.Options{})
	s.Health.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	c := dial(t, s)
	release := s.Hold()
	defer release()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		errc <- err
	}()
	grpctest.WaitFor(t, testTimeout, "the RPC never reached the handler", func() bool { return s.InFlight() == 1 })

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	grpctest.WaitFor(t, testTimeout, "Shutdown did not report NOT_SERVING", func() bool {
		return healthStatus(t, s, "") == healthpb.HealthCheckResponse_NOT_SERVING &&
			healthStatus(t, s, "svc") == healthpb.HealthCheckResponse_NOT_SERVING
	})
	select {
	case err := <-done:
		t.Fatalf("Shutdown() = %v with an RPC in flight, want it to wait", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-errc; err != nil {
		t.Errorf("RPC in flight during Shutdown = %v, want success", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown() = %v, want nil", err)
	}
}

// When its context ends first, Shutdown closes the connections left: the
// held RPC fails, and Shutdown returns the context's error.
func TestShutdownCutsRPCsWhenItsContextEnds(t *testing.T) {
	s := listen(t, backend.Options{})
	c := dial(t, s)
	s.Hold() // never released: only the cut ends the RPC
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		errc <- err
	}()
	grpctest.WaitFor(t, testTimeout, "the RPC never reached the handler", func() bool { return s.InFlight() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown() with a held RPC = %v, want %v", err, context.DeadlineExceeded)
	}
	if err := <-errc; status.Code(err) != codes.Unavailable {
		t.Errorf("held RPC cut by Shutdown = %v, want Unavailable", err)
	}
	grpctest.WaitFor(t, testTimeout, "the cut connection is still open", func() bool { return s.Open() == 0 })
}

// Restart serves again on the same address; the connections of before
// are closed.
func TestRestartServesTheSameAddress(t *testing.T) {
	s := listen(t, backend.Options{})
	addr := s.Addr
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := dial(t, s).UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart() = %v", err)
	}
	if s.Addr != addr {
		t.Errorf("Addr after Restart = %s, want %s", s.Addr, addr)
	}
	grpctest.WaitFor(t, testTimeout, "the connection of before the restart is still open", func() bool { return s.Open() == 0 })
	if _, err := dial(t, s).UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall() after Restart = %v", err)
	}
	if got := s.Accepted(); got != 2 {
		t.Errorf("Accepted() = %d after a restart, want 2", got)
	}
}
