package grpcpool

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/keyedpool"
)

// Conn is a grpc.ClientConnInterface for one key, backed by a pool of
// clients, so that generated stubs work unchanged over the pool:
//
//	conn := grpcpool.NewConn(pool, "10.0.0.7:443")
//	foo := pb.NewFooClient(conn)
//	resp, err := foo.Bar(ctx, req) // one share of the busiest connection with room
//
// Each unary RPC borrows a share of a connection of the key for as long as
// it runs. A stream holds its share until it ends: RecvMsg returns an error
// (io.EOF included) or, for a stream with one response, that response;
// Header or SendMsg returns an error other than io.EOF; or the stream's
// context ends. Callers must end their streams in one of these ways, as
// gRPC itself asks, or the share is never given back.
//
// No RPC is sent on a connection gRPC reports down (Client.Down: in
// TRANSIENT_FAILURE, or its transport lost and not READY since): each RPC
// borrows with Borrow, which invalidates such a connection and takes
// another, or makes one. When an RPC's error means its connection is
// broken (Client.Broken, by the factory's Classifier), or its connection
// went down meanwhile, the share is given back with Invalidate: the
// connection is lent no more and closed once its other RPCs end. Otherwise
// it is returned.
//
// Make the pool with MaxSharesPerObject at keyedpool.MaxShares: each
// connection learns how many streams its server allows (Client.ShareCap)
// and the pool lends it no more RPCs than that, so none queues inside gRPC
// for a stream, and opens another connection only when every connection of
// the key is full, up to MaxTotalPerKey. A lower MaxSharesPerObject bounds
// each connection further. With exclusive leases (MaxSharesPerObject 1) a
// Conn still works, with one RPC per connection at a time.
//
// With the factory's HealthCheck, an RPC on a connection whose backend last
// answered other than SERVING fails at once with Unavailable, wrapping
// ErrNotServing, without being sent. The answer is asked again at most once
// per HealthCheck.Interval (see Client.Serving): the RPC that starts the
// Check waits for its answer, bounded by its own context (it fails with
// DeadlineExceeded or Canceled if that ends first, and the Check goes on);
// the others use the last answer.
//
// With the pool's Abandoned tracking, a stream marks its share used at every
// message it sends or receives; a unary RPC cannot, so make Abandoned.Timeout
// longer than any RPC's deadline.
//
// A Conn is safe for concurrent use and holds nothing of its own. Closing
// the pool does not end RPCs or streams in flight: Close waits for their
// shares, bounded by its context, so end them (cancel their contexts)
// first.
type Conn[K comparable, T any] struct {
	pool   *keyedpool.Pool[K, *Client[T]]
	key    K
	lender Lender[K, T] // nil: borrow key from pool
}

var _ grpc.ClientConnInterface = (*Conn[string, int])(nil)

// A Lender lends the clients a Conn made with NewLenderConn sends its RPCs
// over, so that something other than one fixed key (a router that picks an
// endpoint per RPC, say) decides where each RPC goes. Its methods must be
// safe for concurrent use.
type Lender[K comparable, T any] interface {
	// Borrow lends a client for one RPC or stream, bounded by ctx. Its
	// error fails the RPC as a failed pool Borrow does (see Conn.Invoke).
	Borrow(ctx context.Context) (*keyedpool.Pooled[K, *Client[T]], error)
	// Release gives h back once its RPC or stream has ended with err (nil
	// on success, or when the RPC was not sent). Release decides between
	// Return and Invalidate; Client.Classify tells whether err means the
	// connection is broken. It returns Classify's panic error, if any,
	// which the RPC's caller gets with the RPC's error; nil otherwise.
	Release(h *keyedpool.Pooled[K, *Client[T]], err error) error
}

// NewConn returns a Conn that sends the RPCs for key over p's clients.
func NewConn[K comparable, T any](p *keyedpool.Pool[K, *Client[T]], key K) *Conn[K, T] {
	return &Conn[K, T]{pool: p, key: key}
}

// NewLenderConn returns a Conn that borrows the client of each RPC and
// stream from l and gives it back to l, with everything else as for a Conn
// made with NewConn: shares held for as long as the RPC or stream runs,
// health answers, status codes of failed borrows.
func NewLenderConn[K comparable, T any](l Lender[K, T]) *Conn[K, T] {
	return &Conn[K, T]{lender: l}
}

// Key returns the key the Conn sends RPCs for; the zero K for a Conn made
// with NewLenderConn, whose lender picks the key of each RPC.
func (c *Conn[K, T]) Key() K { return c.key }

// borrow lends a client for one RPC or stream.
func (c *Conn[K, T]) borrow(ctx context.Context) (*keyedpool.Pooled[K, *Client[T]], error) {
	if c.lender != nil {
		return c.lender.Borrow(ctx)
	}
	return Borrow(ctx, c.pool, c.key)
}

// Invoke borrows a share of a connection of the key, bounded by ctx and the
// pool's MaxWait, and makes the unary RPC on it. A failed Borrow fails the
// RPC with a status error that wraps the pool's error, so that both
// status.Code and errors.Is work on it: Canceled or DeadlineExceeded when
// ctx ended, ResourceExhausted for keyedpool.ErrExhausted, Canceled for
// keyedpool.ErrClosed, and Unavailable when no connection could be made or
// validated (ErrConnect, ErrNotServing, ...).
func (c *Conn[K, T]) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	h, err := c.borrow(ctx)
	if err != nil {
		return borrowStatus(ctx, err)
	}
	if f, err := h.Value().serving(ctx); err != nil {
		c.releaseAfter(h, f) // not sent: the connection is not to blame
		return borrowStatus(ctx, err)
	}
	err = h.Value().conn.Invoke(ctx, method, args, reply, opts...)
	return joinPanic(err, c.release(h, err))
}

