package keyedpool

import (
	"errors"
	"log/slog"
	"time"
)

// removeAbandoned takes back the leases unused for longer than ab.Timeout
// at now (Config.Abandoned): each stops being valid and its object is
// invalidated, which frees its room. It returns the destroy errors, joined.
func (p *Pool[K, V]) removeAbandoned(ab *AbandonedConfig, now int64) error {
	var leaked []*Pooled[K, V]
	p.mu.Lock()
	for t := p.lentLeases.Front(); t != nil; t = p.lentLeases.Next(t) {
		// A lease whose flag is not set is on its way to or from a
		// borrower; the swap makes a Return racing with this one lose.
		if now-t.lastUsed.Load() > int64(ab.Timeout) && t.h.leased.CompareAndSwap(true, false) {
			leaked = append(leaked, t.h)
		}
	}
	p.unlock()
	var errs []error
	lg := ab.Logger
	if lg == nil {
		lg = slog.Default() // read now, so that a later slog.SetDefault counts
	}
	for _, h := range leaked {
		sp := h.obj.sub
		if ab.LogAbandoned {
			// The swap above follows Borrow's write of the stack.
			logAbandoned(lg, sp.key, ab.Timeout, h.track.stack)
		}
		err := p.invalidate(h, byAbandoned)
		p.swallow(sp, OpDestroy, err) // nobody asked for this destroy
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// logAbandoned logs a lease taken back. The logger's handler is user code:
// a panic in it is dropped, so that it cannot end the eviction run's
// goroutine, or the Borrow that swept.
func logAbandoned(lg *slog.Logger, key any, timeout time.Duration, stack []byte) {
	defer func() { _ = recover() }()
	lg.Warn("keyedpool: abandoned object taken back", "key", key, "timeout", timeout, "stack", string(stack))
}
