package keyedpool

import (
	"context"
	"time"

	"github.com/kpool-go/kpool/internal/ilist"
)

// waiter is a blocked borrower. Waiters are reused; a grant is set under the
// pool's lock and announced on ready, which holds at most one token.
type waiter[K comparable, V any] struct {
	sub      *subPool[K, V]
	ticket   uint64 // the borrower's place in line, kept if it must wait again
	g        grant[K, V]
	ready    chan struct{}
	timer    *time.Timer
	keyLinks ilist.Links[waiter[K, V]] // in sub.waiters
	allLinks ilist.Links[waiter[K, V]] // in pool.waiters
	next     *waiter[K, V]             // in pool.freeWaiter
}

func wKeyLinks[K comparable, V any](w *waiter[K, V]) *ilist.Links[waiter[K, V]] { return &w.keyLinks }

func wAllLinks[K comparable, V any](w *waiter[K, V]) *ilist.Links[waiter[K, V]] { return &w.allLinks }

// wait queues a borrower of sp and blocks until it is granted something, ctx
// ends or the Borrow's deadline (b, MaxWait) passes. A borrower that waited
// before goes back to its place in line. Called with p.mu held; returns
// with it released.
func (p *Pool[K, V]) wait(ctx context.Context, sp *subPool[K, V], b *borrowState) (grant[K, V], error) {
	var left time.Duration
	if deadline := b.start(p.cfg.Load().MaxWait); !deadline.IsZero() {
		if left = time.Until(deadline); left <= 0 {
			p.dropIfEmptyLocked(sp)
			p.mu.Unlock()
			return grant[K, V]{}, ErrExhausted
		}
	}
	w := p.freeWaiter
	if w != nil {
		p.freeWaiter = w.next
		w.next = nil
	} else {
		w = &waiter[K, V]{ready: make(chan struct{}, 1)}
	}
	w.sub = sp
	if b.ticket == 0 {
		p.tickets++
		b.ticket = p.tickets
		sp.waiters.PushBack(w)
		p.waiters.PushBack(w)
	} else {
		p.requeueLocked(w, b.ticket)
	}
	w.ticket = b.ticket
	p.mu.Unlock()

	start := time.Now()
	var timeout <-chan time.Time
	if left > 0 {
		if w.timer == nil {
			w.timer = time.NewTimer(left)
		} else {
			w.timer.Reset(left)
		}
		timeout = w.timer.C
	}
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = ErrExhausted
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	d := time.Since(start)

	p.mu.Lock()
	first := !b.waitedBefore
	b.waitedBefore = true
	b.waited += d
	p.c.wait(d, b.waited, first)
	sp.c.wait(d, b.waited, first)
	if err != nil && w.allLinks.In() {
		// Gave up before anything was granted.
		p.unwaitLocked(w)
		p.dropIfEmptyLocked(sp)
		p.putWaiterLocked(w)
		p.mu.Unlock()
		return grant[K, V]{}, err
	}
	if err != nil {
		// A grant raced with giving up; it was sent under the lock, so it
		// is in ready now. Take it and hand it back.
		<-w.ready
	}
	g := w.g
	p.putWaiterLocked(w)
	p.mu.Unlock()
	if err != nil {
		p.undo(sp, g)
		return grant[K, V]{}, err
	}
	return g, nil
}

// requeueLocked puts w, a borrower that waited before with ticket, back in
// line at its place: ahead of every waiter that came after it. The lists
// are kept in ticket order, and such a borrower was served recently, so the
// walk is short.
func (p *Pool[K, V]) requeueLocked(w *waiter[K, V], ticket uint64) {
	var mark *waiter[K, V]
	for o := w.sub.waiters.Front(); o != nil; o = w.sub.waiters.Next(o) {
		if o.ticket > ticket {
			mark = o
			break
		}
	}
	if mark != nil {
		w.sub.waiters.InsertBefore(w, mark)
	} else {
		w.sub.waiters.PushBack(w)
	}
	mark = nil
	for o := p.waiters.Front(); o != nil; o = p.waiters.Next(o) {
		if o.ticket > ticket {
			mark = o
			break
		}
	}
	if mark != nil {
		p.waiters.InsertBefore(w, mark)
	} else {
		p.waiters.PushBack(w)
	}
}

