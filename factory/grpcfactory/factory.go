package grpcfactory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
	health   *health // nil without HealthCheck
}

// health is a client's last health Check answer, for Conn.
type health struct {
	service           string
	timeout, interval time.Duration
	checked           atomic.Int64 // when the last Check began, in Unix nanoseconds; 0: never
	mu                sync.Mutex   // protects err
	err               error        // the last answer: nil for SERVING
	targets           *targets     // the factory's, told every answer
	destroyed         atomic.Bool  // Destroy was called: later answers are not the backend's
}

// check asks the backend's health service, bounded by the timeout and ctx,
// and keeps the answer unless ctx ended first.
func (c *Client[T]) check(ctx context.Context) error {
	h := c.health
	h.checked.Store(time.Now().UnixNano())
	cctx, cancel := context.WithTimeout(withOwnRPC(ctx), h.timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(c.conn).Check(cctx, &healthpb.HealthCheckRequest{Service: h.service}, grpc.WaitForReady(false))
	switch {
	case err != nil:
		err = fmt.Errorf("grpcfactory: health check of %s (service %q): %w", c.target, h.service, err)
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		err = fmt.Errorf("%w: %s (service %q) says %v", ErrNotServing, c.target, h.service, resp.GetStatus())
	}
	if ctx.Err() != nil || h.destroyed.Load() {
		h.checked.Store(0) // not the backend's answer: ask again next time
		return err
	}
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
	h.targets.checked(c.target, err)
	return err
}

// serving returns the backend's last health answer, asking again when it is
// older than HealthCheck.Interval: one caller asks, the others meanwhile
// use the last answer. Without HealthCheck it returns nil at once.
func (c *Client[T]) serving(ctx context.Context) error {
	h := c.health
	if h == nil {
		return nil
	}
	last := h.checked.Load()
	if now := time.Now().UnixNano(); now-last >= int64(h.interval) && h.checked.CompareAndSwap(last, now) {
		return c.check(ctx)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Serving returns the backend's last grpc.health.v1 answer as Conn uses it:
// nil for SERVING, an error wrapping ErrNotServing (or the failed Check's
// error) otherwise. It asks again, bounded by HealthCheck.Timeout and ctx,
// when the last answer is older than HealthCheck.Interval; one caller asks
// while the others use the last answer. Without HealthCheck it returns nil
// at once.
func (c *Client[T]) Serving(ctx context.Context) error { return c.serving(ctx) }

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
	targets targets
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
	opts := f.r.dialOpts
	if f.r.observer != nil {
		opts = append(opts[:len(opts):len(opts)], observeOptions(target, f.r.observer)...)
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpcfactory: new client for %s: %w", target, err)
	}
	if f.r.connect > 0 {
		if err := f.connect(ctx, cc); err != nil {
			cc.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrConnect, target, err)
		}
	}
	c := &Client[T]{conn: cc, stub: f.newStub(cc), key: key, target: target, classify: f.r.classify}
	if f.r.healthTimeout > 0 {
		c.health = &health{service: f.r.healthService, timeout: f.r.healthTimeout, interval: f.r.healthInterval, targets: &f.targets}
		f.targets.made(target)
	}
	return c, nil
}

// connect starts connecting cc and waits until it is READY, ConnectTimeout
// passes or ctx ends.
func (f *Factory[K, T]) connect(ctx context.Context, cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, f.r.connect)
	defer cancel()
	cc.Connect()
	tried := false
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure:
			return whyFailed(ctx, cc)
		case connectivity.Shutdown:
			return errors.New("connection closed while connecting")
		case connectivity.Connecting:
			tried = true
		case connectivity.Idle:
			if tried {
				// The attempt ended without READY (the server closed the
				// connection after the handshake, say); gRPC does not
				// try again from IDLE by itself.
				return errors.New("connection closed before it was READY")
			}
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
	// WaitForReady(false): a default from the user's DialOptions must not
	// make this wait for the connection.
	err := cc.Invoke(withOwnRPC(ctx), healthpb.Health_Check_FullMethodName, &healthpb.HealthCheckRequest{}, new(healthpb.HealthCheckResponse), grpc.WaitForReady(false))
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
	if c.health != nil {
		c.health.destroyed.Store(true) // a Check still in flight is no answer
		f.targets.destroyed(c.target)
	}
	return c.conn.Close()
}

// HealthStats returns a snapshot of the factory's health checks and of
// which targets are unhealthy. It is safe for concurrent use.
func (f *Factory[K, T]) HealthStats() HealthStats { return f.targets.stats() }

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
	if c.health == nil {
		return nil
	}
	return c.check(ctx)
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
// destroys it and tries another; an IDLE one is told to reconnect. With
// ConnectTimeout, an IDLE or CONNECTING one is waited for as in Make, so
// that the pool never lends a connection that has not connected.
func (f *Factory[K, T]) Activate(ctx context.Context, _ K, c *Client[T]) error {
	if err := usable(c); err != nil {
		return err
	}
	switch s := c.conn.GetState(); {
	case s == connectivity.Ready:
		return nil
	case f.r.connect == 0:
		if s == connectivity.Idle {
			c.conn.Connect()
		}
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
