package discovery

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/factory/grpcfactory"
)

// routerFactory is the Router's pool factory: the user's, plus what the
// Router needs to know of each endpoint's connections (their states, for
// skipping endpoints whose connections are down; whether the last make or
// validation failed, or a connection went in TRANSIENT_FAILURE),
// and a refusal to make, activate or validate connections to endpoints no
// service lists, so that a leaving endpoint gets no new connection and an
// idle one left behind by a race is destroyed rather than lent.
type routerFactory[T any] struct {
	r *Router[T]
	f factory.KeyedFactory[string, *grpcfactory.Client[T]]
}

var _ factory.KeyedFactory[string, *grpcfactory.Client[int]] = (*routerFactory[int])(nil)

func removed(key string) error { return fmt.Errorf("%w: %s", ErrEndpointRemoved, key) }

func (f *routerFactory[T]) Make(ctx context.Context, key string) (*grpcfactory.Client[T], error) {
	st := f.r.addr(key)
	if st == nil {
		return nil, removed(key)
	}
	c, err := f.f.Make(ctx, key)
	if err != nil {
		st.failed.Store(true)
		return nil, err
	}
	st.failed.Store(false)
	// The endpoint may have left, and even come back, during the make.
	if st = f.r.addr(key); st == nil {
		_ = f.f.Destroy(ctx, key, c)
		return nil, removed(key)
	}
	st.mu.Lock()
	var list []*grpcfactory.Client[T]
	if p := st.clients.Load(); p != nil {
		list = slices.Clone(*p)
	}
	list = append(list, c)
	st.clients.Store(&list)
	st.mu.Unlock()
	return c, nil
}

func (f *routerFactory[T]) Destroy(ctx context.Context, key string, c *grpcfactory.Client[T]) error {
	if st := f.r.addr(key); st != nil {
		if c.ClientConn().GetState() == connectivity.TransientFailure {
			// Its last connect failed: as good as a failed make, for
			// usable and healthy, now that the connection goes (a
			// connection that is down is not kept).
			st.failed.Store(true)
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

func (f *routerFactory[T]) Validate(ctx context.Context, key string, c *grpcfactory.Client[T]) error {
	st := f.r.addr(key)
	if st == nil {
		return removed(key)
	}
	err := f.f.Validate(ctx, key, c)
	if err != nil {
		// A new connection that fails its check (TestOnCreate) is as good
		// as a failed connect; an old one's failure counts only while it
		// was the last live one, as usable and healthy read it.
		st.failed.Store(true)
	}
	return err
}

func (f *routerFactory[T]) Activate(ctx context.Context, key string, c *grpcfactory.Client[T]) error {
	if f.r.addr(key) == nil {
		return removed(key)
	}
	return f.f.Activate(ctx, key, c)
}

func (f *routerFactory[T]) Passivate(ctx context.Context, key string, c *grpcfactory.Client[T]) error {
	return f.f.Passivate(ctx, key, c)
}
