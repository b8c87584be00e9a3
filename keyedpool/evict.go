package keyedpool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/kpool-go/kpool/evictor"
)

// evictRunner is what the evictor's scheduler runs for a pool: a type of
// its own, so that the clock tick the scheduler calls is not a method of
// Pool, which users could call.
type evictRunner[K comparable, V any] struct{ p *Pool[K, V] }

// RunEviction is one scheduled eviction run.
func (r evictRunner[K, V]) RunEviction(ctx context.Context) error { return r.p.RunEviction(ctx) }

// EvictionTick advances the pool's clock, at every tick of the interval,
// even one whose run is skipped because the previous run still goes on.
func (r evictRunner[K, V]) EvictionTick() { r.p.evictionTick() }

// upkeepMakes bounds the makes one eviction run has in flight to bring keys
// up to MinIdlePerKey, so that a pool of many keys warming up after a burst
// or a restart does not storm its backends with connects.
const upkeepMakes = 4

// RunEviction runs one eviction pass, as the evictor does every
// TimeBetweenEvictionRuns; it may also be called by hand.
//
// With Abandoned.RemoveOnMaintenance it first takes back leaked leases.
// Then it looks at NumTestsPerEvictionRun idle objects, going on where the
// previous run stopped in the pool's list of idle objects, oldest first, so
// that every idle object is visited in turn whatever its key, and the cost
// of a run follows the number of objects it looks at, not the number of
// keys. Each object it looks at is destroyed if it has outlived MaxLifetime
// or the EvictionPolicy says so; otherwise, with TestWhileIdle, it is
// activated, validated and passivated, and destroyed if any of that fails.
// While it is looked at, the object is not lent: a borrower takes another,
// or makes one, or waits for it. With shared leases it also looks at as
// many lent objects, for those past MaxLifetime, whose keys then want
// upkeep. Last, the run makes idle objects for the keys that have fewer
// than MinIdlePerKey spare objects, within the limits, at most a few at a
// time, and never for a key in make backoff.
//
// Without an evictor, the first call starts the pool's clock: it counts
// every idle object's idle time from its own time (see "Timestamps" in
// README.md), so it evicts nothing on idle time alone; later calls judge
// idle times from there.
//
// Destroying an object frees room for the waiting borrowers of every key.
// RunEviction is bounded by ctx and ended by Close; it returns ErrClosed on
// a closed pool, ctx.Err() if ctx ended, and the errors of Destroy and of
// the makes, joined. It is safe for concurrent use.
func (p *Pool[K, V]) RunEviction(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.closeCtx, cancel)()

	cfg := p.cfg.Load()
	p.mu.Lock()
	if p.closed {
		p.unlock()
		return ErrClosed
	}
	p.runs++
	p.flushLanesLocked()
	now := p.since()
	p.advanceClockLocked(now)
	if len(p.failing) > 0 {
		p.forgetFailuresLocked(p.at(now))
	}
	if p.lim.every == 0 && !p.handClock {
		// Called by hand: stamps so far are from a clock nothing moved,
		// so count idle times from now, and stamp exactly from now on.
		p.quiesceLanesLocked() // their stamps change
		p.handClock = true
		p.clockStart = now
		for o := p.idle.Front(); o != nil; o = p.idle.Next(o) {
			o.lastReturned = max(o.lastReturned, now)
		}
	}
	if p.shared && cfg.MaxLifetime > 0 {
		p.sweepLentLocked(cfg, now)
	}
	n := testsPerRun(cfg, p.idle.Len())
	p.unlock()
	defer func() {
		p.mu.Lock()
		p.runs--
		p.checkDrainedLocked()
		p.unlock()
	}()

	var errs []error
	if ab := cfg.Abandoned; ab != nil && ab.RemoveOnMaintenance {
		errs = append(errs, p.removeAbandoned(ab, now))
	}
	settings := evictor.Settings{
		MinEvictableIdle:     cfg.MinEvictableIdle,
		SoftMinEvictableIdle: cfg.SoftMinEvictableIdle,
		MinIdle:              cfg.MinIdlePerKey,
	}
	for ; n > 0 && ctx.Err() == nil; n-- {
		more, err := p.evictOne(ctx, cfg, settings, now)
		errs = append(errs, err)
		if !more {
			break
		}
	}
	errs = append(errs, p.ensureMinIdle(ctx), ctx.Err())
	return errors.Join(errs...)
}

// testsPerRun is how many of count objects a run looks at, as
// NumTestsPerEvictionRun says.
func testsPerRun(cfg *Config, count int) int {
	n := cfg.NumTestsPerEvictionRun
	if n < 0 {
		// ceil(count/|n|) in unsigned arithmetic, so that |math.MinInt|
		// does not overflow: any n up to -count gives 1 test.
		d := uint(-(n + 1)) + 1
		return int((uint(count) + d - 1) / d)
	}
	return min(n, count)
}

