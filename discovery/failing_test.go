package discovery_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/procbackend"
	"github.com/kpool-go/kpool/keyedpool"
)

// A borrow whose endpoint cannot connect moves on to another endpoint, so
// no RPC fails while one endpoint works; once the dead endpoint's make
// backoff is open, it is skipped without being tried.
func TestRouterSkipsEndpointInMakeBackoff(t *testing.T) {
	live := grpctest.Start(t, grpctest.Options{})
	dead := grpctest.DeadAddr(t)
	res := static.New(map[string][]discovery.Endpoint{"svc": {{Address: dead}, ep(live)}})
	pcfg := clienttest.SharedLeases()
	pcfg.MakeFailureThreshold = 1
	pcfg.MakeBackoffBase = testTimeout // stays open for the whole test
	pcfg.MakeBackoffMax = testTimeout
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg})
	conn := r.Conn("svc")
	for i := range 20 {
		if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
			t.Fatalf("RPC %d: %v, want success on the live endpoint", i, err)
		}
	}
	if got := live.UnaryCalls(); got != 20 {
		t.Errorf("live endpoint UnaryCalls() = %d, want 20", got)
	}
	ks := r.Pool().KeyStats(dead)
	if ks.MakeErrors != 1 || ks.BackoffUntil.IsZero() {
		t.Errorf("dead endpoint MakeErrors = %d, BackoffUntil = %v; want 1 failed make, then backoff", ks.MakeErrors, ks.BackoffUntil)
	}
	if ks.BackoffRejected != 0 {
		t.Errorf("dead endpoint BackoffRejected = %d, want 0: skipped, not tried", ks.BackoffRejected)
	}
	if got := clienttest.ServiceStats(r, "svc"); got.Endpoints != 2 || got.Usable != 1 {
		t.Errorf("Services() = %+v, want 2 endpoints, 1 usable", got)
	}

	// With no healthy endpoint left, the failing ones are still tried, and
	// the error names the service and the cause.
	res.Set("svc", []discovery.Endpoint{{Address: dead}})
	grpctest.WaitFor(t, testTimeout, "router never saw the new list", func() bool { return clienttest.ServiceStats(r, "svc").Endpoints == 1 })
	_, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
	if !errors.Is(err, keyedpool.ErrBackoff) || !strings.Contains(err.Error(), `"svc"`) {
		t.Errorf("Borrow with only a dead endpoint: %v, want an error naming \"svc\" wrapping ErrBackoff", err)
	}
}

// Endpoints whose connections are all in TRANSIENT_FAILURE are skipped
// while others work.
func TestRouterSkipsEndpointInTransientFailure(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	// Keep connections whatever their RPCs' errors: the pool must not
	// replace a's connection before the router sees its state.
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout, Classifier: func(error, connectivity.State) bool { return false }})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: clienttest.SharedLeases()})
	h, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
	if err != nil {
		t.Fatal(err)
	}
	// Round robin starts at a random endpoint: the one borrowed goes down.
	down, up := a, b
	if h.Key() == b.Addr {
		down, up = b, a
	}
	cc := h.Value().ClientConn()
	down.Stop()
	// Make the connection try again and fail.
	for s := cc.GetState(); s != connectivity.TransientFailure; s = cc.GetState() {
		cc.Connect()
		if !cc.WaitForStateChange(grpctest.Context(t, testTimeout), s) {
			t.Fatalf("the stopped backend's connection stuck in %v", s)
		}
	}
	if err := r.Release(h, nil); err != nil {
		t.Fatal(err)
	}
	if got := clienttest.ServiceStats(r, "svc"); got.Usable != 1 {
		t.Errorf("Services() = %+v, want 1 usable endpoint", got)
	}
	for i := range 10 {
		if err := unary(grpctest.Context(t, testTimeout), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v, want success on the backend still up", i, err)
		}
	}
	if got := up.UnaryCalls(); got != 10 {
		t.Errorf("the backend still up UnaryCalls() = %d, want all 10", got)
	}
}

