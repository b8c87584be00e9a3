package keyedpool

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Per-key make backoff (Config.MakeFailureThreshold): a key whose makes
// keep failing refuses further makes for a while, so that its borrowers
// fail fast instead of each waiting for a dial to a dead backend.

// makeBackoff is a key's streak of failed makes. A sub-pool has one only
// while its last make failed, so that keys that never fail pay one pointer.
// Protected by the pool's mu.
type makeBackoff struct {
	fails   int       // consecutive failed makes
	probes  int       // failed probes since the backoff began: the period's doublings
	at      int       // the key's index in pool.failing
	lastErr error     // the last of them
	last    time.Time // when it failed
	until   time.Time // end of the backoff period; zero: not in backoff
	probing bool      // past the period, a make is probing
}

// endProbe notes that a make of the key ended or never ran. b may be nil.
func (b *makeBackoff) endProbe() {
	if b != nil {
		b.probing = false
	}
}

// backoffLocked returns the error that refuses a make of sp while its
// backoff period runs, or nil. Past the period it lets one make through as
// the probe, and refuses the others until the probe ends. The caller counts
// a refusal of a borrower with countRejectedLocked.
func (p *Pool[K, V]) backoffLocked(sp *subPool[K, V]) error {
	b := sp.bo
	if b == nil || b.until.IsZero() {
		return nil
	}
	now := time.Now()
	if !b.probing && !now.Before(b.until) {
		b.probing = true
		return nil
	}
	wait := "a probe is running"
	if d := b.until.Sub(now); d > 0 {
		wait = "retry in " + d.Round(time.Millisecond).String()
	}
	return fmt.Errorf("%w: key %v: %d makes failed in a row, %s: %w", ErrBackoff, sp.key, b.fails, wait, b.lastErr)
}

func (p *Pool[K, V]) countRejectedLocked(sp *subPool[K, V]) {
	p.c.backoffRejected++
	sp.c.backoffRejected++
}

// makeFailedLocked counts a failed make of sp and opens or extends its
// backoff once MakeFailureThreshold failures follow each other.
func (p *Pool[K, V]) makeFailedLocked(sp *subPool[K, V], err error) {
	probe := sp.bo != nil && sp.bo.probing
	sp.bo.endProbe()
	cfg := p.cfg.Load()
	if cfg.MakeFailureThreshold == 0 || p.closed || sp.forgotten {
		// Off; or a key ForgetFailures or Clear forgot, whose make began
		// before: kept only if it is used again.
		return
	}
	if sp.bo == nil {
		sp.bo = &makeBackoff{at: len(p.failing)}
		p.failing = append(p.failing, sp)
	}
	b := sp.bo
	b.fails++
	b.lastErr, b.last = err, time.Now()
	if b.fails < cfg.MakeFailureThreshold {
		return
	}
	switch {
	case b.until.IsZero():
		p.backoffKeys++
		b.probes = 0
	case probe:
		b.probes++
	}
	// A make that began before the backoff and failed in it extends the
	// period, without doubling it: only a failed probe does.
	b.until = time.Now().Add(backoffPeriod(cfg.MakeBackoffBase, cfg.MakeBackoffMax, b.probes, rand.Float64()))
}

// backoffPeriod is the backoff after doublings failed probes: base doubled
// that many times, capped at limit, then moved by up to 20% either way as
// u in [0, 1) says. It neither overflows nor loops, whatever base, limit
// (base <= limit) and doublings are.
func backoffPeriod(base, limit time.Duration, doublings int, u float64) time.Duration {
	d := limit
	if doublings = max(doublings, 0); doublings < 62 && base <= limit>>doublings {
		d = base << doublings
	}
	// d*(0.8 + 0.4u) without overflow: d - d/5 + (2d/5)u, at most d + d/5.
	fifth := d / 5
	j := time.Duration(u * float64(2*fifth))
	return d - fifth + min(max(j, 0), 2*fifth, math.MaxInt64-(d-fifth))
}

// forgetAllFailuresLocked ends every key's failure streak and backoff, and
// drops the keys that hold nothing.
func (p *Pool[K, V]) forgetAllFailuresLocked() {
	for _, sp := range p.keys {
		p.makeOKLocked(sp)
		p.dropIfEmptyLocked(sp)
	}
}

// makeOKLocked ends sp's failure streak, and its backoff if one runs.
func (p *Pool[K, V]) makeOKLocked(sp *subPool[K, V]) {
	if sp.bo == nil {
		return
	}
	if !sp.bo.until.IsZero() {
		p.backoffKeys--
	}
	// Out of failing at once, so that a recovered key is not held there:
	// the last key takes its place.
	i, last := sp.bo.at, len(p.failing)-1
	p.failing[i] = p.failing[last]
	p.failing[i].bo.at = i
	p.failing[last] = nil
	p.failing = p.failing[:last]
	sp.bo = nil
}

// forgetFailuresLocked forgets the failures of keys that hold nothing and
// have not failed for MakeBackoffMax, and drops them, so that one-off keys
// that failed do not grow the pool for ever. Eviction runs call it.
func (p *Pool[K, V]) forgetFailuresLocked(now time.Time) {
	maxQuiet := p.cfg.Load().MakeBackoffMax
	// From the back: makeOKLocked moves the last key, already looked at,
	// into the place it frees.
	for i := len(p.failing) - 1; i >= 0; i-- {
		sp := p.failing[i]
		b := sp.bo
		if sp.count > 0 || sp.waiters.Len() > 0 || b.probing || now.Sub(b.last) < maxQuiet || now.Before(b.until) {
			continue
		}
		p.makeOKLocked(sp)
		p.dropIfEmptyLocked(sp)
	}
}

// ForgetFailures ends key's make-failure streak and its backoff, if any,
// and forgets the key as Clear does (without destroying anything): its
// sub-pool is dropped once it holds nothing and nobody waits on it, even
// when MinIdlePerKey would keep it, unless the key is used again. It is for
// callers that know the key is gone for good (a router whose endpoint left
// its service), whose failing keys would otherwise stay until an eviction
// run forgets them (see Config.MakeFailureThreshold).
func (p *Pool[K, V]) ForgetFailures(key K) {
	if p.checkKey(key) != nil {
		return // the pool holds no such key
	}
	p.mu.Lock()
	defer p.unlock()
	if sp := p.keys[key]; sp != nil {
		sp.setForgotten(true)
		p.makeOKLocked(sp)
		p.dropIfEmptyLocked(sp)
	}
}
