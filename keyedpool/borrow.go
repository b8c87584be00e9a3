package keyedpool

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"
)

// Borrow lends an object of key. With shared leases it takes a share of the
// busiest lent object under its cap (see MaxSharesPerObject) if there is
// one. Otherwise it takes an idle object if there is one (activating it,
// and validating it with TestOnBorrow: an object that fails is destroyed
// and the next one tried), or makes a new one if the limits allow,
// destroying the oldest idle objects of other keys when MaxTotal is
// reached. Otherwise it
// fails with ErrExhausted (WhenExhausted Fail) or waits, first come first
// served with the borrowers of every key, until an object or room frees, ctx
// ends (it returns ctx.Err()) or MaxWait passes (ErrExhausted).
//
// A borrower handed an object that then fails activation or validation,
// or is past MaxLifetime, keeps its place in line: the object is destroyed,
// and the room that frees goes to the borrower before any that came after
// it (borrowers that came before it, waiting for room, go first). MaxWait
// is one deadline for the whole Borrow, counted from the moment it first
// has to wait (in line, or for a make): such a borrower waits again only
// for what is left of it. A make still running at the deadline goes on,
// and its object joins the pool.
//
// A failed make returns the factory's error, wrapped; a panic in a factory
// method an error wrapping ErrFactoryPanic. A key that cannot be hashed or
// is not equal to itself gets an error wrapping ErrInvalidKey. On a closed
// pool, or one that closes before the object is handed over, Borrow fails
// with ErrClosed and lends nothing.
//
// Give the handle back with Return or Invalidate.
func (p *Pool[K, V]) Borrow(ctx context.Context, key K) (*Pooled[K, V], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.checkKey(key); err != nil {
		return nil, err
	}
	var b borrowState[K, V]
	for {
		var h *Pooled[K, V]
		if b.discard == nil { // else the pool-wide way settles it first
			h = p.borrowFast(key, &b)
		}
		fresh, made := h != nil, false
		if h == nil {
			var err error
			if h, fresh, made, err = p.borrowPoolWide(ctx, key, &b); err != nil {
				return nil, err
			}
			if h == nil {
				continue // abandoned objects were taken back: try again
			}
		}
		if fresh && !made {
			if obj := p.retired(h); obj != nil {
				// It outlived MaxLifetime: try the next, in this
				// borrower's place in line (see discard).
				b.discard, b.discardWhy = obj, byLifetime
				continue
			}
		}
		if fresh {
			if failed, err := p.ready(ctx, h, made); err != nil {
				if failed == nil || made || ctx.Err() != nil {
					if failed != nil {
						p.destroyBackground(failed, byBorrowValidation)
					}
					return nil, err
				}
				b.discard, b.discardWhy = failed, byBorrowValidation
				continue // try the next, in this borrower's place in line
			}
		}
		if p.isClosed.Load() {
			// Close began while the object was on its way: it goes back,
			// to be destroyed, and nothing is lent from a closed pool.
			_ = p.giveBack(h, false, true)
			return nil, ErrClosed
		}
		if ab := p.cfg.Load().Abandoned; ab != nil && ab.LogAbandoned && h.track != nil {
			h.track.stack = debug.Stack()
		}
		// Marked lent only now that the borrower has it, so that a stale
		// handle given back meanwhile cannot take it.
		h.leased.Store(true)
		return h, nil
	}
}

// borrowPoolWide is one try of Borrow under the pool's lock, for a key
// whose lane had nothing for it (see lane.go): the key's idle objects and
// shares, or room, or a wait, and a make. Its results are borrowSlow's,
// with fresh: the object must be activated by its borrower.
func (p *Pool[K, V]) borrowPoolWide(ctx context.Context, key K, b *borrowState[K, V]) (h *Pooled[K, V], fresh, made bool, err error) {
	discard := b.discard
	if discard != nil {
		b.discard = nil
		p.swallow(discard.sub, OpDestroy, p.destroyValue(discard))
	}
	p.mu.Lock()
	if b.ticket == 0 {
		b.ticket = p.wq.issue() // its place in line, from now on
	}
	if discard != nil {
		p.settleDiscardLocked(discard, b.discardWhy, b.ticket)
	}
	if p.closed {
		p.unlock()
		return nil, false, false, ErrClosed
	}
	sp := p.useLocked(key)
	if sp.lane.n.Load() != 0 {
		p.flushLaneLocked(sp)
	}
	if p.lanes.Load() != nil {
		p.indexLocked(sp)
	}
	if h, fresh = p.lendLocked(sp); h != nil {
		p.unlock()
		return h, fresh, false, nil
	}
	if h, made, err = p.borrowSlow(ctx, sp, b); err != nil || h == nil {
		return nil, false, false, err
	}
	return h, made || b.fresh, made, nil
}

