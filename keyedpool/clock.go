package keyedpool

import (
	"math/bits"
	"time"
)

// The pool's clock.
//
// Reading the real clock costs about as much as a whole Borrow and Return on
// a virtual machine, so the hot path never does while an evictor runs.
// Objects and leases are stamped instead from the pool's clock, which every
// eviction run sets to the time of the next run: a stamp is late by up to
// one TimeBetweenEvictionRuns, never early, so nothing is evicted or taken
// as abandoned before its time, and the evictor, which acts only at runs,
// decides at most one run later than with exact stamps.
//
// Without an evictor there are no runs to move the clock: lease stamps for
// abandoned tracking and the MaxLifetime check on Return read the real clock
// (a cost only pools with those options pay), and idle times count from the
// last run of RunEviction called by hand.

// since returns the real time in nanoseconds since the pool's epoch.
func (p *Pool[K, V]) since() int64 { return int64(time.Since(p.epoch)) }

// at converts a stamp back to a time.
func (p *Pool[K, V]) at(stamp int64) time.Time { return p.epoch.Add(time.Duration(stamp)) }

// advanceClockLocked records an eviction run starting at now.
func (p *Pool[K, V]) advanceClockLocked(now int64) {
	p.lastRun.Store(now)
	p.clock.Store(now + int64(p.lim.every))
}

// stampLocked is the pool's clock for a stamp on obj, which is never before
// the object was made.
func (p *Pool[K, V]) stampLocked(obj *object[K, V]) int64 { return max(p.clock.Load(), obj.created) }

// useStamp is the stamp for a lease's last use.
func (p *Pool[K, V]) useStamp() int64 {
	if p.cfg.Load().TimeBetweenEvictionRuns <= 0 {
		return p.since()
	}
	return p.clock.Load()
}

// floorNow is a time no later than now: the start of the last eviction run,
// or the real time without an evictor.
func (p *Pool[K, V]) floorNow(cfg *Config) int64 {
	if cfg.TimeBetweenEvictionRuns <= 0 {
		return p.since()
	}
	return p.lastRun.Load()
}

// expired reports whether obj has outlived cfg.MaxLifetime, plus its share
// of the jitter, at now.
func (p *Pool[K, V]) expired(obj *object[K, V], cfg *Config, now int64) bool {
	hi, lo := bits.Mul64(uint64(cfg.MaxLifetimeJitter), uint64(obj.jitter))
	jitter := int64(hi<<32 | lo>>32) // MaxLifetimeJitter * jitter / 2^32, without overflow
	return now-obj.created >= int64(cfg.MaxLifetime)+jitter
}
