package keyedpool

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

// SetConfig changes the pool's configuration while it runs, so that from
// the moment it returns the pool behaves as if it had been made with cfg:
// objects already lent are never taken from their borrowers, but nothing
// the pool holds keeps breaking the new setting for longer than it takes
// them to come back. Field by field:
//
//   - MaxTotal, MaxTotalPerKey lowered: idle objects over the new limits are
//     destroyed at once (those a key would lend last; oldest first for
//     MaxTotal), no object is made while a key or the pool is over, and an
//     object that comes back while it is over is destroyed; with shared
//     leases, lent objects over the limit stop taking new leases and are
//     destroyed when their last one comes back. All count as surplus.
//     Raised: waiting borrowers are let in at once.
//   - MaxIdlePerKey lowered: idle objects over it are destroyed at once, and
//     returns beyond it from then on. Raised: kept from the next return.
//   - MinIdlePerKey raised: the next eviction run makes up the difference.
//     Lowered: no more is made, and empty keys it alone was keeping leave.
//   - WhenExhausted switched to Fail: waiting borrowers fail with
//     ErrExhausted at once (with shared leases, except those waiting for an
//     object of their key being made or activated, as new ones would).
//     Switched to Block: from the next Borrow.
//   - MaxWait: Borrows that start waiting from then on; one already waiting
//     keeps the deadline it started with.
//   - FIFO: every key's idle objects are reordered at once.
//   - TestOnCreate, TestOnBorrow, TestOnReturn, TestWhileIdle: from the next
//     make, Borrow, Return or eviction run; idle objects are not retested.
//   - TimeBetweenEvictionRuns: the evictor is rescheduled, and the pool's
//     clock set for the new interval; stamps taken under a longer one (late
//     by up to the old interval) are brought back to the new clock, so that
//     idle times and abandoned leases are judged by the new interval at
//     once. Switched off: stamps stop moving, as for a pool that never had
//     an evictor. Switched on: idle and active times are measured from now.
//   - NumTestsPerEvictionRun, MinEvictableIdle, SoftMinEvictableIdle,
//     EvictionPolicy: from the next eviction run, over the idle times
//     already counted.
//   - MaxLifetime, MaxLifetimeJitter: apply to every object by its creation
//     time (and the share of the jitter drawn when it was made): an object
//     past the new lifetime is not lent again, and is destroyed when found
//     idle or returned.
//   - Abandoned: switched on, covers leases taken from then on; its Timeout
//     applies to tracked leases at the next sweep.
//   - MakeFailureThreshold: 0 ends every key's backoff and forgets its
//     failures; raised above a key's failures in a row, ends that key's
//     backoff; lowered, a key reaching it backs off at its next failure.
//     MakeBackoffMax lowered: no backoff period runs past the new maximum.
//     MakeBackoffBase: from the next period.
//   - FactoryTimeout, SwallowedErrorListener: from the next factory call or
//     error; calls in flight keep their context.
//
// It refuses an invalid cfg, or a change of MaxSharesPerObject, with an
// error wrapping ErrInvalidConfig, and returns ErrClosed on a closed pool.
// The destroys it causes at once are bounded by FactoryTimeout and their
// errors returned joined. Safe for concurrent use.
func (p *Pool[K, V]) SetConfig(cfg Config) error {
	cfg, lim, err := cfg.resolve()
	if err != nil {
		return err
	}
	var doomed []*object[K, V]
	p.mu.Lock()
	if p.closed {
		p.unlock()
		return ErrClosed
	}
	if lim.maxShares != p.lim.maxShares {
		p.unlock()
		return fmt.Errorf("%w: MaxSharesPerObject cannot change after New (is %d, got %d)",
			ErrInvalidConfig, p.lim.maxShares, lim.maxShares)
	}
	p.quiesceLanesLocked()
	old := p.cfg.Load()
	if cfg.FIFO != old.FIFO {
		// The front of a key's idle list is lent first: turn each round,
		// so that the oldest is first in FIFO order, the newest in LIFO.
		for _, sp := range p.keys {
			reverseLocked(&sp.idle)
		}
	}
	everyChanged := lim.every != p.lim.every
	if everyChanged {
		if !p.clockRuns() {
			p.clockStart = p.since() // spans measured from now on
		}
		p.handClock = false
		p.scheduleLocked(lim.every)
	}
	raisedMin := lim.minIdle > p.lim.minIdle
	if cfg.MakeFailureThreshold == 0 {
		p.forgetAllFailuresLocked() // backoff switched off: no key stays in it
	}
	p.cfg.Store(&cfg)
	p.lim = lim
	if everyChanged {
		p.resetClockLocked()
	} else {
		p.advanceClockLocked(p.since())
	}
	p.rebackoffLocked(&cfg)
	for _, sp := range p.keys {
		if raisedMin {
			p.wantUpkeepLocked(sp)
		}
		// From the back: those that would be lent last, in either order,
		// so that the rest keep theirs. Objects under an eviction test are
		// left to it; objects being destroyed or retiring are gone already.
		excess := max(sp.idle.Len()-lim.maxIdle, sp.count-sp.dying-sp.retiring-lim.maxPerKey)
		for o := sp.idle.Back(); o != nil && excess > 0; {
			next := sp.idle.Prev(o)
			if o.state != stTesting {
				doomed = p.takeIdleLocked(o, doomed)
				excess--
			}
			o = next
		}
		if p.shared {
			p.retireSurplusLocked(sp, lim.maxPerKey)
		}
		p.dropIfEmptyLocked(sp) // MinIdlePerKey may no longer keep it
	}
	if excess := p.total - p.dying - p.retiring - lim.maxTotal; excess > 0 {
		doomed = p.takeIdleListLocked(&p.idle, excess, doomed)
	}
	for _, sp := range p.keys {
		over := p.total - p.dying - p.retiring - lim.maxTotal
		if !p.shared || over <= 0 {
			break
		}
		p.retireSurplusLocked(sp, max(0, sp.count-sp.retiring-sp.dying-over))
	}
	if cfg.WhenExhausted == Fail && old.WhenExhausted != Fail {
		p.failWaitersLocked()
	}
	if p.wq.Len() > 0 {
		p.wq.unparkAll() // the limits a key was parked for may have moved
		p.dispatchLocked()
	}
	p.unlock()
	return p.destroyAll(context.Background(), doomed, bySurplus)
}

