package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// RouterConfig configures a Router. Resolver and Factory are required.
type RouterConfig[T any] struct {
	// Resolver finds the endpoints of the services the Router serves.
	// Required.
	Resolver Resolver

	// Factory makes the pooled clients, keyed by endpoint address
	// ("host:port"): usually a *grpcfactory.Factory[string, T] whose Target
	// is left nil, so that the address is the target. Required. Set its
	// ConnectTimeout, so that a dead endpoint fails the make (and the
	// borrow moves on to another endpoint) instead of lending a connection
	// that cannot connect.
	Factory factory.KeyedFactory[string, *grpcfactory.Client[T]]

	// Pool configures the pool of all endpoints, each endpoint a key:
	// MaxSharesPerObject near the backends' MAX_CONCURRENT_STREAMS for
	// shared leases (recommended for Conn), MaxTotalPerKey per endpoint,
	// MinIdlePerKey for the connections an arriving endpoint is warmed to,
	// MakeFailureThreshold so that dead endpoints are skipped. The zero
	// value is keyedpool's default: exclusive leases, 8 per endpoint.
	Pool keyedpool.Config

	// NewBalancer makes the Balancer of each service. Nil: RoundRobin.
	NewBalancer func() Balancer
}

// Router serves any number of services from one pool of gRPC clients keyed
// by endpoint address, following each service's endpoints as its Resolver
// reports them. A service is watched from its first use (Borrow, Conn,
// Endpoints) until Close. Make one with NewRouter; all methods are safe for
// concurrent use.
type Router[T any] struct {
	res    Resolver
	newBal func() Balancer
	pool   *keyedpool.Pool[string, *grpcfactory.Client[T]]

	// ctx ends at Close: it stops the watches and warm-ups.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // watches and warm-ups

	// addrs holds the addresses some service lists now. Copied on write
	// under mu, read without it on every borrow and release.
	addrs atomic.Pointer[map[string]*addrState[T]]

	mu       sync.Mutex // protects the fields below. Held only to read and swap state: no pool call, no resolver call.
	closed   bool
	services map[string]*service
}

// addrState is what the Router knows of one address while services list it.
type addrState[T any] struct {
	refs int // services whose latest snapshot lists the address; under Router.mu

	makeFailed atomic.Bool // the last make of a connection to it failed

	mu      sync.Mutex                               // serializes writers of clients
	clients atomic.Pointer[[]*grpcfactory.Client[T]] // its live connections, copied on write
}

// service is one service the Router serves.
type service struct {
	name  string
	bal   Balancer
	ready chan struct{} // closed at the first snapshot or error

	snap    atomic.Pointer[snapshot] // latest snapshot; nil before the first
	updates atomic.Int64
	errors  atomic.Int64
	lastErr atomic.Pointer[string] // nil or "": the latest lookup succeeded

	readied bool // ready is closed; owned by the watch goroutine
}

// snapshot is a service's endpoints, without duplicate addresses, and their
// addresses.
type snapshot struct {
	eps   []Endpoint
	addrs []string
}

// NewRouter makes a Router and its pool. It refuses an invalid cfg with an
// error wrapping ErrInvalidConfig that names the field, or keyedpool's
// error for an invalid Pool config.
func NewRouter[T any](cfg RouterConfig[T]) (*Router[T], error) {
	var bad []string
	if cfg.Resolver == nil {
		bad = append(bad, "Resolver is nil")
	}
	if cfg.Factory == nil {
		bad = append(bad, "Factory is nil")
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(bad, ", "))
	}
	r := &Router[T]{res: cfg.Resolver, newBal: cfg.NewBalancer, services: make(map[string]*service)}
	if r.newBal == nil {
		r.newBal = func() Balancer { return new(RoundRobin) }
	}
	p, err := keyedpool.New(&routerFactory[T]{r: r, f: cfg.Factory}, cfg.Pool)
	if err != nil {
		return nil, err
	}
	r.pool = p
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.addrs.Store(&map[string]*addrState[T]{})
	return r, nil
}

// Pool returns the Router's pool, for statistics (KeyStats by endpoint
// address) and run-time limits (SetConfig). Borrow from it only keys that a
// service lists.
func (r *Router[T]) Pool() *keyedpool.Pool[string, *grpcfactory.Client[T]] { return r.pool }

