package keyedpool

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Op names the operation an error of background work came from (see
// Config.SwallowedErrorListener).
type Op uint8

const (
	OpMake           Op = iota // KeyedFactory.Make
	OpDestroy                  // KeyedFactory.Destroy
	OpActivate                 // KeyedFactory.Activate
	OpValidate                 // KeyedFactory.Validate
	OpPassivate                // KeyedFactory.Passivate
	OpEvictionPolicy           // Config.EvictionPolicy's Evict panicked
	numOps
)

// String returns the operation's name in lower case: "make", "destroy",
// "activate", "validate", "passivate" or "eviction_policy".
func (op Op) String() string {
	switch op {
	case OpMake:
		return "make"
	case OpDestroy:
		return "destroy"
	case OpActivate:
		return "activate"
	case OpValidate:
		return "validate"
	case OpPassivate:
		return "passivate"
	case OpEvictionPolicy:
		return "eviction_policy"
	}
	return fmt.Sprintf("Op(%d)", uint8(op))
}

// BackgroundErrors counts the errors of work no caller waited for, by the
// operation that failed (see Config.SwallowedErrorListener).
type BackgroundErrors struct {
	Make, Destroy, Activate, Validate, Passivate, EvictionPolicy int64
}

// Total returns the sum of all operations' counts.
func (b BackgroundErrors) Total() int64 {
	return b.Make + b.Destroy + b.Activate + b.Validate + b.Passivate + b.EvictionPolicy
}

// Of returns the count for op, 0 for an unknown op.
func (b BackgroundErrors) Of(op Op) int64 {
	switch op {
	case OpMake:
		return b.Make
	case OpDestroy:
		return b.Destroy
	case OpActivate:
		return b.Activate
	case OpValidate:
		return b.Validate
	case OpPassivate:
		return b.Passivate
	case OpEvictionPolicy:
		return b.EvictionPolicy
	}
	return 0
}

// swallow counts err, which op on sp's key hit in work no caller waits
// for, and hands it to the listener, if any. Called without p.mu.
func (p *Pool[K, V]) swallow(sp *subPool[K, V], op Op, err error) {
	if err == nil {
		return
	}
	p.mu.Lock()
	p.c.backgroundError(op)
	sp.c.backgroundError(op)
	p.unlock()
	if l := p.cfg.Load().SwallowedErrorListener; l != nil {
		func() {
			defer func() { _ = recover() }() // the listener's own failure has nowhere to go
			l.OnSwallowedError(sp.key, op, err)
		}()
	}
}

// bounded returns the context for a factory call that no caller's context
// bounds, derived from parent: it ends FactoryTimeout after now, unless
// FactoryTimeout is negative. Call the cancel function when the call ends.
func (p *Pool[K, V]) bounded(parent context.Context) (context.Context, context.CancelFunc) {
	if d := p.cfg.Load().FactoryTimeout; d > 0 {
		return context.WithTimeout(parent, d)
	}
	return parent, func() {}
}

// returnCtx is the context of Passivate and Validate at Return, one per
// object and part of it, so that Return allocates and costs nothing: it is
// armed (a Done channel and a timer of FactoryTimeout) only when the
// factory first asks for its deadline, Done channel or Err. A Return
// belongs to the lease before it, so the object's lease count, which the
// pool keeps under its lock anyway, tells one Return's calls from the
// next's: a look during a later Return arms afresh. A goroutine that kept
// the context past its call may see a later call's channel, which is why
// FactoryTimeout's doc says the context is for the call only.
type returnCtx[K comparable, V any] struct {
	obj   *object[K, V]
	armed *armedCtx // the last armed call; protected by the pool's mu
}

// armedCtx is the state of one armed returnCtx call.
type armedCtx struct {
	call     int64 // the object's lease count when armed
	deadline time.Time

	mu   sync.Mutex // protects the fields below
	done chan struct{}
	err  error
}

var _ context.Context = (*returnCtx[string, int])(nil)

// arm returns the current call's state, arming it on the first look.
func (c *returnCtx[K, V]) arm() *armedCtx {
	p := c.obj.sub.pool
	p.mu.Lock()
	defer p.unlock()
	if a := c.armed; a != nil && a.call == c.obj.borrows {
		return a
	}
	a := &armedCtx{call: c.obj.borrows, done: make(chan struct{})}
	if d := p.cfg.Load().FactoryTimeout; d > 0 {
		a.deadline = time.Now().Add(d)
		time.AfterFunc(d, func() {
			a.mu.Lock()
			a.err = context.DeadlineExceeded
			close(a.done)
			a.mu.Unlock()
		})
	}
	c.armed = a
	return a
}

func (c *returnCtx[K, V]) Deadline() (time.Time, bool) {
	a := c.arm()
	return a.deadline, !a.deadline.IsZero()
}

func (c *returnCtx[K, V]) Done() <-chan struct{} { return c.arm().done }

func (c *returnCtx[K, V]) Err() error {
	a := c.arm()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (c *returnCtx[K, V]) Value(any) any { return nil }
