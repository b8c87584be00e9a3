package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// watch runs the service's watch until its context ends.
func (r *Router[T]) watch(svc *service) {
	err := r.res.Watch(svc.ctx, svc.name, &watcher[T]{r: r, svc: svc})
	if svc.ctx.Err() == nil {
		// The resolver gave up: the service keeps its last endpoints and
		// says why it will learn no more.
		if err == nil {
			err = errors.New("resolver ended the watch")
		}
		(&watcher[T]{r: r, svc: svc}).Error(fmt.Errorf("discovery: watch of service %q ended: %w", svc.name, err))
	}
}

// watcher takes a service's updates from its resolver. Its methods are
// called from one goroutine at a time.
type watcher[T any] struct {
	r   *Router[T]
	svc *service
}

func (w *watcher[T]) markReady() {
	if !w.svc.readied {
		w.svc.readied = true
		close(w.svc.ready)
	}
}

// Error counts a failed lookup; the service keeps its endpoints.
func (w *watcher[T]) Error(err error) {
	msg := err.Error()
	if msg == "" {
		msg = fmt.Sprintf("%T", err)
	}
	w.svc.errors.Add(1)
	w.svc.lastErr.Store(&msg)
	w.markReady()
}

// Update makes eps the service's endpoints: arriving addresses are routed
// to at once and warmed, leaving ones get no new borrows and their idle
// connections are closed.
func (w *watcher[T]) Update(eps []Endpoint) {
	r, svc := w.r, w.svc
	snap := newSnapshot(eps)
	// Read before the lock: no pool call under it.
	warm := r.pool.Config().MinIdlePerKey > 0
	var joined, left []string   // this service's
	var added, removed []string // every service's: new to the Router, gone from it
	r.mu.Lock()
	if r.closed || svc.dropped.Load() {
		// Forgotten or idle: its watch is ending. (Under mu, dropped is
		// never the idle sweep's passing mark.)
		r.mu.Unlock()
		return
	}
	var old []string
	if o := svc.snap.Load(); o != nil {
		old = o.addrs
	}
	cur := *r.addrs.Load()
	next, copied := cur, false
	write := func() { // copy on the first write: readers hold cur
		if !copied {
			next, copied = maps.Clone(cur), true
		}
	}
	for _, a := range snap.addrs {
		if slices.Contains(old, a) {
			continue
		}
		joined = append(joined, a)
		if st := next[a]; st != nil {
			st.refs++
			continue
		}
		write()
		st := &addrState[T]{refs: 1}
		st.pending.Store(warm)
		next[a] = st
		added = append(added, a)
	}
	for _, a := range old {
		if slices.Contains(snap.addrs, a) {
			continue
		}
		left = append(left, a)
		st := next[a]
		if st.refs--; st.refs == 0 {
			write()
			delete(next, a)
			removed = append(removed, a)
		}
	}
	// Counted before the snapshot is stored, so that whoever sees the new
	// endpoints sees the lookup counted and its error cleared.
	svc.updates.Add(1)
	svc.lastErr.Store(nil)
	// The service stops picking leaving addresses and the pool stops
	// making connections to them together, under mu.
	svc.snap.Store(snap)
	if copied {
		r.addrs.Store(&next)
	}
	if warm {
		// After the store: a warm-up stops at once for an address it
		// cannot find.
		for _, a := range added {
			r.startWarmLocked(a, next[a])
		}
	}
	r.mu.Unlock()

	w.markReady()
	if r.log != nil {
		for _, a := range left {
			r.log.Info("endpoint removed", "addr", a, "service", svc.name)
		}
		for _, a := range joined {
			r.log.Info("endpoint added", "addr", a, "service", svc.name)
		}
	}
	for _, a := range removed {
		r.retire(a)
	}
}

// newSnapshot drops endpoints whose address came earlier in eps.
func newSnapshot(eps []Endpoint) *snapshot {
	s := &snapshot{eps: make([]Endpoint, 0, len(eps)), addrs: make([]string, 0, len(eps))}
	seen := make(map[string]bool, len(eps))
	for _, e := range eps {
		a := e.Addr()
		if seen[a] {
			continue
		}
		seen[a] = true
		s.eps = append(s.eps, e)
		s.addrs = append(s.addrs, a)
	}
	return s
}

// retire closes the idle connections of an address no service lists any
// more, and forgets its make failures, so that its key leaves the pool once
// its lent connections, destroyed as they come back, are gone.
func (r *Router[T]) retire(addr string) {
	_ = r.pool.Clear(context.Background(), addr)
	r.pool.ForgetFailures(addr)
}
