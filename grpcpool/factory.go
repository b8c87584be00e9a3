package grpcpool

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
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

	// wasReady: the connection has been seen READY since Make, or since
	// Activate last gave it a fresh start; see Down.
	wasReady atomic.Bool

	streams keyedpool.ShareCap // the server's stream limit; see streamcap.go
}

// ShareCap returns the number of concurrent streams the client's server
// allows, as it last said (its SETTINGS_MAX_CONCURRENT_STREAMS; 0: no limit,
// or not known yet: the connection has not heard from its server, which
// Make waits for only with ConnectTimeout), for a keyedpool.Pool with
// shared leases to lend the connection no more shares than that: it
// implements keyedpool.ShareCapper. The cap is learned only with
// grpcpool's own credentials (Config.TLS, TransportCredentials or
// Insecure); credentials given in Config.DialOptions replace them, and then
// it is not.
func (c *Client[T]) ShareCap() *keyedpool.ShareCap { return &c.streams }

// health is a client's grpc.health.v1 state, for Validate and Conn: the
// backend's last answer and the one Check in flight, if any.
//
// A Check runs in a goroutine of its own, on a context that keeps the values
// of the caller that started it but not its cancellation, bounded by
// timeout. Callers wait for it bounded by their own contexts; one that gives
// up leaves it running. So an answer is only ever the Check's own: SERVING,
// another status, or a failure within timeout, never a caller's deadline.
type health struct {
	service           string
	timeout, interval time.Duration
	targets           *targets    // the factory's, told every answer
	destroyed         atomic.Bool // Destroy was called: later answers are not the backend's

	mu       sync.Mutex // protects the fields below; taken before targets.mu
	err      error      // the last answer: nil for SERVING, and before the first
	answered bool       // a Check has answered
	started  time.Time  // when the last Check began; zero: never
	flight   *flight    // the Check in flight; nil: none
}

// flight is one health Check in flight, shared by every caller that waits
// for it. err is written before done is closed, and read only after.
type flight struct {
	done chan struct{}
	err  error
}

// wait returns the Check's answer, or ctx.Err() if ctx ends first; the
// Check goes on either way.
func (f *flight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		select {
		case <-f.done: // both happened: the answer is worth more
			return f.err
		default:
			return ctx.Err()
		}
	}
}

// startLocked records a new Check as the one in flight and as the last to
// begin; the caller runs it with run once h.mu is released.
func (h *health) startLocked() *flight {
	f := &flight{done: make(chan struct{})}
	h.flight = f
	h.started = time.Now()
	return f
}

// run makes the Check of f on a context of its own: ctx's values without
// its cancellation, bounded by the timeout. It keeps the answer, unless the
// client was destroyed meanwhile (a Check cut short by Destroy closing the
// connection is no answer of the backend's), and then lets f's waiters go.
func (c *Client[T]) run(ctx context.Context, f *flight) {
	h := c.health
	cctx, cancel := context.WithTimeout(withOwnRPC(context.WithoutCancel(ctx)), h.timeout)
	resp, err := healthpb.NewHealthClient(c.conn).Check(cctx, &healthpb.HealthCheckRequest{Service: h.service}, grpc.WaitForReady(false))
	cancel()
	switch {
	case err != nil:
		err = fmt.Errorf("grpcpool: health check of %s (service %q): %w", c.target, h.service, err)
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		err = fmt.Errorf("%w: %s (service %q) says %v", ErrNotServing, c.target, h.service, resp.GetStatus())
	}
	f.err = err
	h.mu.Lock()
	h.flight = nil
	if !h.destroyed.Load() {
		h.err, h.answered = err, true
		// Under h.mu, so that the factory's view of the target follows the
		// order of this client's answers.
		h.targets.checked(c.target, err)
	}
	h.mu.Unlock()
	close(f.done)
}

// check waits for a fresh answer, bounded by ctx: that of the Check in
// flight, or of one it starts.
func (c *Client[T]) check(ctx context.Context) error {
	h := c.health
	h.mu.Lock()
	f := h.flight
	if f == nil {
		f = h.startLocked()
		h.mu.Unlock()
		go c.run(ctx, f)
	} else {
		h.mu.Unlock()
	}
	return f.wait(ctx)
}

// serving returns the backend's last health answer (see Serving), and the
// Check it started and waited for, if it did: nil if none.
func (c *Client[T]) serving(ctx context.Context) (*flight, error) {
	h := c.health
	if h == nil {
		return nil, nil
	}
	h.mu.Lock()
	if h.flight != nil || time.Since(h.started) < h.interval {
		err := h.err
		h.mu.Unlock()
		return nil, err
	}
	f := h.startLocked()
	h.mu.Unlock()
	go c.run(ctx, f)
	return f, f.wait(ctx)
}