// addr returns the state of an address some service lists, or nil.
func (r *Router[T]) addr(key string) *addrState[T] { return (*r.addrs.Load())[key] }

// service returns the service named name, watching it from now on if it
// is new. It fails with ErrClosed after Close.
func (r *Router[T]) service(name string) (*service, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if svc := r.services[name]; svc != nil {
		return svc, nil
	}
	svc := &service{name: name, bal: r.newBal(), ready: make(chan struct{})}
	r.services[name] = svc
	// Added under mu, where Close sets closed before it waits: no Add can
	// race with the Wait.
	r.wg.Go(func() { r.watch(svc) })
	return svc, nil
}

// watch runs the service's watch until Close.
func (r *Router[T]) watch(svc *service) {
	err := r.res.Watch(r.ctx, svc.name, &watcher[T]{r: r, svc: svc})
	if r.ctx.Err() == nil {
		// The resolver gave up: the service keeps its last endpoints and
		// says why it will learn no more.
		if err == nil {
			err = errors.New("resolver ended the watch")
		}
		(&watcher[T]{r: r, svc: svc}).Error(fmt.Errorf("discovery: watch of service %q ended: %w", svc.name, err))
	}
}

// watcher takes a service's updates from its resolver. Its methods are
// called from one goroutine at a time.
type watcher[T any] struct {
	r   *Router[T]
	svc *service
}

func (w *watcher[T]) markReady() {
	if !w.svc.readied {
		w.svc.readied = true
		close(w.svc.ready)
	}
}

// Error counts a failed lookup; the service keeps its endpoints.
func (w *watcher[T]) Error(err error) {
	msg := err.Error()
	if msg == "" {
		msg = fmt.Sprintf("%T", err)
	}
	w.svc.errors.Add(1)
	w.svc.lastErr.Store(&msg)
	w.markReady()
}

// Update makes eps the service's endpoints: arriving addresses are routed
// to at once and warmed, leaving ones get no new borrows and their idle
// connections are closed.
func (w *watcher[T]) Update(eps []Endpoint) {
	r, svc := w.r, w.svc
	snap := newSnapshot(eps)
	var added, removed []string
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	var old []string
	if o := svc.snap.Load(); o != nil {
		old = o.addrs
	}
	cur := *r.addrs.Load()
	next, copied := cur, false
	write := func() { // copy on the first write: readers hold cur
		if !copied {
			next, copied = maps.Clone(cur), true
		}
	}
	for _, a := range snap.addrs {
		if slices.Contains(old, a) {
			continue
		}
		if st := next[a]; st != nil {
			st.refs++
			continue
		}
		write()
		next[a] = &addrState[T]{refs: 1}
		added = append(added, a)
	}
	for _, a := range old {
		if slices.Contains(snap.addrs, a) {
			continue
		}
		st := next[a]
		if st.refs--; st.refs == 0 {
			write()
			delete(next, a)
			removed = append(removed, a)
		}
	}
	// The service stops picking leaving addresses and the pool stops
	// making connections to them together, under mu.
	svc.snap.Store(snap)
	if copied {
		r.addrs.Store(&next)
	}
	r.mu.Unlock()

	svc.updates.Add(1)
	svc.lastErr.Store(nil)
	w.markReady()
	for _, a := range removed {
		r.retire(a)
	}
	for _, a := range added {
		r.warm(a)
	}
}

// newSnapshot drops endpoints whose address came earlier in eps.
func newSnapshot(eps []Endpoint) *snapshot {
	s := &snapshot{eps: make([]Endpoint, 0, len(eps)), addrs: make([]string, 0, len(eps))}
	seen := make(map[string]bool, len(eps))
	for _, e := range eps {
		a := e.Addr()
		if seen[a] {
			continue
		}
		seen[a] = true
		s.eps = append(s.eps, e)
		s.addrs = append(s.addrs, a)
	}
	return s
}

// retire closes the idle connections of an address no service lists any
// more, and forgets its make failures, so that its key leaves the pool once
// its lent connections, destroyed as they come back, are gone.
func (r *Router[T]) retire(addr string) {
	_ = r.pool.Clear(context.Background(), addr)
	r.pool.ForgetFailures(addr)
}

