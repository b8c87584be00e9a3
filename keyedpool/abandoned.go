package keyedpool

import (
	"errors"
	"log/slog"
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
	p.mu.Unlock()
	var errs []error
	lg := ab.Logger
	if lg == nil {
		lg = slog.Default() // read now, so that a later slog.SetDefault counts
	}
	for _, h := range leaked {
		if ab.LogAbandoned {
			// The swap above follows Borrow's write of the stack.
			lg.Warn("keyedpool: abandoned object taken back",
				"key", h.obj.sub.key, "timeout", ab.Timeout, "stack", string(h.track.stack))
		}
		errs = append(errs, p.invalidate(h, byAbandoned))
	}
	return errors.Join(errs...)
}
