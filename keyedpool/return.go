package keyedpool

import (
	"errors"
	"fmt"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

// check validates a handle given back to p and clears its leased flag.
func (p *Pool[K, V]) check(h *Pooled[K, V]) error {
	if h == nil || h.obj == nil {
		return ErrNotBorrowed
	}
	if h.obj.sub.pool != p {
		return ErrForeignObject
	}
	if !h.leased.CompareAndSwap(true, false) {
		return ErrNotBorrowed
	}
	return nil
}

// Return gives back a borrowed object. When its last lease comes back the
// object is passivated (and validated with TestOnReturn) and goes to a
// waiter of its key, or to the idle set, or is destroyed: beyond
// MaxIdlePerKey, after a failed passivation or validation, or after Close.
// It fails with ErrNotBorrowed for a handle that is not lent (returned
// twice) and ErrForeignObject for one from another pool. Other errors come
// from the factory (a panic in it wraps ErrFactoryPanic); the object is
// dealt with either way. Return does not block on other borrowers; the
// factory calls it makes are bounded by Config.FactoryTimeout (Passivate
// and Validate get a context that ends FactoryTimeout after they first look
// at it, Destroy one that ends FactoryTimeout after it starts). Safe for
// concurrent use.
func (p *Pool[K, V]) Return(h *Pooled[K, V]) error {
	if err := p.check(h); err != nil {
		return err
	}
	return p.giveBack(h, true, false)
}

// giveBack returns a lease whose leased flag is already cleared; returned
// as for unleaseLocked. Its errors go to the caller, or with background
// (nobody gave the lease back) are reported as swallowed.
func (p *Pool[K, V]) giveBack(h *Pooled[K, V], returned, background bool) error {
	obj := h.obj
	sp := obj.sub
	if p.shared {
		p.mu.Lock()
		if !p.unleaseLocked(h, returned) {
			if obj.state == stLent {
				p.serveKeyLocked(sp) // a share came free
			}
			p.unlock()
			return nil
		}
		if obj.state == stLent {
			p.removeLentLocked(obj)
		}
		if obj.state == stBroken {
			p.unretireLocked(obj)
			p.unlock()
			if background {
				return p.destroyBackground(obj, obj.brokenWhy)
			}
			return p.destroy(obj, obj.brokenWhy)
		}
		obj.state = stBusy
		p.unlock()
	}
	// Only this goroutine holds obj now.
	cfg := p.cfg.Load()
	expired := cfg.MaxLifetime > 0 && p.expired(obj, cfg, p.floorNow(cfg))
	why, destroy := byReturnValidation, false
	var err error
	// After Close it is destroyed (putLocked): passivating or validating
	// it first would be for nothing.
	if !expired && !p.isClosed.Load() {
		op := OpPassivate
		err = p.f.Passivate(&obj.rctx, sp.key, obj.value)
		if err == nil && cfg.TestOnReturn {
			op = OpValidate
			err = p.f.Validate(&obj.rctx, sp.key, obj.value)
		}
		if err != nil {
			err = fmt.Errorf("keyedpool: %v of returned object of key %v (it is destroyed): %w", op, sp.key, err)
		}
		if background {
			p.swallow(sp, op, err)
		}
	}
	if !expired && err == nil && returned && !p.shared && p.returnFast(h) {
		return nil
	}
	p.mu.Lock()
	if !p.shared {
		p.unleaseLocked(h, returned)
	}
	switch {
	case expired:
		p.doomLocked(obj)
		why, destroy = byLifetime, true
	case err != nil:
		p.doomLocked(obj)
		destroy = true
	default:
		why, destroy = p.putLocked(obj, false)
	}
	p.unlock()
	if destroy && background {
		return errors.Join(err, p.destroyBackground(obj, why))
	}
	if destroy {
		return errors.Join(err, p.destroy(obj, why))
	}
	return nil
}

// Invalidate gives back a borrowed object that must not be used again, and
// destroys it. With shared leases the object stops being lent at once and is
// destroyed when its last lease comes back, so other borrowers' work on it is
// not cut. Errors as for Return; a destroy error is returned wrapped. The
// Destroy call gets a context that ends after Config.FactoryTimeout. Safe
// for concurrent use.
func (p *Pool[K, V]) Invalidate(h *Pooled[K, V]) error {
	if err := p.check(h); err != nil {
		return err
	}
	return p.invalidate(h, byInvalidate)
}

// invalidate is Invalidate for a lease whose leased flag is already
// cleared.
func (p *Pool[K, V]) invalidate(h *Pooled[K, V], why reason) error {
	obj := h.obj
	p.mu.Lock()
	last := p.unleaseLocked(h, true)
	if !last { // shared mode: others hold leases
		if obj.state == stLent { // else broken already: the first cause counts
			p.retireLocked(obj, why)
		}
		p.unlock()
		return nil
	}
	if p.shared && obj.state == stLent {
		p.removeLentLocked(obj)
	}
	if obj.state == stBroken {
		why = obj.brokenWhy // the first cause counts
		p.unretireLocked(obj)
	}
	p.doomLocked(obj)
	p.unlock()
	return p.destroy(obj, why)
}

// putLocked takes back an object nobody holds, passivated: it goes to a
// waiter of its key, or to the idle set, or is to be destroyed (surplus
// over MaxIdlePerKey, or the pool is closed), which the caller does after
// unlocking. unused says the object was taken from the idle set and not
// used (its borrower gave up, or its room was not needed after all): it
// keeps its idle time and goes back to its place in both idle lists, so
// that the order FIFO promises holds. Otherwise it was returned or made,
// and goes in as the most recently returned.
func (p *Pool[K, V]) putLocked(obj *object[K, V], unused bool) (r reason, destroy bool) {
	sp := obj.sub
	if p.closed {
		p.doomLocked(obj)
		return byClose, true
	}
	// The lane's objects go in first, so that obj is the newest and the
	// MaxIdlePerKey check counts them; the lane's mutex is held until
	// idleN is stored, so that returnFast's check sees both.
	sp.lane.mu.Lock()
	p.drainLaneLocked(sp)
	p.mergeIdleLocked()
	if (sp.waiters.Len() == 0 && sp.idle.Len() >= p.lim.maxIdle) || p.overLimitsLocked(sp) {
		// Beyond MaxIdlePerKey, or over limits SetConfig lowered.
		sp.lane.mu.Unlock()
		p.doomLocked(obj)
		return bySurplus, true
	}
	obj.state = stIdle
	if !unused {
		// Under the lane's mutex, so that no fast Return of the key takes
		// a number before obj's and goes on the lane, after obj.
		obj.idleSeq = p.idleSeqs.Add(1)
		// A new idle span, which no lend counted yet, at the newest end,
		// where the eviction runs have yet to come.
		obj.idleCounted, obj.evictPending = false, false
	}
	fifo := p.cfg.Load().FIFO
	switch {
	case unused:
		// Back to its place by its sequence number, as if never taken;
		// the idle span its lend counted is taken back.
		insertBySeq(&sp.idle, obj, !fifo)
		insertBySeq(&p.idle, obj, false)
		if obj.evictPending {
			// It was to be looked at next: it still is.
			obj.evictPending = false
			// (A nil cursor: it was the last, and the runs would start
			// over from the front before coming to it.)
			if p.evictNext == nil || obj.idleSeq < p.evictNext.idleSeq {
				p.evictNext = obj
			}
		}
		if obj.idleCounted {
			obj.idleCounted = false
			// The lend's stamp: see unleaseLocked.
			p.countIdleLocked(sp, -(obj.prevBorrowed - max(obj.lastReturned, p.clockStart)), -1)
		}
	case fifo:
		sp.idle.PushBack(obj)
		p.idle.PushBack(obj)
	default:
		sp.idle.PushFront(obj)
		p.idle.PushBack(obj)
	}
	sp.idleN.Store(int32(sp.idle.Len()))
	sp.lane.mu.Unlock()
	if !unused {
		obj.lastReturned = p.stampLocked(obj)
		if p.clockRuns() && obj.borrows > 0 { // else new: never lent
			d := obj.lastReturned - max(obj.activeSince, p.clockStart)
			p.c.activeNanos += d
			p.c.actives++
			sp.c.activeNanos += d
			sp.c.actives++
		}
	}
	p.serveIdleLocked(sp)
	return 0, false
}

// countIdleLocked adds n idle spans of total d to the pool's and sp's
// counters (n -1 takes one back).
func (p *Pool[K, V]) countIdleLocked(sp *subPool[K, V], d int64, n int64) {
	p.c.idleNanos += d
	p.c.idles += n
	sp.c.idleNanos += d
	sp.c.idles += n
}

// insertBySeq puts obj into l, an idle list in the order objects went
// into the idle set (the latest first if latestFirst), at its place by its
// idleSeq, walking from both ends so that an object that belongs near
// either end is placed at once.
func insertBySeq[K comparable, V any](l *ilist.List[object[K, V]], obj *object[K, V], latestFirst bool) {
	after := func(a, b *object[K, V]) bool { // a belongs after b
		if latestFirst {
			return a.idleSeq < b.idleSeq
		}
		return a.idleSeq > b.idleSeq
	}
	for f, b := l.Front(), l.Back(); f != nil; f, b = l.Next(f), l.Prev(b) {
		if !after(obj, f) {
			l.InsertBefore(obj, f)
			return
		}
		if after(obj, b) {
			if n := l.Next(b); n != nil {
				l.InsertBefore(obj, n)
			} else {
				l.PushBack(obj)
			}
			return
		}
	}
	l.PushBack(obj)
}
