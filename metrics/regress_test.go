package metrics_test

// Regression tests from an independent review of the package: each failed
// before the fix its comment names.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

const reviewTimeout = 10 * time.Second

// reviewGRPCPool makes a pool of real gRPC clients whose factory has cfg
// (NewStub and Insecure filled in) and closes it when the test ends.
func reviewGRPCPool(t *testing.T, cfg grpcfactory.Config[string, testpb.BenchmarkServiceClient], pcfg keyedpool.Config) (*grpcfactory.Factory[string, testpb.BenchmarkServiceClient], *keyedpool.Pool[string, *grpcfactory.Client[testpb.BenchmarkServiceClient]]) {
	t.Helper()
	cfg.NewStub = testpb.NewBenchmarkServiceClient
	cfg.Insecure = true
	f, err := grpcfactory.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyedpool.New(f, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), reviewTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return f, p
}

// Was a bug: grpc_requests_total and grpc_request_duration_seconds count retry
// ATTEMPTS, not RPCs. The Observer is a gRPC stats.Handler, and gRPC calls
// TagRPC/Begin/End once per attempt (clientStream.newAttemptLocked /
// csAttempt.finish), so with grpcfactory.Config.Retry one RPC that succeeded
// on its third attempt is exported as two Unavailable RPCs and one OK RPC
// (and three duration observations, each of one attempt). The Observer doc
// says "ObserveRPC is called once per RPC when it ends", the README
// "grpc_requests_total: RPCs on pooled connections", "RPC duration, start to
// end". The caller saw one successful RPC.
// Fix: observe with unary and stream client interceptors
// (grpc.WithChainUnaryInterceptor / WithChainStreamInterceptor), which wrap
// the whole call, retries included; or keep the stats handler only for the
// own-RPC marking.
func TestRegressRetriedRPCIsCountedPerAttempt(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	srv := grpctest.Start(t, grpctest.Options{})
	_, p := reviewGRPCPool(t, grpcfactory.Config[string, testpb.BenchmarkServiceClient]{
		Retry:    grpcfactory.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
		Observer: m.Observer(),
	}, keyedpool.Config{})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), reviewTimeout)
	defer cancel()
	h, err := p.Borrow(ctx, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	srv.FailNext(2)
	_, err = h.Value().Stub().UnaryCall(ctx, &testpb.SimpleRequest{})
	grpcfactory.Release(p, h, err)
	if err != nil {
		t.Fatalf("UnaryCall() with 3 attempts and 2 failures = %v, want success", err)
	}
	if got := srv.UnaryCalls(); got != 3 {
		t.Fatalf("server saw %d attempts, want 3 (the retry policy did not apply)", got)
	}
	// The OK attempt ends last; once it is observed all attempts are.
	grpctest.WaitFor(t, reviewTimeout, "the RPC observed", func() bool {
		return strings.Contains(gatherText(t, reg), `code="OK"`)
	})
	want := `
# HELP grpc_requests_total RPCs sent on pooled connections, by method and status code (and key, with PerKey).
# TYPE grpc_requests_total counter
grpc_requests_total{code="OK",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_requests_total"); err != nil {
		t.Errorf("one RPC that succeeded after 2 retried attempts:\n%v", err)
	}
	if got := gatherText(t, reg); !strings.Contains(got, `grpc_request_duration_seconds_count{method="/grpc.testing.BenchmarkService/UnaryCall"} 1`) {
		t.Errorf("grpc_request_duration_seconds count is not 1 for one RPC:\n%s", grep(got, "grpc_request_duration_seconds_count"))
	}
}

// Was a bug: an RPC that fails before gRPC creates its first attempt is never
// observed. Here the RPC's deadline has already passed when it is made on a
// pooled connection (as happens when a Borrow wait used the deadline up):
// the caller gets DeadlineExceeded, but gRPC returns before
// newAttemptLocked calls the stats handler's TagRPC, so
// grpc_requests_total{code="DeadlineExceeded"} never appears. The same
// holds for bad outgoing metadata (Internal) and a closing ClientConn.
// Operators lose exactly the failures they look for. The Observer doc
// promises "ObserveRPC is called once per RPC when it ends".
// Fix: a client interceptor (see the test above) sees every call, including
// those gRPC fails before the first attempt.
func TestRegressRPCFailingBeforeFirstAttemptIsNotObserved(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	srv := grpctest.Start(t, grpctest.Options{})
	_, p := reviewGRPCPool(t, grpcfactory.Config[string, testpb.BenchmarkServiceClient]{
		ConnectTimeout: reviewTimeout,
		Observer:       m.Observer(),
	}, keyedpool.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), reviewTimeout)
	defer cancel()
	h, err := p.Borrow(ctx, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancelExpired()
	_, err = h.Value().Stub().UnaryCall(expired, &testpb.SimpleRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("UnaryCall(expired ctx) = %v, want DeadlineExceeded", err)
	}
	// A second RPC, observed after the first has long ended, as a barrier.
	_, err = h.Value().Stub().UnaryCall(ctx, &testpb.SimpleRequest{})
	grpcfactory.Release(p, h, err)
	if err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, reviewTimeout, "the second RPC observed", func() bool {
		return strings.Contains(gatherText(t, reg), `code="OK"`)
	})
	want := `
# HELP grpc_requests_total RPCs sent on pooled connections, by method and status code (and key, with PerKey).
# TYPE grpc_requests_total counter
grpc_requests_total{code="DeadlineExceeded",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
grpc_requests_total{code="OK",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_requests_total"); err != nil {
		t.Errorf("two RPCs, one failed with DeadlineExceeded:\n%v", err)
	}
}

// capturingRegisterer registers on a real registry and keeps the
// collectors, so that a test can call one's Collect in its own goroutine.
type capturingRegisterer struct {
	prometheus.Registerer
	cs []prometheus.Collector
}

func (c *capturingRegisterer) Register(col prometheus.Collector) error {
	c.cs = append(c.cs, col)
	return c.Registerer.Register(col)
}

// Was a bug: with PerKey, a pool key that is not valid UTF-8 makes the collector
// PANIC: collectPool builds its series with prometheus.MustNewConstMetric,
// which panics on a label value that is not valid UTF-8 ("label value ...
// is not valid UTF-8"). The registry runs Collect in its own goroutine, so a
// scrape of /metrics crashes the whole process. Keys are the user's data
// (binary shard ids, tenant names from requests); one such key must not
// kill the service. (Calling Collect here, in the test's goroutine, lets
// the test recover instead of crashing the test binary.)
// Fix: use prometheus.NewConstMetric and, on error, send
// prometheus.NewInvalidMetric (the scrape reports an error) or, better,
// make keyString produce valid UTF-8 (strings.ToValidUTF8, or %q for keys
// that are not).
func TestRegressInvalidUTF8KeyPanicsScrape(t *testing.T) {
	reg := &capturingRegisterer{Registerer: prometheus.NewPedanticRegistry()}
	m, err := metrics.New(reg, metrics.Options{PerKey: true})
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, &testfactory.Factory{}, keyedpool.Config{})
	borrow(t, p, "shard-\xff\xfe")
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	ch := make(chan prometheus.Metric)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch {
		}
	}()
	var panicked any
	func() {
		defer func() { panicked = recover() }()
		reg.cs[0].Collect(ch)
	}()
	close(ch)
	<-done
	if panicked != nil {
		t.Errorf("Collect() with a key that is not UTF-8 panicked: %v; a scrape would crash the process", panicked)
	}
}

