package keyedpool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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
	p.c.background[op]++
	sp.c.background[op]++
	p.mu.Unlock()
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
// object, so that Return allocates and costs nothing: it is armed (a Done
// channel and a timer of FactoryTimeout) only when the factory first asks
// for its deadline, Done channel or Err. A Return belongs to the lease
// before it, so the object's lease count, which the pool keeps under its
// lock anyway, tells one Return's calls from the next's: a look during a
// later Return arms afresh. A goroutine that kept the context past its call
// may see a later call's channel, which is why FactoryTimeout's doc says
// the context is for the call only.
type returnCtx struct {
	cfg    *atomic.Pointer[Config] // the pool's: FactoryTimeout when armed
	poolMu *sync.Mutex             // the pool's mu, which protects *leases
	leases *int64                  // the object's lease count: the Return in progress

	mu       sync.Mutex // protects the fields below
	armed    uint64     // the call the fields below belong to
	done     chan struct{}
	deadline time.Time
	err      error
}

var _ context.Context = (*returnCtx)(nil)

// arm returns the state of the current call, arming it on the first look.
func (c *returnCtx) arm() (chan struct{}, time.Time, error) {
	c.poolMu.Lock()
	call := uint64(*c.leases)
	c.poolMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil || c.armed != call {
		c.armed, c.done, c.err, c.deadline = call, make(chan struct{}), nil, time.Time{}
		if d := c.cfg.Load().FactoryTimeout; d > 0 {
			c.deadline = time.Now().Add(d)
			done := c.done
			time.AfterFunc(d, func() {
				c.mu.Lock()
				if c.done == done && c.err == nil {
					c.err = context.DeadlineExceeded
					close(done)
				}
				c.mu.Unlock()
			})
		}
	}
	return c.done, c.deadline, c.err
}

func (c *returnCtx) Deadline() (time.Time, bool) {
	_, d, _ := c.arm()
	return d, !d.IsZero()
}

func (c *returnCtx) Done() <-chan struct{} {
	done, _, _ := c.arm()
	return done
}

func (c *returnCtx) Err() error {
	_, _, err := c.arm()
	return err
}

func (c *returnCtx) Value(any) any { return nil }