// borrowSlow is Borrow when sp has nothing to lend at once: it makes room,
// fails, or waits, and then makes the object if it got room. Called with
// p.mu held; returns with it released. A nil h and nil err means try
// again; made says h's object was just made for this borrower. Whether an
// object granted from the idle set must be activated is left in b.fresh.
func (p *Pool[K, V]) borrowSlow(ctx context.Context, sp *subPool[K, V], b *borrowState[K, V]) (h *Pooled[K, V], made bool, err error) {
	g := p.roomLocked(sp, false)
	if !g.ok() {
		cfg := p.cfg.Load()
		fail := cfg.WhenExhausted == Fail && !g.soon
		var sweep *AbandonedConfig
		if ab := cfg.Abandoned; ab != nil && ab.RemoveOnBorrow && !b.swept {
			// Leaked objects may be what fills the pool: take them back,
			// once per Borrow. A borrower that may wait does so from its
			// place in line, so that the room they free is its before
			// that of those who came after it; one that may not has no
			// place to keep, and tries again.
			b.swept = true
			if fail {
				p.dropIfEmptyLocked(sp)
				p.unlock()
				p.removeAbandoned(ab, p.since())
				return nil, false, nil
			}
			sweep = ab
		}
		if fail {
			p.dropIfEmptyLocked(sp)
			p.unlock()
			return nil, false, ErrExhausted
		}
		if g, err = p.wait(ctx, sp, b, sweep); err != nil {
			return nil, false, err
		}
	} else {
		p.unlock()
	}
	switch {
	case g.err != nil:
		return nil, false, g.err
	case g.reserved:
		h, err := p.makeObject(ctx, sp, g.victim, b.start(p.cfg.Load().MaxWait))
		return h, err == nil, err
	}
	b.fresh = g.fresh
	return g.lease, false, nil
}

// borrowState is what one Borrow keeps across its tries: its MaxWait
// deadline and its place in line.
type borrowState[K comparable, V any] struct {
	deadline time.Time // zero: not started, or no MaxWait
	started  bool      // deadline is set, if MaxWait asks for one
	// ticket: its place in line, taken when it first came the pool-wide
	// way, or the lanes' (see borrowFast); 0: none yet.
	ticket uint64
	// discard: an object lent to it that failed activation or validation
	// or was past MaxLifetime, destroyed by its next try, which frees its
	// room only once the borrower has its place in line again (see
	// settleDiscardLocked).
	discard    *object[K, V]
	discardWhy reason
	waited     time.Duration // time spent waiting so far, over all its waits
	// waitedBefore: it has waited, and is counted in Counters.Waited.
	waitedBefore bool
	swept        bool // abandoned objects were taken back for it, which it does once
	fresh        bool // the lease borrowSlow returned is of an object from the idle set
}

// start starts the Borrow's deadline, maxWait from now, if it has not
// started yet, and returns it (zero: none). Only borrowers that wait read
// the clock.
func (b *borrowState[K, V]) start(maxWait time.Duration) time.Time {
	if !b.started {
		b.started = true
		if maxWait > 0 {
			b.deadline = time.Now().Add(maxWait)
		}
	}
	return b.deadline
}

// grant is what a borrower is given: a lease, or capacity to make an object.
type grant[K comparable, V any] struct {
	lease *Pooled[K, V]
	// fresh: the leased object came from the idle set or was just made and
	// must be activated (and validated) by the borrower before use.
	fresh bool
	// reserved: room for one object of the key is counted for the borrower,
	// who must make it, or give the room back.
	reserved bool
	// victim: an idle object of another key whose room was handed to this
	// borrower; the borrower destroys it before making.
	victim *object[K, V]
	err    error
	// soon: nothing now, but objects of the key being made or activated
	// will take this borrower as a share; wait for them even with Fail.
	soon bool
	// keyBound: nothing now, for a reason of the key's own (soon, or at
	// MaxTotalPerKey), whatever room the pool has.
	keyBound bool
}

func (g grant[K, V]) ok() bool { return g.lease != nil || g.reserved || g.err != nil }

// tryLocked finds something for a borrower of sp without waiting: an idle
// object, a share of a lent object, or room to make one (see roomLocked).
// queued says whether the borrower is one of sp's waiters.
func (p *Pool[K, V]) tryLocked(sp *subPool[K, V], queued bool) grant[K, V] {
	if h, fresh := p.lendLocked(sp); h != nil {
		return grant[K, V]{lease: h, fresh: fresh}
	}
	return p.roomLocked(sp, queued)
}

