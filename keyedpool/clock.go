package keyedpool

import (
	"math"
	"math/bits"
	"time"
)

// The pool's clock.
//
// Reading the real clock costs about as much as a whole Borrow and Return on
// a virtual machine, so the hot path never does while an evictor runs.
// Objects and leases are stamped instead from the pool's clock, which the
// evictor sets at every tick of TimeBetweenEvictionRuns (even one whose run
// is skipped because the last is still going) to the time of the next tick:
// a stamp is late by up to one interval, never early, so nothing is evicted
// or taken as abandoned before its time, and the evictor, which acts only at
// runs, decides at most one run later than with exact stamps.
//
// Without an evictor there are no ticks: lease stamps for abandoned tracking
// and the MaxLifetime checks read the real clock (a cost only pools with
// those options pay). Once RunEviction has been called by hand, objects are
// stamped from the real clock too, and idle times count from that first
// call at the earliest: that first call restamps every idle object's
// return time to its own time, and later calls change no stamp.

// since returns the real time in nanoseconds since the pool's epoch.
func (p *Pool[K, V]) since() int64 { return int64(time.Since(p.epoch)) }

// at converts a stamp back to a time.
func (p *Pool[K, V]) at(stamp int64) time.Time { return p.epoch.Add(time.Duration(stamp)) }

// advanceClockLocked records a tick of the evictor, or the start of a run,
// at now. The clock never goes back.
func (p *Pool[K, V]) advanceClockLocked(now int64) {
	if now < p.lastTick.Load() {
		return
	}
	p.lastTick.Store(now)
	// Saturating, so that a huge interval does not wrap round to the past;
	// and never back, so that stamps taken under a longer interval are not
	// later than those taken after SetConfig shortened it.
	p.clock.Store(max(p.clock.Load(), now+min(int64(p.lim.every), math.MaxInt64-now)))
}

// clockRuns reports whether the pool's clock moves: with an evictor, or once
// RunEviction was called by hand. Stamps taken while it does not are the
// objects' creation times, so the spans between them mean nothing.
func (p *Pool[K, V]) clockRuns() bool { return p.lim.every > 0 || p.handClock }

// evictionTick advances the pool's clock. The evictor calls it, through
// evictRunner, at every tick of TimeBetweenEvictionRuns.
func (p *Pool[K, V]) evictionTick() {
	p.mu.Lock()
	p.advanceClockLocked(p.since())
	p.unlock()
}

// stampLocked is the pool's clock for a stamp on obj, which is never before
// the object was made.
func (p *Pool[K, V]) stampLocked(obj *object[K, V]) int64 {
	switch {
	case p.handClock:
		return max(p.since(), obj.created)
	case p.lim.every == 0:
		return obj.created // no clock runs (the evictor was switched off, say)
	}
	return max(p.clock.Load(), obj.created)
}

// useStamp is the stamp for a lease's last use.
func (p *Pool[K, V]) useStamp() int64 {
	if p.cfg.Load().TimeBetweenEvictionRuns <= 0 {
		return p.since()
	}
	return p.clock.Load()
}

// floorNow is a time no later than now: the evictor's last tick, or the
// real time without an evictor.
func (p *Pool[K, V]) floorNow(cfg *Config) int64 {
	if cfg.TimeBetweenEvictionRuns <= 0 {
		return p.since()
	}
	return p.lastTick.Load()
}

// expired reports whether obj has outlived cfg.MaxLifetime, plus its share
// of the jitter, at now.
func (p *Pool[K, V]) expired(obj *object[K, V], cfg *Config, now int64) bool {
	hi, lo := bits.Mul64(uint64(cfg.MaxLifetimeJitter), uint64(obj.jitter))
	jitter := int64(hi<<32 | lo>>32) // MaxLifetimeJitter * jitter / 2^32, without overflow
	return now-obj.created >= int64(cfg.MaxLifetime)+min(jitter, math.MaxInt64-int64(cfg.MaxLifetime))
}