// resetClockLocked sets the pool's clock for a new eviction interval: the
// next stamp is the next tick of the new interval, and stamps taken under
// a longer one, which may lie further ahead, are brought back to it, so
// that the new interval judges them at once. The clock goes back only
// here, and only as far as it must.
func (p *Pool[K, V]) resetClockLocked() {
	now := p.since()
	p.lastTick.Store(now)
	clock := now + min(int64(p.lim.every), math.MaxInt64-now)
	p.clock.Store(clock)
	for _, sp := range p.keys {
		for o := sp.objs.Front(); o != nil; o = sp.objs.Next(o) {
			o.lastBorrowed = min(o.lastBorrowed, clock)
			o.lastReturned = min(o.lastReturned, clock)
			o.activeSince = min(o.activeSince, clock)
		}
	}
	for t := p.lentLeases.Front(); t != nil; t = p.lentLeases.Next(t) {
		t.lastUsed.Store(min(t.lastUsed.Load(), clock))
	}
}

// retireSurplusLocked stops lending sp's lent shared objects, least loaded
// first, until no more than limit of its objects will remain: those
// retiring already (invalidated, past their lifetime) or being destroyed
// do not count.
func (p *Pool[K, V]) retireSurplusLocked(sp *subPool[K, V], limit int) {
	for over := sp.count - sp.retiring - sp.dying - limit; over > 0; over-- {
		var least *object[K, V]
		for o := sp.lent.Front(); o != nil; o = sp.lent.Next(o) {
			if least == nil || o.shares < least.shares {
				least = o
			}
		}
		if least == nil {
			return // the rest are idle, being made or busy: dealt with as they come back
		}
		p.retireLocked(least, bySurplus)
	}
}

// failWaitersLocked fails the waiting borrowers with ErrExhausted, as Fail
// would have at once, except those the objects of their key being made or
// activated will take as shares (with shared leases, Fail waits for those
// too, as tryLocked's soon says): the first of each key's line, as many as
// those objects have shares to spare. The rest are failed from the back.
func (p *Pool[K, V]) failWaitersLocked() {
	for sp := p.wq.keys.Front(); sp != nil; {
		next := p.wq.keys.Next(sp)
		p.failBeyondSoonLocked(sp)
		sp = next
	}
}

// failBeyondSoonLocked is failWaitersLocked for the waiters of sp.
func (p *Pool[K, V]) failBeyondSoonLocked(sp *subPool[K, V]) {
	keep := 0
	if p.shared {
		keep = (sp.making + sp.activating) * (p.keySharesLocked(sp) - 1)
	}
	for sp.waiters.Len() > keep {
		p.grantLocked(sp.waiters.Back(), grant[K, V]{err: ErrExhausted})
	}
}

// rebackoffLocked brings every key's make backoff in line with cfg: a key
// whose failures in a row no longer reach the threshold leaves backoff,
// and no period runs past the new MakeBackoffMax (plus its jitter).
func (p *Pool[K, V]) rebackoffLocked(cfg *Config) {
	now := time.Now()
	latest := now.Add(cfg.MakeBackoffMax + cfg.MakeBackoffMax/5)
	for _, sp := range p.failing {
		b := sp.bo
		if b == nil || p.keys[sp.key] != sp || b.until.IsZero() {
			continue
		}
		switch {
		case b.fails < cfg.MakeFailureThreshold:
			b.until = time.Time{}
			p.backoffKeys--
		case b.until.After(latest):
			b.until = now.Add(cfg.MakeBackoffMax)
		}
	}
}

// reverseLocked turns l, a key's idle list, round.
func reverseLocked[K comparable, V any](l *ilist.List[object[K, V]]) {
	var rev []*object[K, V]
	for o := l.Back(); o != nil; o = l.Prev(o) {
		rev = append(rev, o)
	}
	for _, o := range rev {
		l.Remove(o)
		l.PushBack(o)
	}
}
