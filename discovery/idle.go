package discovery

import "time"

// idleLoop drops the services unused for IdleTimeout until Close, looking
// every quarter of it.
func (r *Router[T]) idleLoop() {
	t := time.NewTicker(max(r.idleTimeout/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.sweepIdle(now)
		}
	}
}

// sweepIdle drops the services that have not been used since IdleTimeout
// before now, but for those named to Watch and those whose first lookup has
// not ended.
func (r *Router[T]) sweepIdle(now time.Time) {
	type drop struct {
		svc     *service
		removed []string
	}
	var drops []drop
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	for _, svc := range r.services {
		if svc.used.Swap(false) {
			svc.idleSince = now
			continue
		}
		if svc.kept || now.Sub(svc.idleSince) < r.idleTimeout || !isClosed(svc.ready) {
			continue
		}
		// A Conn marks its service used without the lock: announce the
		// drop, then look for a use once more (see service.touch). A Conn
		// that saw dropped set asks the Router again, and gets the same
		// service once this lock is released if the drop is called off.
		svc.dropped.Store(true)
		if svc.used.Load() {
			svc.dropped.Store(false)
			continue
		}
		drops = append(drops, drop{svc, r.dropLocked(svc)})
	}
	r.mu.Unlock()
	for _, d := range drops {
		r.dropped(d.svc, d.removed)
	}
}

// isClosed reports whether c, which is only ever closed, is.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