// sweepLentLocked looks at as many lent shared objects as a run tests idle
// ones, going on where the last run stopped, and queues upkeep for the
// keys of those past MaxLifetime: such an object takes no new lease
// (lendLocked retires it), so its room is gone, but a key with no new
// borrower would never learn it. The object itself is left to its
// borrowers, so that a take-back or Invalidate counts under its own reason.
func (p *Pool[K, V]) sweepLentLocked(cfg *Config, now int64) {
	o := p.lentNext
	if o == nil {
		o = p.lent.Front()
	}
	for n := testsPerRun(cfg, p.lent.Len()); n > 0 && o != nil; n-- {
		if p.expired(o, cfg, now) {
			p.wantUpkeepLocked(o.sub)
		}
		o = p.lent.Next(o)
	}
	p.lentNext = o
}

// evictOne looks at the next idle object for eviction, as RunEviction says,
// and reports whether there was one. The object stays where it is in the
// idle lists while it is looked at, marked as under test so that it is not
// lent, so that a run that keeps it leaves the lending order as it was.
func (p *Pool[K, V]) evictOne(ctx context.Context, cfg *Config, s evictor.Settings, now int64) (bool, error) {
	p.mu.Lock()
	obj := p.evictNext
	if obj == nil {
		obj = p.idle.Front()
	}
	for obj != nil && obj.state == stTesting { // another run's
		obj = p.idle.Next(obj)
	}
	if obj == nil {
		p.evictNext = nil
		p.unlock()
		return false, nil
	}
	p.evictNext = p.idle.Next(obj)
	obj.state = stTesting
	sp := obj.sub
	sp.testing++
	p.c.evictionTests++
	sp.c.evictionTests++
	c := evictor.Candidate{
		Key:          sp.key,
		Created:      p.at(obj.created),
		LastBorrowed: p.at(obj.lastBorrowed),
		LastReturned: p.at(obj.lastReturned),
		IdleTime:     time.Duration(max(0, now-obj.lastReturned)),
		IdleCount:    p.spareLocked(sp, math.MaxInt),
	}
	clears := uint64(sp.clears)<<32 | uint64(p.clears)
	p.unlock()

	// The object is this goroutine's alone until its test ends.
	why, destroy := byEvictor, true
	switch {
	case cfg.MaxLifetime > 0 && p.expired(obj, cfg, now):
		why = byLifetime
	case p.evictPolicy(cfg.EvictionPolicy, s, c, sp):
	case cfg.TestWhileIdle:
		destroy = !p.testIdle(ctx, obj)
	default:
		destroy = false
	}

	p.mu.Lock()
	sp.testing--
	switch {
	case destroy:
	case p.closed:
		why, destroy = byClose, true
	case uint64(sp.clears)<<32|uint64(p.clears) != clears:
		// Cleared during its test: as it would have been, were it idle.
		why, destroy = byClear, true
	case (sp.waiters.Len() == 0 && sp.idle.Len() > p.lim.maxIdle) || p.overLimitsLocked(sp):
		// Over limits SetConfig lowered during its test, which left it
		// to the test: as it would have been, were it idle.
		why, destroy = bySurplus, true
	}
	if destroy {
		p.unidleLocked(obj)
		p.doomLocked(obj)
	} else {
		obj.state = stIdle
		p.serveIdleLocked(sp)
	}
	p.unlock()
	if destroy {
		return true, p.destroyBackground(obj, why)
	}
	return true, nil
}

// evictPolicy asks policy whether to evict c, for sp's object. A panic in
// the policy keeps the object and is reported as swallowed.
func (p *Pool[K, V]) evictPolicy(policy evictor.Policy, s evictor.Settings, c evictor.Candidate, sp *subPool[K, V]) (evict bool) {
	defer func() {
		if v := recover(); v != nil {
			evict = false
			p.swallow(sp, OpEvictionPolicy, &PanicError{Method: "EvictionPolicy", Value: v, Stack: debug.Stack()})
		}
	}()
	return policy.Evict(s, c)
}

// testIdle activates, validates and passivates an idle object for the
// evictor and reports whether it passed; a failure is reported as
// swallowed. The three calls share one context, bounded by ctx (the run's)
// and FactoryTimeout. If the run's ctx ends during the test, the object is
// not to blame: it passes if it can be passivated.
func (p *Pool[K, V]) testIdle(ctx context.Context, obj *object[K, V]) bool {
	sp := obj.sub
	key, v := sp.key, obj.value
	tctx, cancel := p.bounded(ctx)
	defer cancel()
	run := ctx
	call := func(ctx context.Context, op Op, f func(context.Context, K, V) error) error {
		err := f(ctx, key, v)
		// Reported unless the run ended: a FactoryTimeout that ran out
		// is the object's failure.
		if err != nil && run.Err() == nil {
			p.swallow(sp, op, fmt.Errorf("keyedpool: eviction test of key %v: %w", key, err))
		}
		return err
	}
	passivate := func() bool {
		if ctx.Err() == nil {
			return call(tctx, OpPassivate, p.f.Passivate) == nil
		}
		// Cut short by the run's end: passivate anyway, bounded.
		pctx, cancel := p.bounded(context.WithoutCancel(ctx))
		defer cancel()
		return p.f.Passivate(pctx, key, v) == nil
	}
	if err := call(tctx, OpActivate, p.f.Activate); err != nil {
		return ctx.Err() != nil && passivate()
	}
	if err := call(tctx, OpValidate, p.f.Validate); err != nil && ctx.Err() == nil {
		return false
	}
	return passivate()
}

