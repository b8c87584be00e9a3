package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// watch runs the service's watch until Close.
func (r *Router[T]) watch(svc *service) {
	err := r.res.Watch(r.ctx, svc.name, &watcher[T]{r: r, svc: svc})
	if r.ctx.Err() == nil {
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
	var added, removed []string
	r.mu.Lock()
	if r.closed {
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
		if st := next[a]; st != nil {
			st.refs++
			continue
		}
		write()
		next[a] = &addrState[T]{refs: 1}
		added = append(added, a)
	}
	for _, a := range old {
		if slices.Contains(snap.addrs, a) {
			continue
		}
		st := next[a]
		if st.refs--; st.refs == 0 {
			write()
			delete(next, a)
			removed = append(removed, a)
		}
	}
	// The service stops picking leaving addresses and the pool stops
	// making connections to them together, under mu.
	svc.snap.Store(snap)
	if copied {
		r.addrs.Store(&next)
	}
	r.mu.Unlock()

	svc.updates.Add(1)
	svc.lastErr.Store(nil)
	w.markReady()
	for _, a := range removed {
		r.retire(a)
	}
	for _, a := range added {
		r.warm(a)
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

// warm makes idle connections to an arriving address, up to the pool's
// MinIdlePerKey, in the background: borrowers do not wait for it.
func (r *Router[T]) warm(addr string) {
	if r.pool.Config().MinIdlePerKey == 0 || r.ctx.Err() != nil {
		return
	}
	// The watch goroutine calling warm is counted in wg, so this Add
	// cannot race with Close's Wait.
	r.wg.Go(func() {
		_ = r.pool.Prepare(r.ctx, addr) // failures are the pool's to count
		if r.addr(addr) == nil {
			r.retire(addr) // it left while being warmed
		}
	})
}
