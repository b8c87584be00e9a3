package keyedpool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// makeRequest carries one make from the goroutine that runs it to the
// caller that asked for it. finished, place and background are protected
// by the pool's mu; lease and err are written before done is closed.
type makeRequest[K comparable, V any] struct {
	done     chan struct{}
	finished bool
	place    bool // put the object in the pool instead of lending it
	// background: nobody will read err (upkeep, or a caller that gave
	// up), so a failure is reported as swallowed.
	background bool
	lease      *Pooled[K, V]
	err        error
}

// makeObject makes an object of sp in room already reserved, first
// destroying victim, whose room it takes over, and lends it to the caller.
// If ctx ends, or deadline (if not zero) passes, first, the caller gets
// ctx.Err() or ErrExhausted and the object, when made, joins the pool.
func (p *Pool[K, V]) makeObject(ctx context.Context, sp *subPool[K, V], victim *object[K, V], deadline time.Time) (*Pooled[K, V], error) {
	if victim != nil {
		p.destroyVictim(victim)
	}
	r := &makeRequest[K, V]{done: make(chan struct{})}
	if ctx.Done() == nil && deadline.IsZero() {
		p.runMake(ctx, sp, r)
		return r.lease, r.err
	}
	go p.runMake(ctx, sp, r)
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case <-r.done:
		return r.lease, r.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = fmt.Errorf("%w: MaxWait passed while an object of key %v was being made (it joins the pool when made)", ErrExhausted, sp.key)
	}
	p.mu.Lock()
	if !r.finished {
		r.place, r.background = true, true
		sp.placing++
		p.unlock()
		return nil, err
	}
	p.unlock()
	if r.lease != nil {
		// Made and lent to this caller, who no longer wants it: as a new
		// object, it is passivated before it joins the idle set.
		obj := r.lease.obj
		p.mu.Lock()
		p.unleaseLocked(r.lease, false)
		if p.shared {
			p.activatedLocked(sp)
		}
		obj.state = stBusy
		p.unlock()
		p.settleNew(obj, func() bool { return true }, false)
	}
	return nil, err
}

// placeObject makes an object of sp in room already reserved and puts it
// in the pool, passivated: to a waiter of the key, or idle. background
// says nobody reads the error (upkeep). If ctx ends first, it returns
// ctx.Err() and the object, when made, joins the pool.
func (p *Pool[K, V]) placeObject(ctx context.Context, sp *subPool[K, V], background bool) error {
	r := &makeRequest[K, V]{done: make(chan struct{}), place: true, background: background}
	if ctx.Done() == nil {
		p.runMake(ctx, sp, r)
		return r.err
	}
	go p.runMake(ctx, sp, r)
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	r.background = true
	p.unlock()
	return ctx.Err()
}

// runMake calls the factory for r. Its context keeps the values of the
// caller's but not its cancellation, so that a borrower that gives up does
// not waste the make; it is bounded by FactoryTimeout and ended by Close.
// An object made after Close began is destroyed, not lent or kept.
func (p *Pool[K, V]) runMake(ctx context.Context, sp *subPool[K, V], r *makeRequest[K, V]) {
	mctx, cancel := p.bounded(context.WithoutCancel(ctx))
	stop := context.AfterFunc(p.closeCtx, cancel)
	v, err := p.f.Make(mctx, sp.key)
	cancelled := err != nil && p.closeCtx.Err() != nil
	invalid := false
	var derr error
	if err == nil && p.cfg.Load().TestOnCreate {
		if verr := p.f.Validate(mctx, sp.key, v); verr != nil {
			derr = p.f.Destroy(mctx, sp.key, v)
			invalid = true
			err = fmt.Errorf("%w: key %v: %w", ErrValidation, sp.key, verr)
		}
	}
	var sc *ShareCap
	if err == nil {
		if sc, err = p.shareCapOf(v); err != nil {
			derr = p.f.Destroy(mctx, sp.key, v)
			invalid = true
			err = fmt.Errorf("keyedpool: make key %v: %w", sp.key, err)
		}
	}
	stop()
	cancel()
	p.swallow(sp, OpDestroy, derr) // nobody asked for that object

	var obj *object[K, V]
	if err == nil {
		now := p.since()
		obj = &object[K, V]{sub: sp, value: v, state: stBusy,
			created: now, lastBorrowed: now, lastReturned: now, activeSince: now, jitter: rand.Uint32()}
		obj.lease.obj = obj
		obj.free = &obj.lease
		obj.rctx.obj = obj
	}
	settle, doomed := false, false
	p.mu.Lock()
	p.madeLocked(sp)
	switch {
	case invalid:
		p.c.created++
		sp.c.created++
		p.countDestroyLocked(sp, byBorrowValidation)
		r.err = err
		p.makeFailedLocked(sp, err)
		p.unreserveLocked(sp)
	case cancelled:
		// Cancelled by Close: not counted as the factory's failure.
		sp.bo.endProbe()
		r.err = fmt.Errorf("%w: make key %v: %w", ErrClosed, sp.key, err)
		p.unreserveLocked(sp)
	case err != nil:
		p.c.makeErrors++
		sp.c.makeErrors++
		r.err = fmt.Errorf("keyedpool: make key %v: %w", sp.key, err)
		p.makeFailedLocked(sp, err)
		p.unreserveLocked(sp)
	default:
		p.c.created++
		sp.c.created++
		p.makeOKLocked(sp)
		sp.objs.PushBack(obj)
		switch {
		case p.closed:
			p.doomLocked(obj)
			doomed = true
			r.err = fmt.Errorf("%w: key %v: closed while its object was being made", ErrClosed, sp.key)
		case r.place:
			settle = true // stays stBusy, and counted in placing, until passivated
		default:
			if p.shared {
				sp.activating++ // until ready
			} else {
				obj.state = stLent
			}
			r.lease = p.leaseLocked(obj)
			p.wantUpkeepLocked(sp) // lent straight from the make: the key may still have no idle object
		}
		if sc != nil && !doomed {
			// Once the object counts where it is going, so that what
			// its cap tells the key's waiters counts it too.
			p.adoptShareCapLocked(obj, sc)
		}
	}
	if r.place && !settle {
		sp.placing--           // no object joins the pool
		p.wantUpkeepLocked(sp) // the key may lack what it was made for: upkeep makes it up
	}
	r.finished = true
	bg := r.background && !p.closed
	p.unlock()
	switch {
	case bg && r.err != nil && invalid:
		p.swallow(sp, OpValidate, r.err)
	case bg && r.err != nil && !cancelled:
		p.swallow(sp, OpMake, r.err)
	}
	if !settle {
		// Only now, so that whoever waits for the make (an eviction run's
		// upkeep) finds its failure counted when it returns.
		close(r.done)
	}
	switch {
	case settle:
		background := func() bool {
			p.mu.Lock()
			defer p.unlock()
			return r.background
		}
		if perr := p.settleNew(obj, background, true); perr != nil {
			r.err = fmt.Errorf("keyedpool: passivate new object of key %v: %w", sp.key, perr)
		}
		close(r.done)
	case doomed:
		p.destroyBackground(obj, byClose)
	}
}