// spareLocked counts the objects of sp that can take a borrower without a
// make, counting lent ones only until there are upTo: idle ones (those
// under an eviction test included) and, with shared leases, those being
// activated or lent under the share cap and within their lifetime. MinIdlePerKey upkeep
// keeps this count, and the eviction policy sees it as IdleCount, so that
// in shared mode a key whose objects still have room does not grow (a new
// object is made only when every object is at its cap).
func (p *Pool[K, V]) spareLocked(sp *subPool[K, V], upTo int) int {
	n := sp.idle.Len() + int(sp.lane.n.Load()) + sp.activating
	if sp.lent.Len() == 0 || n >= upTo {
		return n
	}
	var cfg *Config
	var now int64
	if p.lim.lifetime {
		cfg = p.cfg.Load()
		now = p.floorNow(cfg)
	}
	for o := sp.lent.Front(); o != nil && n < upTo; o = sp.lent.Next(o) {
		if o.shares < p.shareLimit(o) && (cfg == nil || !p.expired(o, cfg, now)) {
			n++
		}
	}
	return n
}

// upkeepNeedLocked is how many more objects sp needs for MinIdlePerKey
// spare ones (spareLocked), counting those being made to join the pool, so
// that upkeep, Prepare and AddObject at the same time do not overshoot. It
// may be negative.
func (p *Pool[K, V]) upkeepNeedLocked(sp *subPool[K, V]) int {
	return p.lim.minIdle - sp.placing - p.spareLocked(sp, p.lim.minIdle)
}

// wantUpkeepLocked queues sp for the next eviction run's upkeep if it has
// fewer than MinIdlePerKey spare objects (spareLocked).
func (p *Pool[K, V]) wantUpkeepLocked(sp *subPool[K, V]) {
	if sp.queued.Load() || sp.forgotten || p.lim.minIdle == 0 || p.upkeepNeedLocked(sp) <= 0 {
		return
	}
	sp.queued.Store(true)
	if len(p.upkeep) == cap(p.upkeep) && len(p.upkeep) > 2*len(p.keys) {
		// Mostly keys dropped since they were queued, with no run to
		// skip them (no evictor): forget those.
		p.upkeep = slices.DeleteFunc(p.upkeep, func(q *subPool[K, V]) bool { return p.keys[q.key] != q })
	}
	p.upkeep = append(p.upkeep, sp)
}

// ensureMinIdle makes idle objects for the keys queued for upkeep until each
// has MinIdlePerKey spare ones, within the limits, upkeepMakes at a time.
func (p *Pool[K, V]) ensureMinIdle(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		errs []error
		sem  = make(chan struct{}, upkeepMakes)
	)
	p.mu.Lock()
	queue := p.upkeep // only those queued now, so that a busy pool cannot keep the run going
	p.upkeep = nil
	p.unlock()
	next := 0
	defer func() {
		// Keys a cut-short run did not reach wait for the next.
		p.mu.Lock()
		for _, sp := range queue[next:] {
			sp.queued.Store(false)
			if p.keys[sp.key] == sp {
				p.wantUpkeepLocked(sp)
			}
		}
		p.unlock()
	}()
keys:
	for ; next < len(queue); next++ {
		sp := queue[next]
		p.mu.Lock()
		if p.closed {
			p.unlock()
			break
		}
		sp.queued.Store(false)
		// At most what the key lacks now: a make of this run that fails
		// is tried again by the next run, not by this one.
		budget := p.upkeepNeedLocked(sp)
		p.unlock()
		for ; budget > 0; budget-- {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				break keys
			}
			p.mu.Lock()
			if p.fullLocked() {
				// No key can have more; this one and the rest wait for the
				// next run.
				p.unlock()
				<-sem
				break keys
			}
			if p.closed || p.keys[sp.key] != sp || sp.forgotten || sp.count >= p.lim.maxPerKey || p.upkeepNeedLocked(sp) <= 0 {
				// Dropped or cleared since it was queued, or has what it
				// needs, counting the objects being made for it (by this
				// run, Prepare or AddObject). At its limit, the key is
				// queued again when room frees (unreserveLocked).
				p.unlock()
				<-sem
				break
			}
			if sp.bo != nil && p.backoffLocked(sp) != nil {
				p.wantUpkeepLocked(sp) // for a later run: the backoff spaces the tries
				p.unlock()
				<-sem
				break
			}
			p.reserveLocked(sp)
			sp.placing++
			p.unlock()
			wg.Go(func() {
				defer func() { <-sem }()
				err := p.placeObject(ctx, sp, true)
				if err == nil || ctx.Err() != nil {
					return
				}
				p.mu.Lock()
				if p.keys[sp.key] == sp {
					p.wantUpkeepLocked(sp) // try again next run
				}
				p.unlock()
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			})
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}