// NewStream borrows a share of a connection of the key, as Invoke (whose
// errors it shares), and opens the stream on it. The share is given back
// when the stream ends (see Conn).
func (c *Conn[K, T]) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	h, err := c.borrow(ctx)
	if err != nil {
		return nil, borrowStatus(ctx, err)
	}
	if f, err := h.Value().serving(ctx); err != nil {
		c.releaseAfter(h, f) // not sent: the connection is not to blame
		return nil, borrowStatus(ctx, err)
	}
	cs, err := h.Value().conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, joinPanic(err, c.release(h, err))
	}
	s := &stream[K, T]{ClientStream: cs, conn: c, h: h, oneResponse: !desc.ServerStreams}
	// The callback runs in its own goroutine when ctx ends; stop, called
	// when the stream ends first, unregisters it. Neither leaves a
	// goroutine behind.
	s.stop = context.AfterFunc(ctx, func() { s.end(nil, true) })
	return s, nil
}

// release gives back a share after an RPC that returned err. It returns
// the error of a Classifier that panicked (the connection is invalidated
// then: it cannot be judged), for the RPC's caller; nil otherwise.
func (c *Conn[K, T]) release(h *keyedpool.Pooled[K, *Client[T]], err error) error {
	if c.lender != nil {
		return c.lender.Release(h, err)
	}
	broken, perr := h.Value().Classify(err)
	// The pool's own errors here can only be a destroy error (closing the
	// connection), which the RPC's caller can do nothing about.
	if broken || h.Value().Down() {
		_ = c.pool.Invalidate(h)
	} else {
		_ = c.pool.Return(h)
	}
	return perr
}

// releaseAfter gives back a share of a connection on which nothing was
// sent, once f, a health Check the borrower started and gave up waiting
// for, has ended: until then the Check holds one of the connection's
// streams, which the share stands for, so that no RPC lent it queues
// inside gRPC for a stream.
func (c *Conn[K, T]) releaseAfter(h *keyedpool.Pooled[K, *Client[T]], f *flight) {
	if f == nil {
		c.release(h, nil)
		return
	}
	select {
	case <-f.done:
		c.release(h, nil)
	default:
		go func() { // ends with the Check, within HealthCheck.Timeout
			<-f.done
			c.release(h, nil)
		}()
	}
}

// joinPanic adds perr, a user callback's panic, to err, an RPC's error.
func joinPanic(err, perr error) error {
	if perr == nil {
		return err
	}
	return errors.Join(err, perr)
}

// stream is a ClientStream that gives its share back, once, when it ends.
type stream[K comparable, T any] struct {
	grpc.ClientStream
	conn        *Conn[K, T]
	h           *keyedpool.Pooled[K, *Client[T]]
	oneResponse bool        // the stream ends with its first response
	stop        func() bool // unregisters the context callback
	ended       atomic.Bool
}

// end gives the share back unless that was done already; byCtx says the
// stream's context callback calls it. It returns release's.
func (s *stream[K, T]) end(err error, byCtx bool) error {
	if !s.ended.CompareAndSwap(false, true) {
		return nil
	}
	if !byCtx {
		s.stop()
	}
	return s.conn.release(s.h, err)
}

// RecvMsg ends the stream, as gRPC does, on an error or on the response of
// a stream that has one.
func (s *stream[K, T]) RecvMsg(m any) error {
	s.h.MarkUsed()
	err := s.ClientStream.RecvMsg(m)
	switch {
	case errors.Is(err, io.EOF):
		s.end(nil, false)
	case err != nil || s.oneResponse:
		err = joinPanic(err, s.end(err, false))
	}
	return err
}

// SendMsg ends the stream, as gRPC does, on an error other than io.EOF
// (which says the stream ended and RecvMsg has its status).
func (s *stream[K, T]) SendMsg(m any) error {
	s.h.MarkUsed()
	err := s.ClientStream.SendMsg(m)
	if err != nil && !errors.Is(err, io.EOF) {
		err = joinPanic(err, s.end(err, false))
	}
	return err
}

// Header ends the stream, as gRPC does, on an error.
func (s *stream[K, T]) Header() (md metadata.MD, err error) {
	md, err = s.ClientStream.Header()
	if err != nil {
		err = joinPanic(err, s.end(err, false))
	}
	return md, err
}

// borrowError is a failed Borrow as an RPC error: gRPC's status functions
// see its code, errors.Is and errors.As see the pool's error.
type borrowError struct {
	code codes.Code
	err  error
}

func (e *borrowError) Error() string { return "grpcpool: borrow: " + e.err.Error() }

func (e *borrowError) Unwrap() error { return e.err }

// GRPCStatus makes status.Code and status.FromError report e's code.
func (e *borrowError) GRPCStatus() *status.Status { return status.New(e.code, e.Error()) }

// borrowStatus turns the error of a Borrow with ctx into an RPC error whose
// status code says what went wrong: Canceled or DeadlineExceeded when ctx
// ended, ResourceExhausted when the pool was exhausted (WhenExhausted Fail,
// or MaxWait passed), Canceled when the pool is closed, and Unavailable when
// no connection could be made or validated (the connect or health error is
// wrapped).
func borrowStatus(ctx context.Context, err error) error {
	code := codes.Unavailable
	switch {
	case ctx.Err() != nil && err == ctx.Err():
		code = status.FromContextError(err).Code()
	case errors.Is(err, keyedpool.ErrExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, keyedpool.ErrClosed):
		code = codes.Canceled
	}
	return &borrowError{code: code, err: err}
}
