package keyedpool

import (
	"fmt"
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
	lastErr error     // the last of them
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
	sp.bo.endProbe()
	cfg := p.cfg.Load()
	if cfg.MakeFailureThreshold == 0 || p.closed {
		return
	}
	if sp.bo == nil {
		sp.bo = &makeBackoff{}
	}
	b := sp.bo
	b.fails++
	b.lastErr = err
	if b.fails < cfg.MakeFailureThreshold {
		return
	}
	if b.until.IsZero() {
		p.backoffKeys++
	}
	d := cfg.MakeBackoffBase
	for i := cfg.MakeFailureThreshold; i < b.fails && d < cfg.MakeBackoffMax; i++ {
		d *= 2
	}
	d = min(d, cfg.MakeBackoffMax)
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d)) // ±20%
	b.until = time.Now().Add(d)
}

// makeOKLocked ends sp's failure streak, and its backoff if one runs.
func (p *Pool[K, V]) makeOKLocked(sp *subPool[K, V]) {
	if sp.bo == nil {
		return
	}
	if !sp.bo.until.IsZero() {
		p.backoffKeys--
	}
	sp.bo = nil
}