// Was a bug: a pool key equal to metrics.OtherKey ("__other__") collides with the
// aggregate series. Once "__other__" has a series of its own and any other
// key is aggregated, the collector emits two series with the same labels
// ({pool="p",key="__other__"}) in every grpc_pool_key_* family, the
// registry refuses the whole scrape ("was collected before with the same
// name and label values") and /metrics answers 500: one user key takes
// every metric of the process down.
// Fix: reserve the value: escape user keys that equal OtherKey (or start
// with "__", which Prometheus reserves anyway), or put the aggregate in a
// separate label/family.
func TestRegressKeyNamedOtherBreaksScrape(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{PerKey: true, MaxKeySeries: 1})
	p := newPool(t, &testfactory.Factory{}, keyedpool.Config{})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	borrow(t, p, metrics.OtherKey)
	if _, err := reg.Gather(); err != nil { // "__other__" takes the one series
		t.Fatalf("Gather() = %v", err)
	}
	borrow(t, p, "a") // aggregated under "__other__"
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather() with a user key named %q and one aggregated key = %v, want nil", metrics.OtherKey, err)
	}
	if code, body := get(t, serve(t, m, reg)+"/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics = %d, want 200; body:\n%.300s", code, body)
	}
}

// pairKey is a realistic comparable key that is not a string.
type pairKey struct{ Region, Host string }

