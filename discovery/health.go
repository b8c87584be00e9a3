package discovery

import "google.golang.org/grpc/connectivity"

// connected records a connect to the address that succeeded, seen at the
// clock reading at.
func (st *addrState[T]) connected(at int64) { storeMax(&st.okAt, at) }

// connectFailed records a connect to the address that failed, known at the
// clock reading at.
func (st *addrState[T]) connectFailed(at int64) { storeMax(&st.failedAt, at) }

// lastFailed reports whether the latest connect to the address failed: one
// failed after the last that succeeded.
func (st *addrState[T]) lastFailed() bool { return st.failedAt.Load() > st.okAt.Load() }

// look reads the states of st's connections as gRPC reports them now:
// whether one works (grpcpool.Client.Healthy: READY and, with health
// checks, answered SERVING), which it records as a connect that succeeded,
// and whether one is in TRANSIENT_FAILURE, or READY but not serving: its
// last connect failed.
func (r *Router[T]) look(st *addrState[T]) (ready, failing bool) {
	// Read before the states: a failure recorded meanwhile stays the
	// latest.
	at := r.clock()
	if p := st.clients.Load(); p != nil {
		for _, c := range *p {
			switch c.ClientConn().GetState() {
			case connectivity.Ready:
				// A READY transport to a backend whose health Check
				// says it is not serving is no working connection; one
				// not checked yet says nothing either way.
				if c.Healthy() {
					ready = true
				} else if c.HealthErr() != nil {
					failing = true
				}
			case connectivity.TransientFailure:
				failing = true
			}
		}
	}
	if ready {
		st.connected(at)
	}
	return ready, failing
}

// healthy reports whether addr can lend a connection as far as the Router
// knows, for ServiceStats.Usable: it has a READY connection; or none of
// its connections is in TRANSIENT_FAILURE, its last connect did not fail,
// and its first warm-up is not running. A connection that lost its
// transport (IDLE after READY, gRPC's pick_first on a lost transport) or
// that is CONNECTING is no sign of a live backend, nor of a dead one: the
// warm-ups reconnect such connections (see RouterConfig.WarmInterval), and
// the outcome decides. Whatever the make backoff says: with
// MakeFailureThreshold 0 there is none.
func (r *Router[T]) healthy(addr string) bool {
	st := r.addr(addr)
	if st == nil {
		return false
	}
	ready, failing := r.look(st)
	return ready || !failing && !st.lastFailed() && !st.pending.Load()
}

// reconnect tells st's connections that are not connected to connect now:
// an IDLE one (its transport lost, gRPC's IdleTimeout passed, or made
// without ConnectTimeout) connects, and one in TRANSIENT_FAILURE tries
// again at once rather than after gRPC's growing backoff (up to two
// minutes), so that a warm endpoint is a connected one, and a backend that
// went away, or came back, is found out at the next warm-up without any
// RPC. Neither call blocks.
func (r *Router[T]) reconnect(st *addrState[T]) {
	p := st.clients.Load()
	if p == nil {
		return
	}
	for _, c := range *p {
		switch cc := c.ClientConn(); cc.GetState() {
		case connectivity.Idle:
			cc.Connect()
		case connectivity.TransientFailure:
			cc.ResetConnectBackoff()
		}
	}
}
