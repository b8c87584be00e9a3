package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/grpcpool"
)

// routerFactory is the Router's pool factory: the user's, plus what the
// Router needs to know of each endpoint's connections (their states, for
// skipping endpoints whose connections are down; when a connect last
// succeeded and when one last failed: a make, an Activate, a validation,
// a connection closed in TRANSIENT_FAILURE), and a refusal to make,
// activate or validate connections to endpoints no service lists, so that
// a leaving endpoint gets no new connection and an idle one left behind by
// a race is destroyed rather than lent.
type routerFactory[T any] struct {
	r *Router[T]
	f factory.KeyedFactory[string, *grpcpool.Client[T]]
}

var _ factory.KeyedFactory[string, *grpcpool.Client[int]] = (*routerFactory[int])(nil)

func removed(key string) error { return fmt.Errorf("%w: %s", ErrEndpointRemoved, key) }

func (f *routerFactory[T]) Make(ctx context.Context, key string) (*grpcpool.Client[T], error) {
	st := f.r.addr(key)
	if st == nil {
		return nil, removed(key)
	}
	c, err := f.f.Make(ctx, key)
	if err != nil {
		f.failed(ctx, st)
		return nil, err
	}
	// A connection made without ConnectTimeout has not connected yet:
	// nothing learnt until it does.
	f.ready(st, c)
	// The endpoint may have left, and even come back, during the make.
	if st = f.r.addr(key); st == nil {
		_ = f.f.Destroy(ctx, key, c)
		return nil, removed(key)
	}
	st.mu.Lock()
	var list []*grpcpool.Client[T]
	if p := st.clients.Load(); p != nil {
		list = slices.Clone(*p)
	}
	list = append(list, c)
	st.clients.Store(&list)
	st.mu.Unlock()
	return c, nil
}

func (f *routerFactory[T]) Destroy(ctx context.Context, key string, c *grpcpool.Client[T]) error {
	if st := f.r.addr(key); st != nil {
		if c.ClientConn().GetState() == connectivity.TransientFailure {
			// Its last connect failed: as good as a failed make, for
			// usable and healthy, now that the connection goes (a
			// connection that is down is not kept).
			st.connectFailed(f.r.clock())
		}
		st.mu.Lock()
		if p := st.clients.Load(); p != nil {
			if i := slices.Index(*p, c); i >= 0 {
				list := slices.Delete(slices.Clone(*p), i, i+1)
				st.clients.Store(&list)
			}
		}
		st.mu.Unlock()
	}
	return f.f.Destroy(ctx, key, c)
}

func (f *routerFactory[T]) Validate(ctx context.Context, key string, c *grpcpool.Client[T]) error {
	st := f.r.addr(key)
	if st == nil {
		return removed(key)
	}
	err := f.f.Validate(ctx, key, c)
	if err != nil {
		// A connection that fails its check (its state, its health
		// check) is as good as a failed connect, until one succeeds or a
		// connection of the endpoint is seen READY and serving.
		f.failed(ctx, st)
	} else {
		f.ready(st, c) // a check passed: the connect works
	}
	return err
}

func (f *routerFactory[T]) Activate(ctx context.Context, key string, c *grpcpool.Client[T]) error {
	st := f.r.addr(key)
	if st == nil {
		return removed(key)
	}
	err := f.f.Activate(ctx, key, c)
	if err != nil {
		f.failed(ctx, st) // a reconnect that failed, or a connection down
	} else {
		f.ready(st, c)
	}
	return err
}

// failed records a failed connect, make or check under ctx, unless ctx
// was canceled: a borrower that gave up, or Close, says nothing of the
// endpoint. A deadline that passed does: the connect took that long.
func (f *routerFactory[T]) failed(ctx context.Context, st *addrState[T]) {
	if !errors.Is(ctx.Err(), context.Canceled) {
		st.connectFailed(f.r.clock())
	}
}

// ready records a connect that succeeded if c is READY and, with health
// checks, its backend answered SERVING (grpcpool.Client.Healthy).
func (f *routerFactory[T]) ready(st *addrState[T], c *grpcpool.Client[T]) {
	at := f.r.clock()
	if c.Healthy() {
		st.connected(at)
	}
}

func (f *routerFactory[T]) Passivate(ctx context.Context, key string, c *grpcpool.Client[T]) error {
	return f.f.Passivate(ctx, key, c)
}