// warm makes idle connections to an arriving address, up to the pool's
// MinIdlePerKey, in the background: borrowers do not wait for it.
func (r *Router[T]) warm(addr string) {
	if r.pool.Config().MinIdlePerKey == 0 || r.ctx.Err() != nil {
		return
	}
	// The watch goroutine calling warm is counted in wg, so this Add
	// cannot race with Close's Wait.
	r.wg.Go(func() {
		_ = r.pool.Prepare(r.ctx, addr) // failures are the pool's to count
		if r.addr(addr) == nil {
			r.retire(addr) // it left while being warmed
		}
	})
}

// wait returns the service's latest snapshot, waiting for its first
// snapshot or lookup error, bounded by ctx.
func (r *Router[T]) wait(ctx context.Context, svc *service) (*snapshot, error) {
	select {
	case <-svc.ready:
	default:
		select {
		case <-svc.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.ctx.Done():
			return nil, ErrClosed
		}
	}
	return svc.snap.Load(), nil
}

// noEndpoints is the error for a service without endpoints.
func noEndpoints(svc *service) error {
	if p := svc.lastErr.Load(); p != nil && *p != "" {
		return fmt.Errorf("%w: service %q (last lookup failed: %s)", ErrNoEndpoints, svc.name, *p)
	}
	return fmt.Errorf("%w: service %q", ErrNoEndpoints, svc.name)
}

// Borrow lends a client of one of service's endpoints, picked by the
// service's Balancer. It waits for the service's first lookup if the service
// is new, and then for a client as keyedpool.Pool.Borrow does, bounded by
// ctx and the pool's MaxWait. When the picked endpoint cannot give one (its
// connection fails, its make backoff is open, it is exhausted with
// WhenExhausted Fail, its health check says not SERVING), Borrow tries the
// service's other endpoints, each once, and then fails with the last error,
// which names the service. A service with no endpoints fails at once with
// an error wrapping ErrNoEndpoints; ctx.Err() is returned as is.
//
// The client is the caller's for the lease: exclusive use when the pool's
// MaxSharesPerObject is 1, one share of the connection otherwise. Give it
// back with Release.
func (r *Router[T]) Borrow(ctx context.Context, service string) (*keyedpool.Pooled[string, *grpcfactory.Client[T]], error) {
	svc, err := r.service(service)
	if err != nil {
		return nil, err
	}
	return r.borrow(ctx, svc)
}

func (r *Router[T]) borrow(ctx context.Context, svc *service) (*keyedpool.Pooled[string, *grpcfactory.Client[T]], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	snap, err := r.wait(ctx, svc)
	if err != nil {
		return nil, err
	}
	if snap == nil || len(snap.eps) == 0 {
		return nil, noEndpoints(svc)
	}
	c := &candidates[T]{r: r, snap: snap, strict: true}
	for restarts := 0; ; restarts++ {
		h, stale, err := r.borrowOnce(ctx, svc, c)
		if h != nil || !stale || restarts == maxRestarts {
			return h, err
		}
		// Endpoints this borrow tried left meanwhile: start over with the
		// service's newer list.
		c = &candidates[T]{r: r, snap: svc.snap.Load(), strict: true}
		if len(c.snap.eps) == 0 {
			return nil, noEndpoints(svc)
		}
	}
}

// maxRestarts bounds how often one borrow starts over because the
// endpoints it was trying left the service.
const maxRestarts = 8

// borrowOnce tries the endpoints of c's snapshot, each once at most, and
// returns the first client one lends, or the error of the last; stale says
// that some failed because they had left the service, whose list has
// changed since.
func (r *Router[T]) borrowOnce(ctx context.Context, svc *service, c *candidates[T]) (_ *keyedpool.Pooled[string, *grpcfactory.Client[T]], stale bool, _ error) {
	snap := c.snap
	var last error
	for range len(snap.eps) {
		i := svc.bal.Pick(c)
		checkPick(svc.bal, i, len(snap.eps))
		if i < 0 && c.strict {
			// Every untried endpoint is failing: try them anyway.
			c.strict = false
			i = svc.bal.Pick(c)
			checkPick(svc.bal, i, len(snap.eps))
		}
		if i < 0 {
			break
		}
		addr := snap.addrs[i]
		h, err := r.pool.Borrow(ctx, addr)
		if err == nil {
			if err = h.Value().Serving(ctx); err == nil {
				return h, false, nil
			}
			_ = r.Release(h, nil) // not used: the connection is not to blame
		}
		switch {
		case ctx.Err() != nil:
			return nil, false, ctx.Err()
		case errors.Is(err, keyedpool.ErrClosed):
			return nil, false, ErrClosed
		case errors.Is(err, ErrEndpointRemoved):
			r.pool.ForgetFailures(addr) // the refused make counted as one
		}
		if (r.addr(addr) == nil || errors.Is(err, ErrEndpointRemoved)) && svc.snap.Load() != snap {
			stale = true // it left, or left and came back, while we tried it
		}
		last = err
		c.tried(i)
	}
	if last == nil {
		last = fmt.Errorf("%T picked no endpoint", svc.bal)
	}
	return nil, stale, fmt.Errorf("discovery: service %q: no endpoint could lend a client, last error: %w", svc.name, last)
}