// A backend that answers its health check with NOT_SERVING makes way for
// the next endpoint.
func TestRouterSkipsNotServing(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	a.Health.SetServingStatus("", 2) // NOT_SERVING
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout, HealthCheck: &grpcpool.HealthCheck{}})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: clienttest.SharedLeases()})
	for i := range 6 {
		if err := unary(grpctest.Context(t, testTimeout), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if got := b.UnaryCalls(); got != 6 {
		t.Errorf("serving backend UnaryCalls() = %d, want 6; not serving one got %d", got, a.UnaryCalls())
	}
}

// A backend that crashes (SIGKILL: its sockets close without a word) while
// 32 callers send RPCs through a Conn costs only the RPCs in flight on its
// connections when they went down, as gRPC reports it (they leave READY).
// An RPC that starts later goes to a healthy backend, whether the dead
// backend's connection is lent, idle, reconnecting, in TRANSIENT_FAILURE or
// in its make backoff. The backend comes back on the same port and crashes
// again, a few times. No RPC outlives its deadline, and after Close no
// goroutine is left and the backends hold no connection.
func TestRouterSendsNoRPCOnConnectionKnownDown(t *testing.T) {
	const (
		callers    = 32
		rpcTimeout = 2 * time.Second
		// overrun is how far past its deadline an RPC may return: time for
		// the scheduler on 2 busy cores under -race. One that waited on a
		// connect or a share past its deadline would overrun by far more.
		overrun = 250 * time.Millisecond
		kills   = 4
		phase   = 300 * time.Millisecond // traffic after each step
	)
	before := goleak.IgnoreCurrent()

	// A little work per RPC, so that a kill cuts RPCs in flight.
	backends := make([]*procbackend.Backend, 3)
	addrs := make([]discovery.Endpoint, len(backends))
	for i := range backends {
		backends[i] = procbackend.Start(t, procbackend.Options{Delay: time.Millisecond})
		addrs[i] = endpoint(t, backends[i].Addr)
	}
	victim := backends[0]
	w := newWatchingFactory(t, config{ConnectTimeout: time.Second})
	pcfg := clienttest.SharedLeases()
	// Small, so that each backend has several connections, lent and idle.
	pcfg.MaxSharesPerObject = 4
	pcfg.MaxTotalPerKey = 8
	pcfg.MakeFailureThreshold = 1
	pcfg.MakeBackoffBase = 20 * time.Millisecond
	pcfg.MakeBackoffMax = 100 * time.Millisecond
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{
		Resolver: static.New(map[string][]discovery.Endpoint{"svc": addrs}),
		Factory:  w,
		Pool:     pcfg,
	})
	conn := r.Conn("svc")

	var (
		stop         = make(chan struct{})
		wg           sync.WaitGroup
		calls        atomic.Int64
		mu           sync.Mutex // protects failed and late
		failed, late []*rpcRecord
	)
	for range callers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rec := &rpcRecord{start: time.Now()}
				c, cancel := context.WithTimeout(context.WithValue(context.Background(), rpcRecordKey{}, rec), rpcTimeout)
				rec.err = unary(c, conn)
				rec.end = time.Now()
				cancel()
				calls.Add(1)
				if tooLong := rec.end.Sub(rec.start) > rpcTimeout+overrun; rec.err != nil || tooLong {
					mu.Lock()
					if rec.err != nil {
						failed = append(failed, rec)
					}
					if tooLong {
						late = append(late, rec)
					}
					mu.Unlock()
				}
			}
		})
	}
	stopTraffic := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopTraffic)

	grpctest.WaitFor(t, testTimeout, "not every backend got a READY connection", func() bool {
		for _, b := range backends {
			if len(w.ready(b.Addr)) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(phase)
	var killedAt []time.Time
	for k := range kills {
		cut := w.ready(victim.Addr)
		if len(cut) == 0 {
			t.Fatalf("kill %d: no READY connection to %s to cut", k+1, victim.Addr)
		}
		killedAt = append(killedAt, time.Now())
		victim.Kill()
		grpctest.WaitFor(t, testTimeout, "the killed backend's connections stayed READY", func() bool {
			for _, c := range cut {
				if c.leftReady().IsZero() {
					return false
				}
			}
			return true
		})
		time.Sleep(phase)
		victim.Restart()
		grpctest.WaitFor(t, testTimeout, "no READY connection to the restarted backend", func() bool {
			return len(w.ready(victim.Addr)) > 0
		})
		time.Sleep(phase)
	}
	stopTraffic()

	// An RPC may fail only if it was sent on a connection before gRPC
	// reported that connection down, after a kill.
	var inFlight, afterKill, afterDown, afterFailed int
	var bad []*rpcRecord
	for _, f := range failed {
		c := w.of(f.cc)
		down := c.leftReady()
		switch {
		case !slices.ContainsFunc(killedAt, f.end.After) || c == nil:
			bad = append(bad, f) // failed with every backend up, or before it was sent
		case !down.IsZero() && f.start.After(down):
			bad = append(bad, f)
			afterDown++
			if failed := c.failed(); !failed.IsZero() && f.start.After(failed) {
				afterFailed++
			}
		case slices.ContainsFunc(killedAt, func(at time.Time) bool { return f.start.Before(at) && f.end.After(at) }):
			inFlight++
		default:
			afterKill++
		}
	}
	t.Logf("%d RPCs, %d kills; %d failed: %d in flight at a kill, %d sent after one before gRPC reported their connection down; %d sent on a connection after gRPC reported it down (left READY), %d of them after TRANSIENT_FAILURE or SHUTDOWN",
		calls.Load(), kills, len(failed), inFlight, afterKill, afterDown, afterFailed)
	for i, f := range bad {
		if i == 5 {
			t.Errorf("... and %d more", len(bad)-i)
			break
		}
		t.Errorf("RPC %v–%v (its connection left READY at %v): %v", clock(f.start), clock(f.end), clock(w.of(f.cc).leftReady()), f.err)
	}
	if len(late) > 0 {
		t.Errorf("%d RPCs outlived their deadline of %v by more than %v; the first took %v", len(late), rpcTimeout, overrun, late[0].end.Sub(late[0].start))
	}

	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := r.Close(c); err != nil {
		t.Errorf("Router.Close() = %v, want nil", err)
	}
	grpctest.WaitFor(t, testTimeout, "a backend still holds a connection after Close", func() bool {
		for _, b := range backends {
			if b.Conns() != 0 {
				return false
			}
		}
		return true
	})
	w.wait(t)
	for _, b := range backends {
		b.Kill()
	}
	goleak.VerifyNone(t, before)
}

// rpcRecord is one RPC of a test: when it started and ended, how, and the
// connection gRPC sent it on (nil: none, it failed before).
type rpcRecord struct {
	start, end time.Time
	err        error
	cc         *grpc.ClientConn
}

// rpcRecordKey is the context key of an RPC's *rpcRecord.
type rpcRecordKey struct{}

// recordConn is a unary interceptor that notes in the RPC's record which
// connection the RPC is sent on.
func recordConn(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if rec, ok := ctx.Value(rpcRecordKey{}).(*rpcRecord); ok {
		rec.cc = cc
	}
	return invoke(ctx, method, req, reply, cc, opts...)
}

// clock formats t for a failure message; the zero time as "never".
func clock(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format("15:04:05.000000")
}

// endpoint is the Endpoint of addr.
func endpoint(t *testing.T, addr string) discovery.Endpoint {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return discovery.Endpoint{Address: host, Port: p}
}

// watchingFactory is newFactory's factory, whose clients note in their
// RPC's rpcRecord the connection they send it on, and which keeps for
// every connection it makes the states gRPC reports for it and when: what
// the client knew, and when, of the connection's health.
type watchingFactory struct {
	factory.KeyedFactory[string, *client]
	wg sync.WaitGroup // the watchers, one per connection; each ends at its SHUTDOWN

	mu    sync.Mutex // protects conns
	conns map[*grpc.ClientConn]*watched
}

func newWatchingFactory(t *testing.T, cfg config) *watchingFactory {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = testTimeout
	}
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(recordConn))
	return &watchingFactory{KeyedFactory: clienttest.NewFactory(t, cfg), conns: make(map[*grpc.ClientConn]*watched)}
}