// HealthErr returns the backend's last grpc.health.v1 answer as Serving
// does, but never starts a Check or waits: nil for SERVING, before the
// first answer, and without HealthCheck. Safe for concurrent use.
func (c *Client[T]) HealthErr() error {
	h := c.health
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Healthy reports whether the client's connection is READY and, with
// HealthCheck, its backend's last grpc.health.v1 answer was SERVING: a
// client whose backend was never checked is not known healthy then. It
// never starts a Check or waits. Safe for concurrent use.
func (c *Client[T]) Healthy() bool {
	if c.conn.GetState() != connectivity.Ready {
		return false
	}
	h := c.health
	if h == nil {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.answered && h.err == nil
}

// Serving returns the backend's last grpc.health.v1 answer as Conn uses it:
// nil for SERVING (and before the first answer), an error wrapping
// ErrNotServing (or the failed Check's error) otherwise.
//
// When no Check of the client is in flight and the last one began
// HealthCheck.Interval ago or more (or there was none), Serving starts one
// and waits for its answer; meanwhile other callers get the last answer at
// once, so Checks of a client never overlap and begin at most once per
// Interval. The Check runs on a context of its own, with ctx's values but
// not its cancellation, bounded by HealthCheck.Timeout: if ctx ends first,
// Serving returns ctx.Err() and the Check goes on, and its answer, not the
// caller's giving up, is what later callers get. Without HealthCheck it
// returns nil at once.
func (c *Client[T]) Serving(ctx context.Context) error {
	_, err := c.serving(ctx)
	return err
}

// Down reports whether gRPC reports the client's connection down, so that
// no RPC is to be sent on it: it is in TRANSIENT_FAILURE or SHUTDOWN, or it
// lost the transport it had while READY and has not been READY since (gRPC
// reports IDLE then, CONNECTING while it tries again, and
// TRANSIENT_FAILURE once that failed). An RPC sent then would fail, or
// wait for a backend that is gone, while gRPC already knows. A connection
// that has not been READY since Make, or since Activate reconnected it, is
// not down while it connects: RPCs wait for it as gRPC makes them.
//
// Borrow, Conn and Release lend no share of a connection that is down: they
// invalidate it, so that the pool lends it to nobody else and closes it
// once its other leases are back. The discovery Router does the same. Down
// reads the connection's state as gRPC reports it at the call; it is safe
// for concurrent use.
func (c *Client[T]) Down() bool {
	switch c.conn.GetState() {
	case connectivity.Ready:
		// Recorded here too, not only by a connect: a connection made
		// without ConnectTimeout is seen READY by the lends and releases
		// of its RPCs.
		if !c.wasReady.Load() {
			c.wasReady.Store(true)
		}
		return false
	case connectivity.TransientFailure, connectivity.Shutdown:
		return true
	default:
		return c.wasReady.Load()
	}
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
	broken, _ := c.Classify(err)
	return broken
}

// Classify is Broken for callers that give the client back and can report
// a panic: a Classifier that panics says broken (the connection cannot be
// judged), and the panic is returned as an error wrapping
// keyedpool.ErrFactoryPanic; nil otherwise. Conn, Release and the
// discovery Router give clients back through it. Safe for concurrent use.
func (c *Client[T]) Classify(err error) (broken bool, perr error) {
	if err == nil {
		return false, nil
	}
	defer func() {
		if v := recover(); v != nil {
			broken, perr = true, &keyedpool.PanicError{Method: "Classifier", Value: v, Stack: debug.Stack()}
		}
	}()
	return c.classify(err, c.conn.GetState()), nil
}

// DefaultClassifier is the rule Conn and Release use unless
// Config.Classifier replaces it: an error means the connection is broken
// when its status code is Unavailable and the connection is not READY just
// after the RPC failed. gRPC fails RPCs with Unavailable when the transport
// breaks (the backend went away, the connection reset, a keepalive went
// unanswered) or cannot be made, and moves the connection out of READY: to
// IDLE, CONNECTING or TRANSIENT_FAILURE. That move reaches the connection's
// state from a goroutine of gRPC's own and can come after the RPC has
// failed, so a connection whose transport broke may still be READY then and
// be kept: gRPC reconnects it for its next RPC, and an RPC that fails while
// it is not READY has it invalidated. An Unavailable a handler
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
		return nil, fmt.Errorf("grpcpool: target for key %v: %w", key, err)
	}
	c := &Client[T]{key: key, target: target, classify: f.r.classify}
	opts := make([]grpc.DialOption, 0, len(f.r.dialOpts)+3)
	opts = append(opts, grpc.WithTransportCredentials(capCreds{f.r.creds, &c.streams}))
	opts = append(opts, f.r.dialOpts...)
	if f.r.observer != nil {
		opts = append(opts, observeOptions(target, f.r.observer)...)
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpcpool: new client for %s: %w", target, err)
	}
	if f.r.connect > 0 {
		if err := f.connect(ctx, cc); err != nil {
			cc.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrConnect, target, err)
		}
	}
	made := false
	defer func() {
		if !made {
			cc.Close() // NewStub panicked: the pool reports it, the connection must not outlive it
		}
	}()
	c.conn, c.stub = cc, f.newStub(cc)
	made = true
	c.wasReady.Store(f.r.connect > 0) // connect returned READY
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
// TRANSIENT_FAILURE or SHUTDOWN. With HealthCheck it then waits for a fresh
// answer of the backend's health service: that of the client's Check in
// flight, or of a new one whatever HealthCheck.Interval says. An answer
// other than SERVING is an error wrapping ErrNotServing, a failed Check
// (HealthCheck.Timeout bounds it) an error wrapping its status. The Check
// runs on a context of its own, as for Serving: when ctx ends first,
// Validate returns ctx.Err() as is, and the Check goes on and keeps its
// answer for Conn.
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
// that the pool never lends a connection that has not connected. A
// connection that is not READY starts afresh: one that lost its transport
// while idle (its backend went away, or IdleTimeout passed) is not Down
// while it connects again.
func (f *Factory[K, T]) Activate(ctx context.Context, _ K, c *Client[T]) error {
	if err := usable(c); err != nil {
		return err
	}
	s := c.conn.GetState()
	if s != connectivity.Ready {
		// Nobody holds an idle client: this reconnect is its own, as a
		// new client's first connect is. (A Router's look at its
		// endpoints may call Down meanwhile and record an older READY:
		// the connection then looks down at its lend, which replaces it.)
		c.wasReady.Store(false)
	}
	switch {
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
	c.wasReady.Store(true)
	return nil
}

// Passivate does nothing: a returned client needs no reset.
func (f *Factory[K, T]) Passivate(context.Context, K, *Client[T]) error { return nil }

// Borrow lends a client of key from p as p.Borrow does, bounded by ctx and
// the pool's MaxWait, but never one whose connection is down
// (Client.Down): such a lease is given back with Invalidate, so that the
// pool lends that connection to nobody else and closes it once its other
// leases are back, and Borrow asks again. The pool lends a share of a lent
// connection without asking the factory (no Activate, no Validate), so with
// shared leases this is where a connection that went down under its RPCs
// stops being lent. Each connection passed over is lent no more; after
// maxDownLeases of them in a row (connections going down as fast as they
// are made) Borrow fails with an error wrapping ErrUnusable. Safe for
// concurrent use.
func Borrow[K comparable, T any](ctx context.Context, p *keyedpool.Pool[K, *Client[T]], key K) (*keyedpool.Pooled[K, *Client[T]], error) {
	for range maxDownLeases {
		h, err := p.Borrow(ctx, key)
		if err != nil {
			return nil, err
		}
		if !h.Value().Down() {
			return h, nil
		}
		// A destroy error, of a connection already down: nothing the
		// borrower can act on.
		_ = p.Invalidate(h)
	}
	return nil, fmt.Errorf("%w: key %v: %d connections lent in a row were down", ErrUnusable, key, maxDownLeases)
}

// maxDownLeases bounds the down connections one Borrow passes over. Each
// is invalidated, so a key's connections that went down together (their
// backend crashed) are passed over in one Borrow as long as MaxTotalPerKey
// is below it.
const maxDownLeases = 64

// Release gives back a client borrowed from p (with Borrow, or p.Borrow),
// after the RPCs made with it: it invalidates the client when err (the
// last RPC's error, or nil) means its connection is broken (Client.Broken)
// or when its connection is down (Client.Down), so that it is lent no more,
// and returns it otherwise. It returns the pool's error, and, if the
// Classifier panicked (the client is invalidated then), an error wrapping
// keyedpool.ErrFactoryPanic.
func Release[K comparable, T any](p *keyedpool.Pool[K, *Client[T]], h *keyedpool.Pooled[K, *Client[T]], err error) error {
	if h == nil {
		return p.Return(h)
	}
	broken, perr := h.Value().Classify(err)
	if broken || h.Value().Down() {
		return errors.Join(p.Invalidate(h), perr)
	}
	return p.Return(h)
}
