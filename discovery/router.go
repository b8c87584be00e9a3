package discovery

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// RouterConfig configures a Router. Resolver and Factory are required.
type RouterConfig[T any] struct {
	// Resolver finds the endpoints of the services the Router serves. A
	// Mux serves services from several resolvers. Required.
	Resolver Resolver

	// Factory makes the pooled clients, keyed by endpoint address
	// ("host:port"): usually a *grpcpool.Factory[string, T] whose Target
	// is left nil, so that the address is the target. Required. Set its
	// ConnectTimeout, so that a dead endpoint fails the make (and the
	// borrow moves on to another endpoint) instead of lending a connection
	// that cannot connect, and so that ServiceStats.Usable knows it.
	Factory factory.KeyedFactory[string, *grpcpool.Client[T]]

	// Pool configures the pool of all endpoints, each endpoint a key:
	// MaxSharesPerObject above 1 for shared leases (recommended for Conn;
	// keyedpool.MaxShares lets each connection take what its server's
	// stream cap allows, which it learns), MaxTotalPerKey per endpoint,
	// MinIdlePerKey for the connections an arriving endpoint is warmed to,
	// MakeFailureThreshold so that dead endpoints are skipped. The zero
	// value is keyedpool's default: exclusive leases, 8 per endpoint.
	Pool keyedpool.Config

	// NewBalancer makes the Balancer of each service. Nil: RoundRobin.
	NewBalancer func() Balancer

	// WarmInterval is how often the Router tops every endpoint up to the
	// pool's MinIdlePerKey spare connections again, as it does when the
	// endpoint arrives: for an endpoint that was down then, lost its
	// connections, or is short after Pool().SetConfig raised
	// MinIdlePerKey (Warm does it at once). Each top-up also reconnects
	// the endpoint's pooled connections that are not connected, so that
	// warm means connected, and a backend that went away (or came back)
	// is found out within about one WarmInterval without any RPC: an IDLE
	// connection (its transport lost, gRPC's IdleTimeout passed, or made
	// without ConnectTimeout) is told to connect, and one in
	// TRANSIENT_FAILURE retries at once instead of after gRPC's growing
	// backoff. Zero: only on arrival and on Warm; the pool's own upkeep,
	// run every TimeBetweenEvictionRuns, still tops keys up, and an
	// endpoint whose connections lost their transport counts as usable
	// (ServiceStats.Usable) until a connect to it fails. Negative is
	// invalid.
	WarmInterval time.Duration

	// IdleTimeout stops the watch of a service that nothing has used for
	// this long (no Borrow, no RPC of its Conn, no Endpoints), and drops
	// it as Forget does, so that a mistyped or retired name does not stay
	// watched, and counted unhealthy, for the life of the Router; its next
	// use watches it again. Services named to Watch are kept until Forget,
	// whatever IdleTimeout says. A service is dropped between IdleTimeout
	// and 1.25 IdleTimeout after its last use (plus however late the
	// Router's sweep is scheduled), never before its first lookup has
	// ended; leases out then are not touched, and a borrow under way then
	// starts over on a new watch. Zero: watches last until Forget or
	// Close. Negative is invalid.
	IdleTimeout time.Duration

	// Logger, if set, receives the Router's records: an endpoint added to
	// or removed from a service (Info), an endpoint that cannot be warmed
	// (Warn, once until a warm-up succeeds again, which is logged at
	// Info). Nil: no records.
	Logger *slog.Logger
}

