package keyedpool

import (
	"context"
	"math"
	"time"
)

// wait queues a borrower of sp and blocks until it is granted something, ctx
// ends or the Borrow's deadline (b, MaxWait) passes. A borrower that waited
// before goes back to its place in line. With sweep, abandoned objects are
// taken back once it is queued, before it blocks. Called with p.mu held;
// returns with it released.
func (p *Pool[K, V]) wait(ctx context.Context, sp *subPool[K, V], b *borrowState[K, V], sweep *AbandonedConfig) (grant[K, V], error) {
	var left time.Duration
	if deadline := b.start(p.cfg.Load().MaxWait); !deadline.IsZero() {
		if left = time.Until(deadline); left <= 0 {
			p.dropIfEmptyLocked(sp)
			p.unlock()
			return grant[K, V]{}, ErrExhausted
		}
	}
	w := p.wq.get()
	b.ticket = p.wq.add(w, sp, b.ticket)
	p.unlock()
	if sweep != nil {
		p.removeAbandoned(sweep, p.since())
	}

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
	if err != nil && w.links.In() {
		// Gave up before anything was granted.
		p.wq.remove(w)
		p.dropIfEmptyLocked(sp)
		p.wq.put(w)
		p.unlock()
		return grant[K, V]{}, err
	}
	if err != nil {
		// A grant raced with giving up; it was sent under the lock, so it
		// is in ready now. Take it and hand it back.
		<-w.ready
	}
	g := w.g
	p.wq.put(w)
	if g.err != nil {
		// Failed (Close, Fail): the key may hold nothing now, with
		// nobody waiting.
		p.dropIfEmptyLocked(sp)
	}
	p.unlock()
	if err != nil {
		p.undo(sp, g)
		return grant[K, V]{}, err
	}
	return g, nil
}

// grantLocked hands g to w, which leaves the queues.
func (p *Pool[K, V]) grantLocked(w *waiter[K, V], g grant[K, V]) {
	p.wq.remove(w)
	w.g = g
	p.wq.wake(w)
}

// unlock ends a locked section: it serves the waiters a make or activation
// that ended in it may have let in (see activatedLocked), releases mu, then
// wakes the waiters that were granted something while it was held. They are woken after the lock is released, not under
// it, so that a woken borrower does not run only to block on mu again.
func (p *Pool[K, V]) unlock() {
	if p.redispatch {
		p.redispatch = false
		if p.wq.Len() > 0 {
			p.dispatchLocked()
		}
	}
	if !p.shared {
		p.lanesLocked()
	}
	w := p.wq.woken
	if w == nil {
		p.mu.Unlock()
		return
	}
	p.wq.woken, p.wq.wokenLast = nil, nil
	p.mu.Unlock()
	for w != nil {
		next := w.next
		w.next = nil          // before the send: once woken, its borrower may reuse w
		w.ready <- struct{}{} // never blocks: one grant per wait, and ready is drained before reuse
		w = next
	}
}

// serveKeyLocked lends what sp has to lend to its waiters, in order.
func (p *Pool[K, V]) serveKeyLocked(sp *subPool[K, V]) {
	for w := sp.waiters.Front(); w != nil; w = sp.waiters.Front() {
		h, fresh := p.lendLocked(sp)
		if h == nil {
			return
		}
		p.grantLocked(w, grant[K, V]{lease: h, fresh: fresh})
	}
}

// serveIdleLocked serves waiters after an idle object of sp became
// lendable.
func (p *Pool[K, V]) serveIdleLocked(sp *subPool[K, V]) {
	if p.wq.Len() > 0 {
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
func (p *Pool[K, V]) dispatchLocked() { p.dispatchBeforeLocked(math.MaxUint64) }

// dispatchAheadLocked is dispatchLocked for the waiters that came before the
// first waiter of stop (all waiters if stop has none).
func (p *Pool[K, V]) dispatchAheadLocked(stop *subPool[K, V]) {
	limit := uint64(math.MaxUint64)
	if w := stop.waiters.Front(); w != nil {
		limit = w.ticket
	}
	p.dispatchBeforeLocked(limit)
}

// dispatchBeforeLocked is dispatchLocked for the waiters whose tickets are
// below limit: those that came before the borrower holding it.
//
// It keeps the pool's fairness invariant: after every event under the lock,
// every waiter that could be served has been. A waiter of a key with an
// idle object or a free share is served by the event that made it lendable
// (serveKeyLocked), so what is left to serve here is room: the pool's
// waiters are served oldest first, each key's waiters in order, until the
// oldest one whose key can take room cannot get it either (the pool is full
// and no idle object of another key can be destroyed for it), at which
// point none can. Keys that cannot take room for reasons of their own are
// parked on the way (see waitQueue), so that none is looked at twice.
func (p *Pool[K, V]) dispatchBeforeLocked(limit uint64) {
	for {
		sp := p.wq.first()
		if sp == nil {
			return
		}
		w := sp.waiters.Front()
		if w.ticket >= limit {
			return
		}
		g := p.tryLocked(sp, true)
		switch {
		case g.ok():
			p.grantLocked(w, g)
		case g.keyBound:
			p.wq.park(sp)
		default:
			return // no room for anyone
		}
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
			p.activatedLocked(sp)
		}
		r, destroy := p.putLocked(obj, true)
		p.unlock()
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
		p.madeLocked(sp)
		sp.bo.endProbe() // if this was the probe, it never ran
		if g.victim != nil {
			// The reservation's room goes back to the victim, in one step,
			// so that neither waiters nor the surplus check see both.
			p.victims--
			p.undoomLocked(g.victim)
			sp.count--
			sp.countN.Store(int32(sp.count))
			p.total--
			r, destroy = p.putLocked(g.victim, true)
			p.roomFreedLocked(sp)
		} else {
			p.unreserveLocked(sp)
		}
		p.unlock()
		if destroy {
			p.destroyBackground(g.victim, r)
		}
	}
}
