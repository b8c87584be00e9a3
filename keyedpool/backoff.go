package keyedpool

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Per-key make backoff (Config.MakeFailureThreshold): a key whose makes
// keep failing refuses further makes for a while, so that its borrowers
// fail fast instead of each waiting for a dial to a dead backend.

// backoffLocked returns the error that refuses a make of sp while its
// backoff period runs, or nil. Past the period it lets one make through as
// the probe, and refuses the others until the probe ends. The caller counts
// a refusal of a borrower in BackoffRejected.
func (p *Pool[K, V]) backoffLocked(sp *subPool[K, V]) error {
	if sp.backoffUntil.IsZero() {
		return nil
	}
	now := time.Now()
	if !sp.probing && !now.Before(sp.backoffUntil) {
		sp.probing = true
		return nil
	}
	wait := "a probe is running"
	if d := sp.backoffUntil.Sub(now); d > 0 {
		wait = "retry in " + d.Round(time.Millisecond).String()
	}
	return fmt.Errorf("%w: key %v: %d makes failed in a row, %s: %w", ErrBackoff, sp.key, sp.fails, wait, sp.lastErr)
}

func (p *Pool[K, V]) countRejectedLocked(sp *subPool[K, V]) {
	p.c.backoffRejected++
	sp.c.backoffRejected++
}

// makeFailedLocked counts a failed make of sp and opens or extends its
// backoff once MakeFailureThreshold failures follow each other.
func (p *Pool[K, V]) makeFailedLocked(sp *subPool[K, V], err error) {
	sp.probing = false
	cfg := p.cfg.Load()
	if cfg.MakeFailureThreshold == 0 {
		return
	}
	sp.fails++
	sp.lastErr = err
	if sp.fails < cfg.MakeFailureThreshold {
		return
	}
	if sp.backoffUntil.IsZero() {
		p.backoffKeys++
	}
	d := cfg.MakeBackoffBase
	for i := cfg.MakeFailureThreshold; i < sp.fails && d < cfg.MakeBackoffMax; i++ {
		d *= 2
	}
	d = min(d, cfg.MakeBackoffMax)
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d)) // ±20%
	sp.backoffUntil = time.Now().Add(d)
}

// makeOKLocked ends sp's failure streak, and its backoff if one runs.
func (p *Pool[K, V]) makeOKLocked(sp *subPool[K, V]) {
	if sp.fails == 0 {
		return
	}
	if !sp.backoffUntil.IsZero() {
		p.backoffKeys--
	}
	sp.fails, sp.lastErr, sp.backoffUntil, sp.probing = 0, nil, time.Time{}, false
}