// Router serves any number of services from one pool of gRPC clients keyed
// by endpoint address, following each service's endpoints as its Resolver
// reports them. A service is watched from its first use (Borrow, Conn,
// Endpoints) or from Watch, until Forget, until IdleTimeout passes without
// a use (for services not named to Watch), or until Close. Make one with
// NewRouter; all methods are safe for concurrent use.
type Router[T any] struct {
	res         Resolver
	newBal      func() Balancer
	pool        *keyedpool.Pool[string, *grpcpool.Client[T]]
	warmEvery   time.Duration
	idleTimeout time.Duration
	log         *slog.Logger // nil: no records

	// epoch is the zero of clock, which stamps connects and uses.
	epoch time.Time

	// ctx ends at Close: it stops the watches, warm-ups and sweeps.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // watches, warm-ups, the warm and idle loops

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

	// okAt and failedAt are the clock readings of the latest connect to
	// it that succeeded (a make that returned a READY connection, an
	// Activate that did, a connection seen READY) and of the latest that
	// failed (a make, an Activate, the validation of a connection, a
	// connection closed in TRANSIENT_FAILURE); 0: none. The last connect
	// failed while failedAt > okAt: see lastFailed.
	okAt, failedAt atomic.Int64
	// pending: it arrived to be warmed and its first warm-up has not ended,
	// so nothing is known of it yet.
	pending atomic.Bool

	// warming: a warm-up goroutine runs for it; wantWarm: another top-up
	// was asked for since that goroutine last looked. See startWarmLocked.
	warming, wantWarm atomic.Bool
	down              bool // the last warm-up failed; owned by the warm-up goroutine

	mu      sync.Mutex                            // serializes writers of clients
	clients atomic.Pointer[[]*grpcpool.Client[T]] // its live connections, copied on write
}

// service is one service the Router serves.
type service struct {
	name  string
	bal   Balancer
	ready chan struct{} // closed at the first snapshot or error

	// ctx ends when the service's watch is to stop: Forget, IdleTimeout,
	// Close.
	ctx    context.Context
	cancel context.CancelFunc

	snap    atomic.Pointer[snapshot] // latest snapshot; nil before the first
	updates atomic.Int64
	errors  atomic.Int64
	lastErr atomic.Pointer[string] // nil or "": the latest lookup succeeded

	// lastUse is the clock reading of its latest use, within useGrain
	// (see Router.use); it only grows. dropped is set when the service
	// leaves the Router (and, for a moment, while the sweep decides: see
	// sweepIdle). A holder of the service that finds it dropped asks the
	// Router again.
	lastUse atomic.Int64
	dropped atomic.Bool

	kept bool // named to Watch: IdleTimeout does not apply; under Router.mu

	readied bool // ready is closed; owned by the watch goroutine
}

// touch records a use of s and reports whether s is still its Router's.
// Used by holders of s that do not take the Router's lock (Conn);
// Router.service records its uses under the lock.
func (r *Router[T]) touch(s *service) bool {
	r.use(s)
	// Read after the stamp: with sweepIdle's store of dropped before its
	// second read of lastUse, either the sweep sees this use or this sees
	// the drop. A use that stored no stamp, one within useGrain, is one
	// the sweep may judge idle only once it lies IdleTimeout in the past
	// (see sweepIdle).
	return !s.dropped.Load()
}

// snapshot is a service's endpoints, without duplicate addresses, and their
// addresses.
type snapshot struct {
	eps   []Endpoint
	addrs []string
}