// Was a bug: keyString (fmt.Sprint) is not one-to-one for keys that are not
// strings, and AddPool's keyStats closure builds a map by that text, so two
// different keys that print the same (here {"eu west", "a"} and
// {"eu", "west a"}, both "{eu west a}") become ONE entry: the second
// overwrites the first. /stats then says the pool has 2 keys and 2 active
// connections but lists one key with 1; the per-key metric families
// silently lose one key's connections (sum of
// grpc_pool_key_active_connections != grpc_pool_active_connections), and
// ?key= finds only one of them.
// Fix: format non-string keys injectively (%#v, or %q per field), or detect
// a collision in the closure and disambiguate (append a suffix) instead of
// overwriting.
func TestRegressNonStringKeysCollide(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{PerKey: true})
	f := factory.Funcs[pairKey, int]{MakeFunc: func(context.Context, pairKey) (int, error) { return 1, nil }}
	p, err := keyedpool.New(f, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Close(ctx)
	})
	for _, k := range []pairKey{{"eu west", "a"}, {"eu", "west a"}} {
		if _, err := p.Borrow(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	var rep metrics.StatsReport
	getJSON(t, serve(t, m, reg)+"/stats", http.StatusOK, &rep)
	pr := rep.Pools[0]
	active := 0
	for _, k := range pr.PerKey {
		active += k.Active
	}
	if pr.Keys != 2 || len(pr.PerKey) != pr.Keys || active != pr.Active {
		t.Errorf("/stats: pool has %d keys and %d active, per_key lists %d keys with %d active (%+v); want every key listed",
			pr.Keys, pr.Active, len(pr.PerKey), active, pr.PerKey)
	}
	if got := testutil.ToFloat64(sumOf(t, reg, "grpc_pool_key_active_connections")); got != 2 {
		t.Errorf("sum of grpc_pool_key_active_connections = %v, want 2 (one per key)", got)
	}
}

// Was a bug: New registers three collectors one after the other and, when a later
// one fails, returns the error without unregistering the earlier ones: a
// failed New leaves an orphan collector (of a Metrics nobody holds) on the
// caller's registry, for good, since the caller has no handle to remove it.
// Here grpc_requests_total is taken for a while by another collector of the
// same shape (say a component being replaced, as in a config reload): New
// fails, as it should, but once that collector is unregistered a retry of
// New on the same registry still fails, with "duplicate metrics collector
// registration attempted", because of what the first New left behind.
// Fix: on error, Unregister the collectors New registered before returning
// (or register a single collector that owns the three).
func TestRegressFailedNewLeavesCollectorRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	theirs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_requests_total",
		Help: "RPCs sent on pooled connections, by method and status code (and key, with PerKey).",
	}, []string{"method", "code"})
	if err := reg.Register(theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, metrics.Options{}); err == nil {
		t.Fatal("New() while grpc_requests_total is registered = nil error, want a registration error")
	}
	if !reg.Unregister(theirs) {
		t.Fatal("Unregister() = false")
	}
	if _, err := metrics.New(reg, metrics.Options{}); err != nil {
		t.Errorf("New() once the conflict is gone = %v, want nil: the failed New left part of itself registered", err)
	}
}

// Was a bug: Handler's doc says "Errors are JSON objects {"error": "..."} naming
// what was wrong", but the ServeMux's own answers are plain text: a POST
// (or any method but GET/HEAD) gets 405 "Method Not Allowed\n" as
// text/plain, an unknown path 404 "404 page not found" as text/plain. A
// client that decodes every error body as JSON breaks on them.
// Fix: register a catch-all "/" handler that writes writeError(404,
// "unknown path %q ...") and method-less patterns that answer
// writeError(405, ...) with an Allow header for non-GET methods (or wrap
// the mux); or narrow the doc to the errors the endpoints themselves
// return.
func TestRegressHandlerErrorsAreNotJSON(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	base := serve(t, m, reg)
	c := &http.Client{Timeout: reviewTimeout}
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/stats", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/health", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nope", http.StatusNotFound},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		if resp.StatusCode != tc.code || ct != "application/json" || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s %s = %d %q %q, want %d application/json {\"error\": ...}", tc.method, tc.path, resp.StatusCode, ct, body, tc.code)
		}
	}
}

