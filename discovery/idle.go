package discovery

import "time"

// The idle sweep looks every fifth of IdleTimeout, and a use stamps its
// service only when the stamp is useGrain old or more, so that the uses of
// a busy service (every RPC of its Conn) read the stamp and mostly write
// nothing. A stamp is then at most a grain older than the last use, which
// the sweep allows for: a service is dropped at the first look at which
// IdleTimeout and a grain have passed since its stamp, so more than
// IdleTimeout after its last use and at most a grain and a look later,
// T/32 + T/5 < T/4.
const (
	idleLooksPer  = 5
	idleGrainsPer = 32
)

// useGrain returns how stale a service's stamp may be before a use
// refreshes it.
func (r *Router[T]) useGrain() int64 { return int64(r.idleTimeout / idleGrainsPer) }

// use records a use of svc at the clock's reading now. Safe for concurrent
// use; without IdleTimeout it does nothing.
func (r *Router[T]) use(svc *service) {
	if r.idleTimeout == 0 {
		return
	}
	now := r.clock()
	if now-svc.lastUse.Load() >= r.useGrain() {
		storeMax(&svc.lastUse, now)
	}
}

// idleLoop drops the services unused for IdleTimeout until Close, looking
// every fifth of it.
func (r *Router[T]) idleLoop() {
	t := time.NewTicker(max(r.idleTimeout/idleLooksPer, time.Microsecond))
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			r.sweepIdle()
		}
	}
}

// sweepIdle drops the services whose last use lies IdleTimeout in the past,
// but for those named to Watch and those whose first lookup has not ended.
func (r *Router[T]) sweepIdle() {
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
	// Read under mu: a use under mu (Router.service) is either before it
	// and seen, or after this sweep.
	now := r.clock()
	for _, svc := range r.services {
		last := svc.lastUse.Load()
		// The stamp may be up to a grain older than the last use: the
		// use is IdleTimeout in the past once a grain more has passed.
		if svc.kept || now-last < int64(r.idleTimeout)+r.useGrain() || !isClosed(svc.ready) {
			continue
		}
		// A Conn stamps its service without the lock: announce the drop,
		// then look for a new stamp (see Router.touch). A Conn that saw
		// dropped set asks the Router again, and gets the same service
		// once this lock is released if the drop is called off. A use
		// that stored no stamp read the clock within a grain of last, so
		// IdleTimeout before now: an old use, as the sweep judged.
		svc.dropped.Store(true)
		if svc.lastUse.Load() != last {
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