// watched is one connection and the states reported for it.
type watched struct {
	addr string
	cc   *grpc.ClientConn

	mu      sync.Mutex // protects changes
	changes []stateChange
}

type stateChange struct {
	at time.Time
	s  connectivity.State
}

func (f *watchingFactory) Make(ctx context.Context, key string) (*client, error) {
	c, err := f.KeyedFactory.Make(ctx, key)
	if err != nil {
		return nil, err
	}
	w := &watched{addr: key, cc: c.ClientConn()}
	f.mu.Lock()
	f.conns[w.cc] = w
	f.mu.Unlock()
	f.wg.Go(w.watch)
	return c, nil
}

// watch records the connection's states until SHUTDOWN, each with the
// time it was read: no earlier than gRPC reported it.
func (w *watched) watch() {
	for s := w.cc.GetState(); ; s = w.cc.GetState() {
		w.mu.Lock()
		w.changes = append(w.changes, stateChange{time.Now(), s})
		w.mu.Unlock()
		if s == connectivity.Shutdown {
			return
		}
		w.cc.WaitForStateChange(context.Background(), s)
	}
}

// of returns the watched connection cc; nil for nil.
func (f *watchingFactory) of(cc *grpc.ClientConn) *watched {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns[cc]
}

// ready returns the connections to addr that are READY now.
func (f *watchingFactory) ready(addr string) []*watched {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*watched
	for _, w := range f.conns {
		if w.addr == addr && w.cc.GetState() == connectivity.Ready {
			out = append(out, w)
		}
	}
	return out
}

// leftReady returns when the connection was first reported in another
// state after READY: when gRPC knew it lost its transport. Zero: not (yet).
func (w *watched) leftReady() time.Time {
	if w == nil {
		return time.Time{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	wasReady := false
	for _, c := range w.changes {
		if c.s == connectivity.Ready {
			wasReady = true
		} else if wasReady {
			return c.at
		}
	}
	return time.Time{}
}

// failed returns when the connection was first reported in
// TRANSIENT_FAILURE or SHUTDOWN; zero if it has not been.
func (w *watched) failed() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		if c.s == connectivity.TransientFailure || c.s == connectivity.Shutdown {
			return c.at
		}
	}
	return time.Time{}
}

// wait waits until every connection the factory made has been closed.
func (f *watchingFactory) wait(t *testing.T) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("a connection the pool made was never closed")
	}
}
