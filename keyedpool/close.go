package keyedpool

import (
	"context"
	"errors"
	"fmt"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

func (p *Pool[K, V]) countDestroyLocked(sp *subPool[K, V], why reason) {
	p.c.destroyed[why]++
	sp.c.destroyed[why]++
}

// destroy destroys obj, which nobody holds any more, and frees its room,
// for a caller that gets the error. The call is bounded by FactoryTimeout.
func (p *Pool[K, V]) destroy(obj *object[K, V], why reason) error {
	ctx, cancel := p.bounded(context.Background())
	defer cancel()
	return p.destroyCtx(ctx, obj, why)
}

// destroyCtx is destroy with the caller's context.
func (p *Pool[K, V]) destroyCtx(ctx context.Context, obj *object[K, V], why reason) error {
	err := p.destroyValueCtx(ctx, obj)
	p.mu.Lock()
	p.forgetLocked(obj, why)
	p.unreserveLocked(obj.sub)
	p.unlock()
	return err
}

// destroyValue destroys obj's value, bounded by FactoryTimeout; the object
// is still counted, and forgetLocked and freeing its room are the caller's.
func (p *Pool[K, V]) destroyValue(obj *object[K, V]) error {
	ctx, cancel := p.bounded(context.Background())
	defer cancel()
	return p.destroyValueCtx(ctx, obj)
}

func (p *Pool[K, V]) destroyValueCtx(ctx context.Context, obj *object[K, V]) error {
	dropShareCap(obj)
	if err := p.f.Destroy(ctx, obj.sub.key, obj.value); err != nil {
		return fmt.Errorf("keyedpool: destroy key %v: %w", obj.sub.key, err)
	}
	return nil
}

// forgetLocked drops obj, whose value is destroyed, from its key's objects
// and counts it as destroyed for why.
func (p *Pool[K, V]) forgetLocked(obj *object[K, V], why reason) {
	obj.sub.objs.Remove(obj)
	obj.sub.dying--
	p.dying--
	p.countDestroyLocked(obj.sub, why)
}

// destroyBackground is destroy in work no caller waits for: its error is
// reported as swallowed, and returned for eviction runs to join.
func (p *Pool[K, V]) destroyBackground(obj *object[K, V], why reason) error {
	err := p.destroy(obj, why)
	p.swallow(obj.sub, OpDestroy, err)
	return err
}

// destroyVictim destroys an idle object whose room was handed to a borrower
// of another key. Its error has nobody to go to (the borrower did not ask
// for it) and is reported as swallowed.
func (p *Pool[K, V]) destroyVictim(obj *object[K, V]) {
	err := p.destroyValue(obj)
	p.mu.Lock()
	p.forgetLocked(obj, byClear)
	p.victims--
	p.unreserveLocked(obj.sub)
	p.unlock()
	p.swallow(obj.sub, OpDestroy, err)
}

// destroyAll destroys objects already taken out of the pool, each call
// bounded by ctx and FactoryTimeout.
func (p *Pool[K, V]) destroyAll(ctx context.Context, objs []*object[K, V], why reason) error {
	var errs []error
	for _, o := range objs {
		cctx, cancel := p.bounded(ctx)
		if err := p.destroyCtx(cctx, o, why); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// takeIdleLocked removes an idle object from the pool for destruction. An
// object under an eviction test is left to the test, which learns of it
// (see the clears counters) and destroys it.
func (p *Pool[K, V]) takeIdleLocked(obj *object[K, V], doomed []*object[K, V]) []*object[K, V] {
	if obj.state == stTesting {
		return doomed
	}
	p.unidleLocked(obj)
	p.doomLocked(obj)
	return append(doomed, obj)
}

// Close closes the pool: Borrow fails with ErrClosed from now on, waiting
// borrowers get ErrClosed, makes in flight are cancelled, and idle objects
// are destroyed, and the pool leaves the evictor's schedule (an eviction
// run in flight is cancelled). Then it waits, bounded by ctx, until every
// lent object has been returned (and destroyed) and no eviction run is in
// flight. It returns the destroy errors and, if ctx ended first, ctx.Err(),
// joined. Close may be called more than once; later calls only wait.
func (p *Pool[K, V]) Close(ctx context.Context) error {
	var doomed []*object[K, V]
	p.mu.Lock()
	if !p.closed {
		p.quiesceLanesLocked()
		p.closed = true
		p.isClosed.Store(true)
		p.closeMakes()
		p.scheduleLocked(0)
		for w := p.wq.any(); w != nil; w = p.wq.any() {
			sp := w.sub
			p.grantLocked(w, grant[K, V]{err: ErrClosed})
			p.dropIfEmptyLocked(sp)
		}
		doomed = p.takeIdleListLocked(&p.idle, -1, doomed)
		p.forgetAllFailuresLocked() // a closed pool makes nothing
		p.checkDrainedLocked()
	}
	p.unlock()
	err := p.destroyAll(ctx, doomed, byClose)
	select {
	case <-p.drained: // first, so that an ended ctx does not hide success
		return err
	default:
	}
	select {
	case <-p.drained:
		return err
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
}

// Clear destroys the idle objects of key, and forgets the key: it leaves
// the pool as soon as it holds nothing, even when MinIdlePerKey would keep
// it, unless it is used again (Borrow, AddObject, Prepare). Lent objects
// are not touched; when they come back they go idle as usual (to be
// destroyed by eviction, or by Clear again), so a key cleared while some
// of its objects are lent stays until those are gone. It returns the destroy
// errors, joined, each bounded by ctx and FactoryTimeout; an error wrapping
// ErrInvalidKey for a key the pool cannot hold.
func (p *Pool[K, V]) Clear(ctx context.Context, key K) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	var doomed []*object[K, V]
	p.mu.Lock()
	if sp := p.keys[key]; sp != nil {
		p.flushLaneLocked(sp)
		sp.clears++ // for objects under an eviction test
		sp.setForgotten(true)
		doomed = p.takeIdleListLocked(&sp.idle, -1, doomed)
		p.dropIfEmptyLocked(sp)
	}
	p.unlock()
	return p.destroyAll(ctx, doomed, byClear)
}

// ClearAll destroys the idle objects of every key and forgets every key,
// as Clear does for one. Lent objects are not touched. It returns the
// destroy errors, joined.
func (p *Pool[K, V]) ClearAll(ctx context.Context) error {
	p.mu.Lock()
	p.clears++ // for objects under an eviction test
	for _, sp := range p.keys {
		sp.setForgotten(true)
		p.dropIfEmptyLocked(sp)
	}
	p.unlock()
	return p.clearOldest(ctx, -1)
}

// ClearOldest destroys the oldest 15% (at least one) of the idle objects of
// all keys together, as commons-pool2's clearOldest. It returns the destroy
// errors, joined.
func (p *Pool[K, V]) ClearOldest(ctx context.Context) error {
	p.mu.Lock()
	p.flushLanesLocked()
	n := p.idle.Len()*15/100 + 1
	p.unlock()
	return p.clearOldest(ctx, n)
}

// clearOldest destroys up to n of the oldest idle objects; n < 0: all.
func (p *Pool[K, V]) clearOldest(ctx context.Context, n int) error {
	p.mu.Lock()
	p.flushLanesLocked()
	doomed := p.takeIdleListLocked(&p.idle, n, nil)
	p.unlock()
	return p.destroyAll(ctx, doomed, byClear)
}

// takeIdleListLocked takes up to n (n < 0: all) idle objects from the
// front of l, one of the idle lists, for destruction, skipping those under
// an eviction test.
func (p *Pool[K, V]) takeIdleListLocked(l *ilist.List[object[K, V]], n int, doomed []*object[K, V]) []*object[K, V] {
	for o := l.Front(); o != nil && n != 0; {
		next := l.Next(o)
		if o.state != stTesting {
			doomed = p.takeIdleLocked(o, doomed)
			n--
		}
		o = next
	}
	return doomed
}
