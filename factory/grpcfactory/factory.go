package grpcfactory

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/keyedpool"
)

// Client is one pooled gRPC client: a *grpc.ClientConn, which is one HTTP/2
// connection to one backend, and the generated stub T over it. Its methods
// are safe for concurrent use.
type Client[T any] struct {
	conn     *grpc.ClientConn
	stub     T
	key      any
	target   string
	classify func(error, connectivity.State) bool
}

// Stub returns the generated stub over the client's connection.
func (c *Client[T]) Stub() T { return c.stub }

// ClientConn returns the client's connection.
func (c *Client[T]) ClientConn() *grpc.ClientConn { return c.conn }

// Key returns the key the client was made for. The pool's handle has it
// with its type: Pooled.Key.
func (c *Client[T]) Key() any { return c.key }

// Target returns the gRPC target the client dialed.
func (c *Client[T]) Target() string { return c.target }

// Broken reports whether err, returned by an RPC on this client, means the
// connection is broken and should be invalidated rather than returned to
// the pool, by the factory's Classifier. A nil err is never broken.
func (c *Client[T]) Broken(err error) bool {
	return err != nil && c.classify(err, c.conn.GetState())
}

// DefaultClassifier is the rule Conn and Release use unless
// Config.Classifier replaces it: an error means the connection is broken
// when its status code is Unavailable and the connection is not READY just
// after the RPC failed. gRPC fails RPCs with Unavailable when the transport
// breaks (the backend went away, the connection reset, a keepalive went
// unanswered) or cannot be made, and then moves the connection out of
// READY: to IDLE, CONNECTING or TRANSIENT_FAILURE. An Unavailable a handler
// returned over a working connection leaves it READY, and the connection in
// the pool; so does every other code, the context's own DeadlineExceeded
// and Canceled included.
func DefaultClassifier(err error, state connectivity.State) bool {
	return status.Code(err) == codes.Unavailable && state != connectivity.Ready
}

// Factory makes and manages *Client[T] for a keyedpool.Pool keyed by K. It
// implements factory.KeyedFactory and is safe for concurrent use.
type Factory[K comparable, T any] struct {
	newStub func(grpc.ClientConnInterface) T
	r       resolved[K]
}

var _ factory.KeyedFactory[string, *Client[int]] = (*Factory[string, int])(nil)

// New returns a Factory for cfg. It refuses an invalid cfg with an error
// wrapping ErrInvalidConfig that names the field.
func New[K comparable, T any](cfg Config[K, T]) (*Factory[K, T], error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return &Factory[K, T]{newStub: cfg.NewStub, r: r}, nil
}

// Make creates a client for key with grpc.NewClient. With ConnectTimeout it
// connects at once and returns only a READY client, bounded by
// ConnectTimeout and ctx; it fails at once with ErrConnect when the first
// attempt fails. Without, the client connects on its first RPC.
func (f *Factory[K, T]) Make(ctx context.Context, key K) (*Client[T], error) {
	target, err := f.r.target(key)
	if err != nil {
		return nil, fmt.Errorf("grpcfactory: target for key %v: %w", key, err)
	}
	cc, err := grpc.NewClient(target, f.r.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("grpcfactory: new client for %s: %w", target, err)
	}
	if f.r.connect > 0 {
		if err := f.connect(ctx, cc); err != nil {
			cc.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrConnect, target, err)
		}
	}
	return &Client[T]{conn: cc, stub: f.newStub(cc), key: key, target: target, classify: f.r.classify}, nil
}

// connect starts connecting cc and waits until it is READY, ConnectTimeout
// passes or ctx ends.
func (f *Factory[K, T]) connect(ctx context.Context, cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, f.r.connect)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure:
			return whyFailed(ctx, cc)
		case connectivity.Shutdown:
			return errors.New("connection closed while connecting")
		}
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("not READY within %v (state %v): %w", f.r.connect, s, ctx.Err())
		}
	}
}

// whyFailed returns the reason of cc's failed connection attempt. gRPC
// keeps it only in the status of the RPCs it fails while in
// TRANSIENT_FAILURE, so ask with one: it fails at once without leaving the
// client, and its message carries the dial or handshake error.
func whyFailed(ctx context.Context, cc *grpc.ClientConn) error {
	err := cc.Invoke(ctx, healthpb.Health_Check_FullMethodName, &healthpb.HealthCheckRequest{}, new(healthpb.HealthCheckResponse))
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return errors.New(st.Message())
	}
	if cc.GetState() == connectivity.Ready {
		return nil // it connected meanwhile
	}
	return fmt.Errorf("connection in TRANSIENT_FAILURE: %v", err)
}

// Destroy closes the client's connection; RPCs still running on it fail
// with Canceled.
func (f *Factory[K, T]) Destroy(_ context.Context, _ K, c *Client[T]) error {
	return c.conn.Close()
}

// Validate reports whether the client is usable: nil when its connection is
// READY, IDLE or CONNECTING, an error wrapping ErrUnusable when it is in
// TRANSIENT_FAILURE or SHUTDOWN. With HealthCheck it then asks the
// backend's health service, bounded by HealthCheck.Timeout and ctx: an
// answer other than SERVING is an error wrapping ErrNotServing, a failed
// Check an error wrapping its status.
func (f *Factory[K, T]) Validate(ctx context.Context, _ K, c *Client[T]) error {
	if err := usable(c); err != nil {
		return err
	}
	if f.r.healthTimeout == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.r.healthTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: f.r.healthService})
	if err != nil {
		return fmt.Errorf("grpcfactory: health check of %s (service %q): %w", c.target, f.r.healthService, err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: %s (service %q) says %v", ErrNotServing, c.target, f.r.healthService, s)
	}
	return nil
}

func usable[T any](c *Client[T]) error {
	switch s := c.conn.GetState(); s {
	case connectivity.TransientFailure, connectivity.Shutdown:
		return fmt.Errorf("%w: %s is %v", ErrUnusable, c.target, s)
	}
	return nil
}

// Activate readies an idle client before the pool lends it: a connection in
// TRANSIENT_FAILURE or SHUTDOWN is refused (ErrUnusable), so the pool
// destroys it and tries another; an IDLE one is told to reconnect and, with
// ConnectTimeout, waited for as in Make.
func (f *Factory[K, T]) Activate(ctx context.Context, _ K, c *Client[T]) error {
	if err := usable(c); err != nil {
		return err
	}
	if c.conn.GetState() != connectivity.Idle {
		return nil
	}
	if f.r.connect == 0 {
		c.conn.Connect()
		return nil
	}
	if err := f.connect(ctx, c.conn); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConnect, c.target, err)
	}
	return nil
}

// Passivate does nothing: a returned client needs no reset.
func (f *Factory[K, T]) Passivate(context.Context, K, *Client[T]) error { return nil }

// Release gives back a client borrowed from p for exclusive use, after the
// RPCs made with it: it invalidates the client when err (the last RPC's
// error, or nil) means its connection is broken (Client.Broken), and
// returns it otherwise. It returns the pool's error.
func Release[K comparable, T any](p *keyedpool.Pool[K, *Client[T]], h *keyedpool.Pooled[K, *Client[T]], err error) error {
	if h != nil && h.Value().Broken(err) {
		return p.Invalidate(h)
	}
	return p.Return(h)
}