// Was a bug: /health?service=NAME is documented to judge that service ("judges
// that service only", README "?service=NAME judges one service"), which is
// what a per-service readiness probe or load-balancer check relies on. It
// still judges every pool: once any pool is closed (a pool for another
// backend being retired, say), /health?service=users answers 503 although
// users has all its endpoints usable.
// Fix: with ?service=, judge only that service (and the pools are informative
// only), or document that pools are always judged.
func TestRegressHealthServiceFilterStillJudgesPools(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	p := newPool(t, &testfactory.Factory{}, keyedpool.Config{})
	if err := metrics.AddPool(m, "retired", p, nil); err != nil {
		t.Fatal(err)
	}
	m.AddServices(services{{Service: "users", Endpoints: 2, Usable: 2}})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, serve(t, m, reg)+"/health?service=users")
	if code != http.StatusOK {
		t.Errorf("GET /health?service=users with users fully usable = %d, want 200; body:\n%s", code, body)
	}
}

// blockingGatherer blocks every Gather until release is closed.
type blockingGatherer struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (g *blockingGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.release
	return nil, nil
}

// Was a bug: Serve gives requests in flight 5 seconds after ctx ends ("giving
// requests in flight up to 5 seconds"), but when the 5 seconds pass it
// returns without closing their connections: http.Server.Shutdown does not
// close active connections when its context ends. Serve (and
// ListenAndServe) has returned, the caller believes the server is gone,
// yet the connection stays open and the handler keeps running (here a
// scrape stuck in a slow collector), for ever if it never returns.
// Fix: after Shutdown returns an error, call srv.Close() to close the
// remaining connections before returning.
// (This test takes the 5 seconds of Serve's own grace period.)
func TestRegressServeLeavesRequestsRunningAfterGracePeriod(t *testing.T) {
	m, _ := newMetrics(t, metrics.Options{})
	g := &blockingGatherer{entered: make(chan struct{}), release: make(chan struct{})}
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() { close(g.release) })
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- metrics.Serve(ctx, lis, m.Handler(g)) }()

	got := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 3 * reviewTimeout}
		resp, err := c.Get("http://" + lis.Addr().String() + "/metrics")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case <-g.entered:
	case <-time.After(reviewTimeout):
		t.Fatal("the scrape did not reach the gatherer")
	}
	cancel()
	select {
	case err := <-served:
		if err == nil {
			t.Errorf("Serve() with a request stuck past the grace period = nil, want the shutdown error")
		}
	case <-time.After(reviewTimeout):
		t.Fatal("Serve() did not return after its 5 s grace period")
	}
	// Serve has returned: the stuck request's connection must be closed.
	ended := false
	select {
	case <-got:
		ended = true
	case <-time.After(time.Second):
		t.Errorf("1 s after Serve() returned, the request in flight still has its connection open: the server was not closed")
	}
	release() // let the handler, the connection and the client end
	if !ended {
		<-got
	}
}

// gatherText returns reg's exposition as text.
func gatherText(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			lv := "{" + strings.Join(labels, ",") + "}"
			switch {
			case s.GetHistogram() != nil:
				fmt.Fprintf(&b, "%s_count%s %d\n", mf.GetName(), lv, s.GetHistogram().GetSampleCount())
			case s.GetCounter() != nil:
				fmt.Fprintf(&b, "%s%s %v\n", mf.GetName(), lv, s.GetCounter().GetValue())
			case s.GetGauge() != nil:
				fmt.Fprintf(&b, "%s%s %v\n", mf.GetName(), lv, s.GetGauge().GetValue())
			}
		}
	}
	return b.String()
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// sumOf returns a gauge whose value is the sum of the gauge family name.
func sumOf(t *testing.T, g prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, s := range mf.GetMetric() {
				sum += s.GetGauge().GetValue()
			}
		}
	}
	c := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sum", Help: "sum"})
	c.Set(sum)
	return c
}
