package grpcmetrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// README: grpc_requests_total counts "RPCs on pooled connections; the
// method names the gRPC service (`/pkg.Service/Method`)", by method, code
// and key with PerKey; grpcpool.Observer: "ObserveRPC is called exactly
// once per RPC when it ends ... for a stream when the caller reads its end
// or an error, or when its context ends first". One observation per RPC of
// each kind (unary, server-streaming, client-streaming, bidi), with its
// code and method, and none more when contexts end later.
func TestReviewMetricsRPCKindsObservedOnce(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	srv := grpctest.Start(t, grpctest.Options{})
	_, p := grpcPool(t, grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		Observer: newObserver(t, m),
	}, keyedpool.Config{MaxSharesPerObject: 10})
	rvNoErrG(t, "AddPool", metrics.AddPool(m, "p", p, nil))
	c := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var cancels []context.CancelFunc
	sub := func() context.Context {
		c, cc := context.WithTimeout(ctx, testTimeout)
		cancels = append(cancels, cc)
		return c
	}

	// Unary: 3 OK, 1 NotFound.
	for range 3 {
		if _, err := c.UnaryCall(sub(), &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.UnaryCall(sub(), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}}); status.Code(err) != codes.NotFound {
		t.Fatalf("UnaryCall(NotFound) = %v", err)
	}
	// Server streaming, read to its end: 2 OK.
	for range 2 {
		ss, err := c.StreamingFromServer(sub(), &testpb.SimpleRequest{ResponseSize: 3})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err := ss.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != 3 {
			t.Fatalf("server stream gave %d messages, want 3", n)
		}
	}
	// Server streaming abandoned by its context: 1 Canceled.
	{
		sctx, scancel := context.WithCancel(ctx)
		ss, err := c.StreamingFromServer(sctx, &testpb.SimpleRequest{ResponseSize: 0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ss.Recv(); err != nil {
			t.Fatal(err)
		}
		scancel()
		if _, err := ss.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("Recv after cancel = %v", err)
		}
	}
	// Client streaming: 2 OK.
	for range 2 {
		cs, err := c.StreamingFromClient(sub())
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := cs.Send(&testpb.SimpleRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cs.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
	}
	// Bidi: 1 OK.
	{
		bs, err := c.StreamingCall(sub())
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := bs.Send(&testpb.SimpleRequest{}); err != nil {
				t.Fatal(err)
			}
			if _, err := bs.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		if err := bs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := bs.Recv(); err != io.EOF {
			t.Fatalf("bidi Recv at end = %v, want EOF", err)
		}
	}
	// Bidi the server does not implement: 1 Unimplemented.
	{
		bs, err := c.StreamingBothWays(sub())
		if err != nil {
			t.Fatal(err)
		}
		_ = bs.CloseSend()
		if _, err := bs.Recv(); status.Code(err) != codes.Unimplemented {
			t.Fatalf("StreamingBothWays Recv = %v, want Unimplemented", err)
		}
	}

	const svc = "/grpc.testing.BenchmarkService/"
	key := srv.Addr
	want := map[string]int{
		fmt.Sprintf(`grpc_requests_total{code="OK",key=%q,method=%q}`, key, svc+"UnaryCall"):                    3,
		fmt.Sprintf(`grpc_requests_total{code="NotFound",key=%q,method=%q}`, key, svc+"UnaryCall"):              1,
		fmt.Sprintf(`grpc_requests_total{code="OK",key=%q,method=%q}`, key, svc+"StreamingFromServer"):          2,
		fmt.Sprintf(`grpc_requests_total{code="Canceled",key=%q,method=%q}`, key, svc+"StreamingFromServer"):    1,
		fmt.Sprintf(`grpc_requests_total{code="OK",key=%q,method=%q}`, key, svc+"StreamingFromClient"):          2,
		fmt.Sprintf(`grpc_requests_total{code="OK",key=%q,method=%q}`, key, svc+"StreamingCall"):                1,
		fmt.Sprintf(`grpc_requests_total{code="Unimplemented",key=%q,method=%q}`, key, svc+"StreamingBothWays"): 1,
		fmt.Sprintf(`grpc_request_duration_seconds_count{key=%q,method=%q}`, key, svc+"UnaryCall"):              4,
		fmt.Sprintf(`grpc_request_duration_seconds_count{key=%q,method=%q}`, key, svc+"StreamingFromServer"):    3,
		fmt.Sprintf(`grpc_request_duration_seconds_count{key=%q,method=%q}`, key, svc+"StreamingFromClient"):    2,
		fmt.Sprintf(`grpc_request_duration_seconds_count{key=%q,method=%q}`, key, svc+"StreamingCall"):          1,
		fmt.Sprintf(`grpc_request_duration_seconds_count{key=%q,method=%q}`, key, svc+"StreamingBothWays"):      1,
	}
	check := func(step string) {
		t.Helper()
		got := gatherText(t, reg)
		var lines []string
		for _, l := range strings.Split(got, "\n") {
			if strings.HasPrefix(l, "grpc_requests_total") || strings.HasPrefix(l, "grpc_request_duration_seconds") {
				lines = append(lines, l)
			}
		}
		have := map[string]string{}
		for _, l := range lines {
			i := strings.LastIndex(l, " ")
			have[l[:i]] = l[i+1:]
		}
		for k, v := range want {
			if have[k] != fmt.Sprint(v) {
				t.Errorf("%s: %s = %q, want %d", step, k, have[k], v)
			}
		}
		if len(have) != len(want) {
			t.Errorf("%s: %d RPC series, want %d:\n%s", step, len(have), len(want), strings.Join(lines, "\n"))
		}
	}
	grpctest.WaitFor(t, testTimeout, "every RPC observed", func() bool {
		return strings.Contains(gatherText(t, reg), `method="/grpc.testing.BenchmarkService/StreamingBothWays"} 1`)
	})
	check("after the RPCs")
	// The contexts of ended streams end now: nothing more is observed.
	for _, cc := range cancels {
		cc()
	}
	time.Sleep(100 * time.Millisecond)
	check("after their contexts ended")
}

// README: "Keys are shown as text: ... invalid UTF-8 is replaced. The `key`
// label of the RPC families is the connection's target, which is the pool
// key unless `grpcpool.Config.Target` maps keys to other targets."
// An RPC whose target is not valid UTF-8 is counted (with the text
// replaced), not lost to a panic of the label check.
func TestReviewMetricsObserverOddTargets(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	obs := newObserver(t, m)
	var perr error
	for _, target := range []string{"", "日本語:443", strings.Repeat("h", 300) + ":1", "bad\xff:443"} {
		func() {
			defer func() {
				if v := recover(); v != nil {
					perr = errors.Join(perr, fmt.Errorf("ObserveRPC(%.20q) panicked: %v", target, v))
				}
			}()
			obs.ObserveRPC(target, "/svc/M", codes.OK, time.Millisecond)
		}()
	}
	if perr != nil {
		t.Error(perr)
	}
	got := gatherText(t, reg)
	if !strings.Contains(got, `grpc_requests_total{key="bad\ufffd:443",method="/svc/M",code="OK"} 1`) &&
		!strings.Contains(got, "bad\ufffd:443") {
		t.Errorf("the RPC of target %q is not counted under %q:\n%s", "bad\xff:443", "bad\ufffd:443", grep(got, "grpc_requests_total"))
	}
	if !strings.Contains(got, `日本語:443`) {
		t.Errorf("non-ASCII target not counted:\n%s", grep(got, "grpc_requests_total"))
	}
}

// The same through a real connection: a pool key that is not valid UTF-8
// (a tenant id from a request), mapped by grpcpool.Config.Target to a
// passthrough target of its own, reaches a real backend; its successful
// RPC must be counted under the replaced text, and must not fail.
func TestReviewMetricsObserverInvalidUTF8TargetRealRPC(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	srv := grpctest.Start(t, grpctest.Options{})
	_, p := grpcPool(t, grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		Observer: newObserver(t, m),
		Target:   func(k string) (string, error) { return "passthrough:///" + k, nil },
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv.Addr)
		})},
	}, keyedpool.Config{MaxSharesPerObject: 10})
	rvNoErrG(t, "AddPool", metrics.AddPool(m, "p", p, nil))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	key := "tenant-\xff"
	c := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, key))
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		t.Errorf("UnaryCall on key %q = %v, want success", key, err)
	}
	got := gatherText(t, reg)
	if !strings.Contains(grep(got, "grpc_requests_total"), "tenant-\ufffd") {
		t.Errorf("the RPC on key %q is not counted under %q:\n%s", key, "tenant-\ufffd", grep(got, "grpc_requests_total"))
	}
}

func rvNoErrG(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s = %v", what, err)
	}
}
