package discovery

import (
	"slices"
	"strings"
)

// ServiceStats is a snapshot of one service a Router serves.
type ServiceStats struct {
	Service   string
	Endpoints int    // endpoints in the service's latest snapshot
	Usable    int    // of those, how many the router would route to now
	Updates   int64  // snapshots received since the service was first used
	Errors    int64  // failed lookups (resolver errors) since then
	LastError string // "" when the latest lookup succeeded
}

// Services returns a snapshot of every service the Router serves (used at
// least once since it was made), sorted by Service. Usable counts the
// endpoints that are not failing (see Borrow): while none is usable the
// Router still tries them all.
func (r *Router[T]) Services() []ServiceStats {
	r.mu.Lock()
	svcs := make([]*service, 0, len(r.services))
	for _, s := range r.services {
		svcs = append(svcs, s)
	}
	r.mu.Unlock()
	// Usable asks the pool: after the lock.
	out := make([]ServiceStats, 0, len(svcs))
	for _, s := range svcs {
		st := ServiceStats{Service: s.name, Updates: s.updates.Load(), Errors: s.errors.Load()}
		if p := s.lastErr.Load(); p != nil {
			st.LastError = *p
		}
		if snap := s.snap.Load(); snap != nil {
			st.Endpoints = len(snap.eps)
			for _, a := range snap.addrs {
				if r.usable(a) {
					st.Usable++
				}
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ServiceStats) int { return strings.Compare(a.Service, b.Service) })
	return out
}
