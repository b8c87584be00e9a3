package discovery

import (
	"slices"
	"strings"
)

// ServiceStats is a snapshot of one service a Router serves.
type ServiceStats struct {
	Service string
	// Kept is true for a service named to Router.Watch, watched until
	// Forget (a service the program is configured with), false for one
	// watched since it was used (Borrow, Conn, Endpoints), whose watch ends
	// after RouterConfig.IdleTimeout without a use.
	Kept      bool
	Endpoints int    // endpoints in the service's latest snapshot
	Usable    int    // of those, how many can lend a connection as far as the Router knows
	Updates   int64  // snapshots received since the service was first used
	Errors    int64  // failed lookups (resolver errors) since then
	LastError string // "" when the latest lookup succeeded
}

// Services returns a snapshot of every service the Router watches (named
// to Watch, or used and neither forgotten nor idle; none after Close),
// sorted by Service.
//
// Usable counts the endpoints that have a READY connection, or that have
// no connection in TRANSIENT_FAILURE, whose latest connect (a make, a
// reconnect, the validation of a connection) did not fail, and whose first
// warm-up is not running. An endpoint whose connects fail is not usable
// from the first failure, whatever the pool's make backoff and whatever
// IDLE connections it still has, until a connect succeeds again (a
// warm-up, a borrow, the pool's upkeep) or one of its connections is seen
// READY. A connection that lost its transport (IDLE after READY) or is
// connecting is no sign either way: RouterConfig.WarmInterval's warm-ups
// reconnect it, so that an endpoint whose backend went away is not usable
// from the next warm-up on, without any RPC. An endpoint nothing has
// connected to yet (MinIdlePerKey 0, no borrow) counts as usable: nothing
// is known against it. Borrow skips fewer (see its doc): while none is
// usable it still tries them all.
func (r *Router[T]) Services() []ServiceStats {
	type entry struct {
		svc  *service
		kept bool
	}
	r.mu.Lock()
	svcs := make([]entry, 0, len(r.services))
	for _, s := range r.services {
		svcs = append(svcs, entry{s, s.kept})
	}
	r.mu.Unlock()
	// healthy reads connection states: after the lock.
	out := make([]ServiceStats, 0, len(svcs))
	for _, e := range svcs {
		s := e.svc
		st := ServiceStats{Service: s.name, Kept: e.kept, Updates: s.updates.Load(), Errors: s.errors.Load()}
		if p := s.lastErr.Load(); p != nil {
			st.LastError = *p
		}
		if snap := s.snap.Load(); snap != nil {
			st.Endpoints = len(snap.eps)
			for _, a := range snap.addrs {
				if r.healthy(a) {
					st.Usable++
				}
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ServiceStats) int { return strings.Compare(a.Service, b.Service) })
	return out
}