func (p *Pool[K, V]) unwaitLocked(w *waiter[K, V]) {
	w.sub.waiters.Remove(w)
	p.waiters.Remove(w)
}

func (p *Pool[K, V]) putWaiterLocked(w *waiter[K, V]) {
	w.g, w.sub = grant[K, V]{}, nil
	w.next = p.freeWaiter
	p.freeWaiter = w
}

// grantLocked hands g to w, which leaves the queues.
func (p *Pool[K, V]) grantLocked(w *waiter[K, V], g grant[K, V]) {
	p.unwaitLocked(w)
	w.g = g
	w.ready <- struct{}{} // never blocks: one grant per wait, and ready is drained before reuse
}

// serveKeyLocked lends what sp has to lend to its waiters, in order.
func (p *Pool[K, V]) serveKeyLocked(sp *subPool[K, V]) {
	for w := sp.waiters.Front(); w != nil; w = sp.waiters.Front() {
		g := p.lendLocked(sp)
		if g.lease == nil {
			return
		}
		p.grantLocked(w, g)
	}
}

// serveIdleLocked serves waiters after an idle object of sp became
// lendable.
func (p *Pool[K, V]) serveIdleLocked(sp *subPool[K, V]) {
	if p.waiters.Len() > 0 {
		// Borrowers of other keys that have waited longer than this key's
		// first waiter get the object's room if they need it, so a busy key
		// cannot starve them; then this key's waiters get what is left.
		p.dispatchAheadLocked(sp)
		p.serveKeyLocked(sp)
	}
}

// dispatchLocked serves waiters of every key, first come first served, after
// room freed or idle objects appeared: the longest waiting borrower whose key
// can take an object gets it. A waiter whose key is at MaxTotalPerKey does
// not hold up the others.
func (p *Pool[K, V]) dispatchLocked() { p.dispatchAheadLocked(nil) }

// dispatchAheadLocked is dispatchLocked for the waiters ahead of the first
// waiter of stop (all waiters if stop has none or is nil).
func (p *Pool[K, V]) dispatchAheadLocked(stop *subPool[K, V]) {
	for w := p.waiters.Front(); w != nil && w.sub != stop; {
		next := p.waiters.Next(w)
		if g := p.tryLocked(w.sub, true); g.ok() {
			p.grantLocked(w, g)
		}
		w = next
	}
}

// undo gives back a grant to sp's borrower who no longer wants it.
func (p *Pool[K, V]) undo(sp *subPool[K, V], g grant[K, V]) {
	switch {
	case g.lease != nil && g.fresh:
		// Taken from the idle set and not yet activated: it goes back
		// where it was, without a factory call.
		obj := g.lease.obj
		p.mu.Lock()
		p.unleaseLocked(g.lease, false)
		if p.shared {
			sp.activating--
		}
		r, destroy := p.putLocked(obj, true)
		p.mu.Unlock()
		if destroy {
			p.destroyBackground(obj, r)
		}
	case g.lease != nil:
		p.giveBack(g.lease, false, true)
	case g.reserved:
		// The victim, if any, is still whole: put it back rather than
		// destroy it for nothing.
		var r reason
		destroy := false
		p.mu.Lock()
		sp.making--
		p.making--
		sp.bo.endProbe() // if this was the probe, it never ran
		if g.victim != nil {
			// The reservation's room goes back to the victim, in one step,
			// so that neither waiters nor the surplus check see both.
			p.victims--
			sp.count--
			p.total--
			r, destroy = p.putLocked(g.victim, true)
			p.roomFreedLocked(sp)
		} else {
			p.unreserveLocked(sp)
		}
		p.mu.Unlock()
		if destroy {
			p.destroyBackground(g.victim, r)
		}
	}
}
