package discovery

import (
	"context"
	"errors"
	"sync/atomic"

	"google.golang.org/grpc"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// Conn is a grpc.ClientConnInterface for one service of a Router, so that
// generated stubs work unchanged over it:
//
//	foo := pb.NewFooClient(router.Conn("foo"))
//	resp, err := foo.Bar(ctx, req) // to one of foo's endpoints
//
// Each RPC and stream borrows a client as Router.Borrow does (the service's
// Balancer picks the endpoint, failing endpoints are skipped, a connection
// gRPC reports down is not lent, an endpoint that cannot give a client
// makes way for the next) and holds it as
// grpcpool.Conn does: a unary RPC while it runs, a stream until it ends.
// A failed borrow fails the RPC with a status error that wraps the cause:
// Unavailable for ErrNoEndpoints and for endpoints that could not be
// reached, Canceled or DeadlineExceeded when the RPC's context ended,
// ResourceExhausted when the pool was exhausted.
//
// A Conn is safe for concurrent use and holds nothing of its own.
type Conn[T any] struct {
	name string
	c    *grpcpool.Conn[string, T]
}

var _ grpc.ClientConnInterface = (*Conn[int])(nil)

// Conn returns a Conn for service, which the Router watches from now on.
// Each RPC counts as a use of the service (see RouterConfig.IdleTimeout):
// an RPC after Forget, or after the service went idle, watches it again.
// After Close its RPCs fail with Unavailable, wrapping ErrClosed.
func (r *Router[T]) Conn(service string) *Conn[T] {
	l := &lender[T]{r: r, name: service}
	if svc, err := r.service(service); err != nil {
		l.err = err
	} else {
		l.svc.Store(svc)
	}
	return &Conn[T]{name: service, c: grpcpool.NewLenderConn(l)}
}

// Service returns the name of the service the Conn routes to.
func (c *Conn[T]) Service() string { return c.name }

// Invoke makes a unary RPC on one of the service's endpoints.
func (c *Conn[T]) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.c.Invoke(ctx, method, args, reply, opts...)
}

// NewStream opens a stream to one of the service's endpoints; it holds its
// client until it ends (see grpcpool.Conn).
func (c *Conn[T]) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.c.NewStream(ctx, desc, method, opts...)
}

// lender lends a Conn's clients from its service.
type lender[T any] struct {
	r    *Router[T]
	name string
	svc  atomic.Pointer[service] // the service as the Router last gave it
	err  error                   // the Router was closed when the Conn was made
}

func (l *lender[T]) Borrow(ctx context.Context) (*keyedpool.Pooled[string, *grpcpool.Client[T]], error) {
	if l.err != nil {
		return nil, l.err
	}
	svc := l.svc.Load()
	if !l.r.touch(svc) {
		// Forgotten, idle or closed: watch it again, or fail with ErrClosed.
		var err error
		if svc, err = l.r.service(l.name); err != nil {
			return nil, err
		}
		l.svc.Store(svc)
	}
	return l.r.borrow(ctx, svc)
}

func (l *lender[T]) Release(h *keyedpool.Pooled[string, *grpcpool.Client[T]], err error) error {
	// Only a Classifier's panic goes to the RPC's caller: a destroy error
	// is nothing it can act on.
	if rerr := l.r.Release(h, err); errors.Is(rerr, keyedpool.ErrFactoryPanic) {
		return rerr
	}
	return nil
}