// roomLocked finds room to make an object of sp, possibly by taking over
// the room of another key's oldest idle object, for a borrower that found
// nothing to lend.
func (p *Pool[K, V]) roomLocked(sp *subPool[K, V], queued bool) grant[K, V] {
	if p.shared {
		// Objects of the key being made or activated will each take
		// MaxSharesPerObject-1 more borrowers: a burst on a cold key waits
		// for them instead of making an object per borrower.
		need := sp.waiters.Len()
		if !queued {
			need++
		}
		if need <= (sp.making+sp.activating)*(p.keySharesLocked(sp)-1) {
			return grant[K, V]{soon: true, keyBound: true}
		}
	}
	if sp.count >= p.lim.maxPerKey {
		return grant[K, V]{keyBound: true}
	}
	var victim *object[K, V]
	if p.fullLocked() {
		// Room only by taking over the room of the oldest idle object that
		// no eviction test holds; none: no room.
		victim = p.idle.Front()
		for victim != nil && victim.state == stTesting {
			victim = p.idle.Next(victim)
		}
		if victim == nil {
			return grant[K, V]{}
		}
	}
	// Only now that there is room: past the backoff period, this borrower
	// becomes the probe and must make.
	if sp.bo != nil {
		if err := p.backoffLocked(sp); err != nil {
			p.countRejectedLocked(sp)
			return grant[K, V]{err: err}
		}
	}
	if victim != nil {
		// The victim stays counted in its own key until destroyed, so
		// that key's limit holds; the pool-wide limit counts it and the
		// reservation as one.
		p.unidleLocked(victim)
		p.doomLocked(victim)
		p.victims++
	}
	p.reserveLocked(sp)
	return grant[K, V]{reserved: true, victim: victim}
}

// lendLocked leases what sp has to lend at once: in shared mode first a
// share of a lent object under its cap (shareLocked), then an idle object;
// nil if it has neither. fresh says the object came from the idle set, to
// be activated by its borrower.
func (p *Pool[K, V]) lendLocked(sp *subPool[K, V]) (h *Pooled[K, V], fresh bool) {
	if p.shared && sp.lent.Len() > 0 {
		if h = p.shareLocked(sp); h != nil {
			return h, false
		}
	}
	obj := sp.idle.Front()
	for sp.testing > 0 && obj != nil && obj.state == stTesting {
		obj = sp.idle.Next(obj) // under an eviction test, where it stays
	}
	if obj == nil {
		return nil, false
	}
	p.unidleLocked(obj)
	obj.state = stLent
	if p.shared {
		obj.state = stBusy // until activated: see ready
		sp.activating++
	}
	h = p.leaseLocked(obj)
	obj.activeSince = obj.lastBorrowed
	if obj.idleCounted = p.clockRuns(); obj.idleCounted {
		p.countIdleLocked(sp, obj.lastBorrowed-max(obj.lastReturned, p.clockStart), 1)
	}
	return h, true
}

// shareLocked leases a share of the busiest lent object of sp that is under
// its cap (shareLimit), the oldest of those equally busy; nil if none is.
// Packing shares onto the busiest objects, rather than spreading them, is
// what lets load that falls leave whole objects with no lease, to go idle
// and be retired by the evictor, and an idle object is taken only when the
// lent ones are full.
func (p *Pool[K, V]) shareLocked(sp *subPool[K, V]) *Pooled[K, V] {
	var best *object[K, V]
	var bestLimit int32
	var cfg *Config
	var now int64
	if p.lim.lifetime {
		cfg = p.cfg.Load()
		now = p.floorNow(cfg)
	}
	for o := sp.lent.Front(); o != nil; {
		next := sp.lent.Next(o)
		if cfg != nil && p.expired(o, cfg, now) {
			// Under steady load a shared object may never go back to
			// zero leases: stop lending it, so that it retires when its
			// borrowers are done.
			p.retireLocked(o, byLifetime)
		} else if lim := p.shareLimit(o); o.shares < lim && (best == nil || o.shares > best.shares) {
			best, bestLimit = o, lim
		}
		o = next
	}
	if best == nil {
		return nil
	}
	h := p.leaseLocked(best)
	if best.shares == bestLimit {
		p.wantUpkeepLocked(sp) // best was the key's last room, maybe
	}
	return h
}

func (p *Pool[K, V]) unidleLocked(obj *object[K, V]) {
	if obj == p.evictNext && p.idle.Next(obj) == nil && p.lanes.Load() != nil && p.wq.Len() == 0 {
		// The cursor would pass the newest object in idle, but newer ones
		// may be on the lanes: they are next, so they go into idle first.
		// (With nobody waiting the flush serves nobody, so it does not
		// reenter the section that lends obj.)
		p.flushLanesLocked()
	}
	if obj == p.evictNext { // the flush may have moved it back, to older lane objects
		p.evictNext = p.idle.Next(obj)
		obj.evictPending = true
	}
	obj.sub.idle.Remove(obj)
	obj.sub.idleN.Store(int32(obj.sub.idle.Len()))
	p.idle.Remove(obj)
	p.wantUpkeepLocked(obj.sub)
}

