package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

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
		case <-svc.ctx.Done():
			if r.ctx.Err() != nil {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("%w: service %q: its watch was stopped (Forget) before its first lookup ended", ErrNoEndpoints, svc.name)
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
// is new (each Borrow is a use of the service: see RouterConfig.IdleTimeout),
// and then for a client as grpcpool.Borrow does, bounded by ctx and the
// pool's MaxWait: never one whose connection gRPC reports down
// (grpcpool.Client.Down), which is invalidated instead. An endpoint whose
// make backoff is open, or whose connections are all down and none of them
// IDLE, is offered to the Balancer only when no other is left. When the
// picked endpoint cannot give a client (its connection fails, its make
// backoff is open, it is exhausted with WhenExhausted Fail, its health check
// says not SERVING), Borrow tries the service's other endpoints, each once,
// and then fails with the last error, which names the service. A service
// with no endpoints fails at once with an error wrapping ErrNoEndpoints;
// ctx.Err() is returned as is.
//
// The client is the caller's for the lease: exclusive use when the pool's
// MaxSharesPerObject is 1, one share of the connection otherwise. Give it
// back with Release.
func (r *Router[T]) Borrow(ctx context.Context, service string) (*keyedpool.Pooled[string, *grpcpool.Client[T]], error) {
	svc, err := r.service(service)
	if err != nil {
		return nil, err
	}
	return r.borrow(ctx, svc)
}

func (r *Router[T]) borrow(ctx context.Context, svc *service) (*keyedpool.Pooled[string, *grpcpool.Client[T]], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	snap, err := r.wait(ctx, svc)
	if err != nil {
		return nil, err
	}
	for restarts := 0; ; restarts++ {
		if snap == nil || len(snap.eps) == 0 {
			return nil, noEndpoints(svc)
		}
		h, stale, berr := r.borrowOnce(ctx, svc, &candidates[T]{r: r, snap: snap, strict: true})
		switch {
		case h != nil || restarts == maxRestarts || ctx.Err() != nil || errors.Is(berr, ErrClosed):
			return h, berr
		case svc.dropped.Load():
			// Forgotten, or dropped as idle, while this borrow ran: its
			// endpoints were retired under it. This borrow is a use:
			// watch the service again and start over.
			if svc, err = r.service(svc.name); err != nil {
				return nil, err
			}
			if snap, err = r.wait(ctx, svc); err != nil {
				return nil, err
			}
		case stale:
			// Endpoints this borrow tried left meanwhile: start over with
			// the service's newer list.
			snap = svc.snap.Load()
		default:
			return nil, berr
		}
	}
}

// maxRestarts bounds how often one borrow starts over because the
// endpoints it was trying left the service, or the service was dropped.
const maxRestarts = 8

// borrowOnce tries the endpoints of c's snapshot, each once at most, and
// returns the first client one lends, or the error of the last; stale says
// that some failed because they had left the service, whose list has
// changed since.
func (r *Router[T]) borrowOnce(ctx context.Context, svc *service, c *candidates[T]) (_ *keyedpool.Pooled[string, *grpcpool.Client[T]], stale bool, _ error) {
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
		// Not r.pool.Borrow: a share of a connection that went down
		// under its RPCs is passed over (and retired) there.
		h, err := grpcpool.Borrow(ctx, r.pool, addr)
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
// (grpcpool.Client.Classify), when gRPC reports its connection down
// (grpcpool.Client.Down), or when no service lists its endpoint any
// more; otherwise it goes back to the pool. It returns the pool's error,
// and, if the Classifier panicked, an error wrapping
// keyedpool.ErrFactoryPanic.
func (r *Router[T]) Release(h *keyedpool.Pooled[string, *grpcpool.Client[T]], err error) error {
	if h == nil {
		return keyedpool.ErrNotBorrowed
	}
	key := h.Key()
	broken, perr := h.Value().Classify(err)
	var rerr error
	if r.addr(key) == nil || broken || h.Value().Down() {
		rerr = r.pool.Invalidate(h)
	} else {
		rerr = r.pool.Return(h)
	}
	rerr = errors.Join(rerr, perr)
	if r.addr(key) == nil {
		// The endpoint left, before or while the client went back: retire
		// closed the idle connections before this one was among them, and
		// a Borrow that began before it left made the pool want the key
		// again. Forget it once more, so that it leaves.
		r.retire(key)
	}
	return rerr
}

// usable reports whether a borrow should go to addr while other endpoints
// are healthy: not when its last connect failed and its make backoff is
// open, nor when it has connections and gRPC reports every one of them
// down (grpcpool.Client.Down) and not IDLE. An IDLE connection may have
// gone idle by IdleTimeout rather than failed: it counts, or an endpoint
// whose connections all went idle would be skipped for ever. Its borrow
// finds out: the pool reconnects an idle connection before lending it, and
// grpcpool.Borrow passes over a lent one that lost its transport. An
// endpoint whose last connect failed is still tried while its backoff is
// closed: a borrow's connect is how it learns that the endpoint is back.
func (r *Router[T]) usable(addr string) bool {
	st := r.addr(addr)
	if st == nil {
		return false
	}
	if st.lastFailed() && r.pool.KeyStats(addr).BackoffUntil.After(time.Now()) {
		return false
	}
	if p := st.clients.Load(); p != nil && len(*p) > 0 {
		for _, c := range *p {
			if !c.Down() || c.ClientConn().GetState() == connectivity.Idle {
				return true
			}
		}
		return false
	}
	return true
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
