package discovery

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"weak"
)

// Candidates is what a Balancer picks from for one borrow: a service's
// endpoints, which of them may be picked, and how loaded each is.
type Candidates interface {
	// Endpoints returns the service's latest endpoints. The slice is the
	// same (same backing array) for every pick until the service's next
	// snapshot, so a balancer may keep state keyed by it. Read only.
	Endpoints() []Endpoint
	// Usable reports whether Endpoints()[i] may be picked: not already
	// tried by this borrow and, while some endpoints are healthy, not
	// failing (all connections in TRANSIENT_FAILURE, or make backoff open).
	Usable(i int) bool
	// Load returns the load of Endpoints()[i]: the leases its connections
	// have out (keyedpool.Gauges.SharesInUse) plus the borrowers waiting
	// for one (Gauges.Waiters).
	Load(i int) int
}

// A Balancer picks the endpoint of each borrow. A Router makes one per
// service (RouterConfig.NewBalancer), so a Balancer's state is its
// service's. Pick must be safe for concurrent use.
type Balancer interface {
	// Pick returns the index in c.Endpoints() of an endpoint for which
	// c.Usable is true, or -1 if there is none.
	Pick(c Candidates) int
}

// The built-in balancers are empty structs with value receivers, so that
// RoundRobin{}, &RoundRobin{} and copies of either all work alike, as
// LeastLoaded always did. The state RoundRobin and WeightedRoundRobin need
// (the turn, the smooth weights) belongs to the endpoints they pick from:
// Candidates.Endpoints promises one backing array per snapshot of a
// service, so a table keyed weakly by that array gives each service, and
// each of its snapshots, a state of its own, which goes when the snapshot
// does. A Router makes one balancer per service, so this is the state per
// service a balancer kept in its fields before; it starts over with each
// snapshot.

// perSnapshot holds a state of type S for each snapshot of endpoints,
// keyed by a weak pointer to the snapshot's first element. Safe for
// concurrent use.
type perSnapshot[S any] struct {
	m    sync.Map // weak.Pointer[Endpoint] -> *S
	init func(s *S, eps []Endpoint)
}

// of returns the state of the snapshot eps, which is not empty, making it
// on the first call for eps.
func (p *perSnapshot[S]) of(eps []Endpoint) *S {
	k := weak.Make(&eps[0])
	if s, ok := p.m.Load(k); ok {
		return s.(*S)
	}
	s := new(S)
	p.init(s, eps)
	got, loaded := p.m.LoadOrStore(k, s)
	if !loaded {
		// The weak key does not keep the snapshot alive; once the
		// snapshot is gone its entry goes too.
		runtime.AddCleanup(&eps[0], func(k weak.Pointer[Endpoint]) { p.m.Delete(k) }, k)
	}
	return got.(*S)
}

// turns is RoundRobin's state: the next turn of each snapshot, starting at
// a random one, so that balancers that start together (many processes, or
// one whose service just changed) do not all pick the first endpoint first.
var turns = perSnapshot[atomic.Uint64]{init: func(t *atomic.Uint64, eps []Endpoint) {
	t.Store(rand.Uint64N(uint64(len(eps))))
}}

// RoundRobin picks usable endpoints in turn, starting at a random one. It
// holds no state of its own (see above): the zero value is ready to use, by
// value or by pointer, and is safe for concurrent use.
type RoundRobin struct{}

// Pick returns the next usable endpoint after the one picked last from the
// same endpoints.
func (RoundRobin) Pick(c Candidates) int {
	eps := c.Endpoints()
	n := uint64(len(eps))
	if n == 0 {
		return -1
	}
	start := turns.of(eps).Add(1) - 1
	for j := range n {
		if i := int((start + j) % n); c.Usable(i) {
			return i
		}
	}
	return -1
}

// wrrState is WeightedRoundRobin's state for one snapshot.
type wrrState struct {
	mu      sync.Mutex // protects the field below
	current []int      // smooth WRR's current weight of each endpoint
}

var weights = perSnapshot[wrrState]{init: func(s *wrrState, eps []Endpoint) {
	s.current = make([]int, len(eps))
}}

// WeightedRoundRobin picks usable endpoints in proportion to their Weight
// (Consul's service weights), spread out evenly over time: the smooth
// weighted round robin of nginx, where weights 5, 1, 1 give a, a, b, a, c,
// a, a rather than five a in a row. Its state starts over with each new
// snapshot. It holds no state of its own (see above): the zero value is
// ready to use, by value or by pointer, and is safe for concurrent use.
// Pick costs time linear in the number of endpoints.
type WeightedRoundRobin struct{}

// Pick returns the usable endpoint with the highest current weight, after
// adding every usable endpoint's weight to its current weight, and takes
// the total of those weights from the one picked.
func (WeightedRoundRobin) Pick(c Candidates) int {
	eps := c.Endpoints()
	if len(eps) == 0 {
		return -1
	}
	// Ask which are usable before locking: Usable may take other locks.
	var buf [64]bool
	ok := buf[:0]
	if len(eps) > len(buf) {
		ok = make([]bool, 0, len(eps))
	}
	some := false
	for i := range eps {
		u := c.Usable(i)
		ok = append(ok, u)
		some = some || u
	}
	if !some {
		return -1
	}
	s := weights.of(eps)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.current) != len(eps) {
		// A Candidates that broke its promise and resliced one array.
		s.current = make([]int, len(eps))
	}
	best, total := -1, 0
	for i := range eps {
		if !ok[i] {
			continue
		}
		w := eps[i].weight()
		s.current[i] += w
		total += w
		if best < 0 || s.current[i] > s.current[best] {
			best = i
		}
	}
	s.current[best] -= total
	return best
}

// LeastLoaded picks, of two usable endpoints drawn at random, the one with
// the lower Load (the power of two choices): nearly as good as asking every
// endpoint, at the cost of asking two. With one usable endpoint it picks it.
// The zero value is ready to use.
type LeastLoaded struct{}

// Pick draws two distinct endpoints and returns the less loaded of those
// that are usable; when neither is, the less loaded of two usable ones
// found by a scan.
func (LeastLoaded) Pick(c Candidates) int {
	n := len(c.Endpoints())
	switch n {
	case 0:
		return -1
	case 1:
		if c.Usable(0) {
			return 0
		}
		return -1
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	ui, uj := c.Usable(i), c.Usable(j)
	switch {
	case ui && uj:
		return lessLoaded(c, i, j)
	case ui:
		return i
	case uj:
		return j
	}
	// Both failing or tried: draw among the usable ones.
	var usable []int
	for k := range n {
		if c.Usable(k) {
			usable = append(usable, k)
		}
	}
	switch len(usable) {
	case 0:
		return -1
	case 1:
		return usable[0]
	}
	a := rand.IntN(len(usable))
	b := rand.IntN(len(usable) - 1)
	if b >= a {
		b++
	}
	return lessLoaded(c, usable[a], usable[b])
}

func lessLoaded(c Candidates, i, j int) int {
	if c.Load(j) < c.Load(i) {
		return j
	}
	return i
}

// checkPick panics when a Balancer returns an index out of range: a bug in
// the balancer, which would otherwise route to a wrong endpoint.
func checkPick(b Balancer, i, n int) {
	if i < -1 || i >= n {
		panic(fmt.Sprintf("discovery: %T.Pick returned %d for %d endpoints", b, i, n))
	}
}