// NewRouter makes a Router and its pool. It refuses an invalid cfg with
// the error of cfg.Validate, which names every invalid field.
func NewRouter[T any](cfg RouterConfig[T]) (*Router[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router[T]{
		res:         cfg.Resolver,
		newBal:      cfg.NewBalancer,
		warmEvery:   cfg.WarmInterval,
		idleTimeout: cfg.IdleTimeout,
		log:         cfg.Logger,
		epoch:       time.Now(),
		services:    make(map[string]*service),
	}
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
	if r.warmEvery > 0 {
		r.wg.Go(r.warmLoop)
	}
	if r.idleTimeout > 0 {
		r.wg.Go(r.idleLoop)
	}
	return r, nil
}

// Pool returns the Router's pool, for statistics (KeyStats by endpoint
// address) and run-time limits (SetConfig; call Warm after raising
// MinIdlePerKey). Borrow from it only keys that a service lists.
func (r *Router[T]) Pool() *keyedpool.Pool[string, *grpcpool.Client[T]] { return r.pool }

// addr returns the state of an address some service lists, or nil.
func (r *Router[T]) addr(key string) *addrState[T] { return (*r.addrs.Load())[key] }

// service returns the service named name, marked used, watching it from
// now on if it is new. It fails with ErrClosed after Close.
func (r *Router[T]) service(name string) (*service, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	svc := r.serviceLocked(name)
	r.use(svc)
	return svc, nil
}

// serviceLocked returns the service named name, making it and starting its
// watch if it is new. The Router must be open.
func (r *Router[T]) serviceLocked(name string) *service {
	if svc := r.services[name]; svc != nil {
		return svc
	}
	svc := &service{name: name, bal: r.newBal(), ready: make(chan struct{})}
	svc.lastUse.Store(r.clock())
	svc.ctx, svc.cancel = context.WithCancel(r.ctx)
	r.services[name] = svc
	// Added under mu, where Close sets closed before it waits: no Add can
	// race with the Wait.
	r.wg.Go(func() { r.watch(svc) })
	return svc
}

// Watch starts watching service, if it is not watched yet, without waiting
// for its first lookup, and keeps watching it until Forget, whatever
// IdleTimeout says: for the services a program is configured with, which
// its health reports should judge from the start (ServiceStats.Kept). It
// fails with ErrClosed after Close.
func (r *Router[T]) Watch(service string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.serviceLocked(service).kept = true
	return nil
}

// Forget stops watching service and drops what the Router knows of it:
// its endpoints, its counters, its balancer. Endpoints no other service
// lists are retired as when they leave a snapshot: no new borrows, idle
// connections closed at once, lent ones closed when they come back, then
// their keys leave the pool. Borrowers still waiting for the service's
// first lookup fail with an error wrapping ErrNoEndpoints; a borrow past
// it whose endpoints are retired under it starts over on a new watch, as
// any later use (or Watch) does, from a new first lookup. Forget does not wait
// for the resolver's watch to return; Close does. It does nothing for a
// service that is not watched, or after Close.
func (r *Router[T]) Forget(service string) {
	r.mu.Lock()
	svc := r.services[service]
	if svc == nil || r.closed {
		r.mu.Unlock()
		return
	}
	removed := r.dropLocked(svc)
	r.mu.Unlock()
	r.dropped(svc, removed)
}

// dropLocked removes svc from the Router and its addresses from the ones
// it routes to, and returns the addresses no service lists any more.
func (r *Router[T]) dropLocked(svc *service) (removed []string) {
	delete(r.services, svc.name)
	svc.dropped.Store(true)
	snap := svc.snap.Load()
	if snap == nil {
		return nil
	}
	cur := *r.addrs.Load()
	var next map[string]*addrState[T]
	for _, a := range snap.addrs {
		st := cur[a]
		if st.refs--; st.refs > 0 {
			continue
		}
		if next == nil {
			next = maps.Clone(cur) // readers hold cur
		}
		delete(next, a)
		removed = append(removed, a)
	}
	if next != nil {
		r.addrs.Store(&next)
	}
	return removed
}

// dropped ends the watch of svc, which dropLocked removed, and retires the
// addresses that left with it.
func (r *Router[T]) dropped(svc *service, removed []string) {
	svc.cancel()
	if snap := svc.snap.Load(); snap != nil && r.log != nil {
		for _, a := range snap.addrs {
			r.log.Info("endpoint removed", "addr", a, "service", svc.name)
		}
	}
	for _, a := range removed {
		r.retire(a)
	}
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

// Close stops watching services and drops them (Services then returns
// none), fails borrowers waiting for a first lookup with ErrClosed, and
// closes the pool: it waits, bounded by ctx, for the watches and warm-ups
// to end and for lent clients to come back (see keyedpool.Pool.Close; end
// RPCs and streams first). It returns the pool's errors and, if ctx ended
// first, ctx.Err().
func (r *Router[T]) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	for _, svc := range r.services {
		svc.dropped.Store(true)
	}
	clear(r.services)
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