// retired takes back the lease h, just taken from the idle set, if its
// object has outlived MaxLifetime, and returns the object, to be
// destroyed (its room still counted); nil if it has not.
func (p *Pool[K, V]) retired(h *Pooled[K, V]) *object[K, V] {
	cfg := p.cfg.Load()
	if cfg.MaxLifetime <= 0 || !p.expired(h.obj, cfg, p.floorNow(cfg)) {
		return nil
	}
	p.mu.Lock()
	obj := p.failedLocked(h)
	p.unlock()
	return obj
}

// failedLocked takes back the lease h, whose object must not be lent, and
// returns the object, marked to be destroyed; its room stays counted until
// it is.
func (p *Pool[K, V]) failedLocked(h *Pooled[K, V]) *object[K, V] {
	obj := h.obj
	p.unleaseLocked(h, false)
	if p.shared {
		p.activatedLocked(obj.sub)
	}
	p.doomLocked(obj)
	return obj
}

// settleDiscardLocked ends obj, an object lent to the borrower holding
// ticket that it could not use, whose value is destroyed: it frees the
// object's room for the waiters that came before that borrower, and leaves
// the rest to unlock, so that the borrower, which comes back the
// pool-wide way, gets the room before those that came after it.
func (p *Pool[K, V]) settleDiscardLocked(obj *object[K, V], why reason, ticket uint64) {
	sp := obj.sub
	p.forgetLocked(obj, why)
	sp.count--
	sp.countN.Store(int32(sp.count))
	p.total--
	if p.wq.Len() > 0 {
		p.wq.unpark(sp)
		p.dispatchBeforeLocked(ticket + 1) // its equals too: see laneTicket
		p.redispatch = true
	}
	p.wantUpkeepLocked(sp)
	p.dropIfEmptyLocked(sp)
	p.checkDrainedLocked()
}

// ready activates an object just taken from the idle set or just made
// (made), and validates it with TestOnBorrow. If the failure came from ctx
// ending, the borrower gave up, the object is not to blame, and it goes
// back to the pool: where it was, or as the newest if made. Otherwise the
// lease is taken back and the object returned as failed, to be destroyed
// by the caller.
func (p *Pool[K, V]) ready(ctx context.Context, h *Pooled[K, V], made bool) (failed *object[K, V], err error) {
	obj := h.obj
	sp := obj.sub
	err = p.f.Activate(ctx, sp.key, obj.value)
	if err == nil && p.cfg.Load().TestOnBorrow {
		err = p.f.Validate(ctx, sp.key, obj.value)
	}
	if err == nil {
		if p.shared {
			// Now that it is active, others may share it, unless
			// SetConfig lowered a limit meanwhile: then it serves this
			// borrower alone and goes when done. Its key's other waiters
			// may need room instead (it may even be past MaxLifetime):
			// activatedLocked has unlock dispatch.
			p.mu.Lock()
			p.activatedLocked(sp)
			p.addLentLocked(obj)
			if p.overLimitsLocked(sp) {
				p.retireLocked(obj, bySurplus)
			} else {
				p.serveKeyLocked(sp) // may retire it: past MaxLifetime
			}
			if sp.waiters.Len() > 0 && p.cfg.Load().WhenExhausted == Fail {
				// With Fail, waiters waited for this object; those it
				// took no share for (it retired, or is full) get room if
				// there is some, and otherwise fail, as they would have
				// at once with nothing on its way.
				p.wq.unpark(sp)
				p.dispatchLocked()
				p.failBeyondSoonLocked(sp)
			}
			p.unlock()
		}
		return nil, nil
	}
	if ctx.Err() == nil {
		p.mu.Lock()
		failed = p.failedLocked(h)
		p.unlock()
		return failed, fmt.Errorf("%w: key %v: %w", ErrValidation, sp.key, err)
	}
	pctx, cancel := p.bounded(context.WithoutCancel(ctx))
	perr := p.f.Passivate(pctx, sp.key, obj.value)
	cancel()
	p.swallow(sp, OpPassivate, perr)
	why, destroy := byBorrowValidation, true
	p.mu.Lock()
	if perr == nil {
		p.unleaseLocked(h, false)
		if p.shared {
			p.activatedLocked(sp)
		}
		why, destroy = p.putLocked(obj, !made)
	} else {
		p.failedLocked(h)
	}
	p.unlock()
	if destroy {
		p.destroyBackground(obj, why)
	}
	return nil, ctx.Err()
}