// Release gives back a client that Borrow lent, after the RPCs made with it:
// err is the last RPC's error, or nil. The client is invalidated (closed
// once its other leases are back) when err means its connection is broken
// (grpcfactory.Client.Broken) or when no service lists its endpoint any
// more; otherwise it goes back to the pool. It returns the pool's error.
func (r *Router[T]) Release(h *keyedpool.Pooled[string, *grpcfactory.Client[T]], err error) error {
	if h == nil {
		return keyedpool.ErrNotBorrowed
	}
	key := h.Key()
	if r.addr(key) == nil || h.Value().Broken(err) {
		return r.pool.Invalidate(h)
	}
	rerr := r.pool.Return(h)
	if r.addr(key) == nil {
		// The endpoint left while the client went back: retire closed the
		// idle connections before this one was among them.
		_ = r.pool.Clear(context.Background(), key)
	}
	return rerr
}

// Endpoints returns service's latest endpoints (read only), waiting for its
// first lookup if the service is new, bounded by ctx. A service whose
// lookups have all failed has none, and the error of the last lookup is
// returned with them, wrapped in ErrNoEndpoints.
func (r *Router[T]) Endpoints(ctx context.Context, service string) ([]Endpoint, error) {
	svc, err := r.service(service)
	if err != nil {
		return nil, err
	}
	snap, err := r.wait(ctx, svc)
	if err != nil {
		return nil, err
	}
	if snap == nil {
		return nil, noEndpoints(svc)
	}
	return snap.eps, nil
}

// usable reports whether a borrow should go to addr while other endpoints
// are healthy: not when its make backoff is open, nor when it has
// connections and all of them are in TRANSIENT_FAILURE.
func (r *Router[T]) usable(addr string) bool {
	st := r.addr(addr)
	if st == nil {
		return false
	}
	if st.makeFailed.Load() && r.pool.KeyStats(addr).BackoffUntil.After(time.Now()) {
		return false
	}
	if p := st.clients.Load(); p != nil && len(*p) > 0 {
		for _, c := range *p {
			if c.ClientConn().GetState() != connectivity.TransientFailure {
				return true
			}
		}
		return false
	}
	return true
}

// Close stops watching services, fails borrowers waiting for a first
// lookup with ErrClosed, and closes the pool: it waits, bounded by ctx, for
// the watches and warm-ups to end and for lent clients to come back (see
// keyedpool.Pool.Close; end RPCs and streams first). It returns the pool's
// errors and, if ctx ended first, ctx.Err().
func (r *Router[T]) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	var werr error
	select {
	case <-done:
	case <-ctx.Done():
		werr = ctx.Err()
	}
	return errors.Join(werr, r.pool.Close(ctx))
}

// candidates is Candidates for one borrow.
type candidates[T any] struct {
	r      *Router[T]
	snap   *snapshot
	strict bool   // skip failing endpoints
	done   []bool // endpoints this borrow tried; nil until one failed
}

func (c *candidates[T]) Endpoints() []Endpoint { return c.snap.eps }

func (c *candidates[T]) Usable(i int) bool {
	if c.done != nil && c.done[i] {
		return false
	}
	return !c.strict || c.r.usable(c.snap.addrs[i])
}

func (c *candidates[T]) Load(i int) int {
	ks := c.r.pool.KeyStats(c.snap.addrs[i])
	return ks.SharesInUse + ks.Waiters
}

func (c *candidates[T]) tried(i int) {
	if c.done == nil {
		c.done = make([]bool, len(c.snap.eps))
	}
	c.done[i] = true
}
