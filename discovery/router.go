package discovery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

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

// NewRouter makes a Router and its pool. It refuses an invalid cfg with
// the error of cfg.Validate, which names every invalid field.
func NewRouter[T any](cfg RouterConfig[T]) (*Router[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
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
