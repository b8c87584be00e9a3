package grpcpool_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

type (
	stub   = testpb.BenchmarkServiceClient
	client = grpcpool.Client[stub]
	pool   = keyedpool.Pool[string, *client]
	handle = keyedpool.Pooled[string, *client]
	config = grpcpool.Config[string, stub]
)

// testTimeout bounds every wait of these tests: a bug shows up as a failure
// naming what did not happen, never as a hang.
const testTimeout = 10 * time.Second

// newPool makes a pool over newFactory(cfg) and closes it when the test
// ends, failing the test if a lease is still out by then: every RPC and
// stream must have given its share back.
func newPool(t *testing.T, cfg config, pcfg keyedpool.Config) *pool {
	t.Helper()
	p, err := keyedpool.New(clienttest.NewFactory(t, cfg), pcfg)
	if err != nil {
		t.Fatalf("keyedpool.New() error = %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("pool Close() = %v, want nil (a lease not given back?)", err)
		}
	})
	return p
}

// unaryBurst starts n UnaryCalls through foo at once, each bounded by
// testTimeout, and returns a function that waits for them all and fails
// the test for each that failed.
func unaryBurst(t *testing.T, foo stub, n int) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			errs <- err
		})
	}
	return func() {
		t.Helper()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("UnaryCall() = %v", err)
			}
		}
	}
}

// req is a request whose payload is body.
func req(body string) *testpb.SimpleRequest {
	return &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(body)}}
}

// failing returns a request the server answers with code and message.
func failing(code int32, msg string) *testpb.SimpleRequest {
	return &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: code, Message: msg}}
}

// silentListener listens on addr and accepts connections without ever
// answering, like a backend that hangs.
func silentListener(t *testing.T, addr string) net.Listener {
	t.Helper()
	var lis net.Listener
	var err error
	deadline := time.Now().Add(testTimeout)
	for lis, err = net.Listen("tcp", addr); err != nil; lis, err = net.Listen("tcp", addr) {
		if time.Now().After(deadline) {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
	return lis
}
