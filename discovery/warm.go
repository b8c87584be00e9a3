package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// Warm tops every endpoint up to the pool's MinIdlePerKey spare
// connections (idle ones, ones being made, and with shared leases lent
// ones under the share cap), in the background: call it after raising
// MinIdlePerKey with Pool().SetConfig. It also reconnects the pooled
// connections that are not connected: an IDLE one connects, one in
// TRANSIENT_FAILURE tries again at once (see RouterConfig.WarmInterval,
// which calls Warm periodically). Each endpoint has one warm-up at a time,
// which counts the connections being made, so that calls in quick
// succession, and the warm-up of an arriving endpoint, do not overshoot.
// It does nothing after Close.
func (r *Router[T]) Warm() {
	topUp := r.pool.Config().MinIdlePerKey > 0
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	for a, st := range *r.addrs.Load() {
		// Without MinIdlePerKey, only an endpoint with connections has
		// anything to warm: no goroutine per endpoint for nothing.
		if p := st.clients.Load(); topUp || p != nil && len(*p) > 0 {
			r.startWarmLocked(a, st)
		}
	}
}

// warmLoop calls Warm every WarmInterval until Close.
func (r *Router[T]) warmLoop() {
	t := time.NewTicker(r.warmEvery)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			r.Warm()
		}
	}
}

// startWarmLocked asks for a top-up of addr, whose state is st, and starts
// its warm-up goroutine unless one runs: that one does the top-up. Called
// under mu on an open Router, so that the goroutine's Add cannot race with
// Close's Wait.
func (r *Router[T]) startWarmLocked(addr string, st *addrState[T]) {
	st.wantWarm.Store(true)
	if !st.warming.CompareAndSwap(false, true) {
		return
	}
	r.wg.Go(func() {
		for {
			for st.wantWarm.Swap(false) {
				r.topUp(addr, st)
			}
			st.warming.Store(false)
			// A request that came after the last Swap saw warming set and
			// left its top-up to this goroutine: take it, unless another
			// goroutine has started since.
			if !st.wantWarm.Load() || !st.warming.CompareAndSwap(false, true) {
				return
			}
		}
	})
}

// topUp tops addr up to the pool's MinIdlePerKey spare connections with
// the pool's own upkeep (Prepare), which counts the connections being made
// for it, by this Router or an eviction run, and makes at most
// MinIdlePerKey, then reconnects its connections that are not connected,
// those just made without ConnectTimeout included (see reconnect). It does
// nothing at Close.
func (r *Router[T]) topUp(addr string, st *addrState[T]) {
	defer st.pending.Store(false)
	if r.ctx.Err() != nil || r.addr(addr) != st {
		return
	}
	if r.pool.Config().MinIdlePerKey == 0 {
		// Nothing to top up: the connections left by borrows are
		// reconnected, and what becomes of them tells.
		r.reconnect(st)
		return
	}
	err := r.pool.Prepare(r.ctx, addr)
	if r.addr(addr) == nil {
		// It left while being warmed: Prepare may have brought its key
		// back after retire forgot it.
		r.retire(addr)
		return
	}
	r.reconnect(st)
	r.warmed(addr, st, err)
}

// warmed logs a warm-up of addr that failed, once until one succeeds, and
// the success that follows. A top-up that made what it had to (Prepare
// returned nil) succeeded only if a connection to addr is READY: the spare
// connections Prepare counts may be ones that lost their backend, or the
// reconnects under way may not have ended (nothing to say yet).
func (r *Router[T]) warmed(addr string, st *addrState[T], err error) {
	if err != nil && (r.ctx.Err() != nil || errors.Is(err, context.Canceled) ||
		errors.Is(err, keyedpool.ErrExhausted) || errors.Is(err, keyedpool.ErrClosed) ||
		errors.Is(err, keyedpool.ErrBackoff) || errors.Is(err, ErrEndpointRemoved)) {
		return // shutting down, the pool is full, the key backs off or left: nothing new to say
	}
	if err == nil {
		switch ready, failing := r.look(st); {
		case failing && !ready:
			err = fmt.Errorf("discovery: no connection to %s is READY, and gRPC's last connect of one failed (TRANSIENT_FAILURE)", addr)
		case !ready:
			return // connecting: the next warm-up tells
		}
	}
	switch {
	case err != nil && !st.down:
		st.down = true
		if r.log != nil {
			args := []any{"addr", addr, "err", err}
			if r.warmEvery > 0 {
				args = append(args, "retry_every", r.warmEvery)
			}
			r.log.Warn("cannot warm endpoint; retrying", args...)
		}
	case err == nil && st.down:
		st.down = false
		if r.log != nil {
			r.log.Info("endpoint warm again", "addr", addr)
		}
	}
}