// settleNew passivates obj, just made and held by the caller alone (stBusy,
// counted in its key), and puts it in the pool, so that a new idle object
// is in the state a returned one is in (as commons-pool2's addObject). A
// failed Passivate destroys the object (counted with the return-validation
// failures) and is returned, and reported as swallowed first if background
// says nobody waits for it. placing says obj is counted in its key's
// placing until it is in the pool (or destroyed).
func (p *Pool[K, V]) settleNew(obj *object[K, V], background func() bool, placing bool) error {
	sp := obj.sub
	ctx, cancel := p.bounded(context.Background())
	err := p.f.Passivate(ctx, sp.key, obj.value)
	cancel()
	if err != nil && background() {
		p.swallow(sp, OpPassivate, err)
	}
	why, destroy := byReturnValidation, true
	p.mu.Lock()
	if placing {
		sp.placing--
	}
	if err != nil {
		p.doomLocked(obj)
	} else {
		why, destroy = p.putLocked(obj, false)
	}
	p.unlock()
	if destroy {
		p.destroyBackground(obj, why)
	}
	return err
}

// AddObject makes one object of key and puts it in the pool: to a waiter of
// the key, or idle. It fails with ErrExhausted when the limits leave no room
// (it never destroys other keys' objects to make room), with ErrClosed on a
// closed pool, with ErrBackoff while the key's make backoff runs, and with
// the factory's error, wrapped. If ctx ends before the
// make does, it returns ctx.Err() and the object still joins the pool.
func (p *Pool[K, V]) AddObject(ctx context.Context, key K) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.unlock()
		return ErrClosed
	}
	sp := p.useLocked(key)
	if err := p.addRoomLocked(sp); err != nil {
		p.unlock()
		return err
	}
	p.unlock()
	return p.placeObject(ctx, sp, false)
}

// addRoomLocked reserves room for an object of sp that joins the pool when
// made (AddObject, Prepare). It fails with ErrExhausted when the limits
// leave none (it never takes other keys' objects' room), and with the
// backoff error while the key's makes back off.
func (p *Pool[K, V]) addRoomLocked(sp *subPool[K, V]) error {
	if sp.count >= p.lim.maxPerKey || p.fullLocked() {
		p.dropIfEmptyLocked(sp)
		return ErrExhausted
	}
	if sp.bo != nil {
		if err := p.backoffLocked(sp); err != nil {
			p.countRejectedLocked(sp)
			return err
		}
	}
	p.reserveLocked(sp)
	sp.placing++
	p.wantUpkeepLocked(sp) // a key made for is one the evictor keeps, from now on
	return nil
}

// Prepare makes idle objects of key until it has MinIdlePerKey spare ones
// (as commons-pool2's preparePool): idle, or with shared leases lent under
// the share cap, counting the objects being made to join the pool (by
// other Prepare calls, AddObject or an eviction run's upkeep), so that
// calls at the same time do not make more than MinIdlePerKey between them.
// One call makes at most MinIdlePerKey objects, so that borrowers taking
// them as they come cannot keep it going. It stops at the first error,
// which it returns: AddObject's.
func (p *Pool[K, V]) Prepare(ctx context.Context, key K) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	for made := 0; ; made++ {
		p.mu.Lock()
		if p.closed {
			p.unlock()
			return ErrClosed
		}
		sp := p.useLocked(key)
		if made >= p.lim.minIdle || p.upkeepNeedLocked(sp) <= 0 {
			p.dropIfEmptyLocked(sp)
			p.unlock()
			return nil
		}
		if err := p.addRoomLocked(sp); err != nil {
			p.unlock()
			return err
		}
		p.unlock()
		if err := p.placeObject(ctx, sp, false); err != nil {
			return err
		}
	}
}
