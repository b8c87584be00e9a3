package discovery

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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

// RoundRobin picks usable endpoints in turn. The zero value is ready to use.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick returns the next usable endpoint after the one picked last.
func (b *RoundRobin) Pick(c Candidates) int {
	n := uint64(len(c.Endpoints()))
	if n == 0 {
		return -1
	}
	start := b.next.Add(1) - 1
	for j := range n {
		if i := int((start + j) % n); c.Usable(i) {
			return i
		}
	}
	return -1
}

// WeightedRoundRobin picks usable endpoints in proportion to their Weight
// (Consul's service weights), spread out evenly over time: the smooth
// weighted round robin of nginx, where weights 5, 1, 1 give a, a, b, a, c,
// a, a rather than five a in a row. Its state starts over with each new
// snapshot. The zero value is ready to use; Pick costs time linear in the
// number of endpoints.
type WeightedRoundRobin struct {
	mu      sync.Mutex // protects the fields below
	of      *Endpoint  // first element of the snapshot current belongs to
	current []int      // smooth WRR's current weight of each endpoint
}

// Pick returns the usable endpoint with the highest current weight, after
// adding every usable endpoint's weight to its current weight, and takes
// the total of those weights from the one picked.
func (b *WeightedRoundRobin) Pick(c Candidates) int {
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
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.of != &eps[0] || len(b.current) != len(eps) {
		b.of, b.current = &eps[0], make([]int, len(eps))
	}
	best, total := -1, 0
	for i := range eps {
		if !ok[i] {
			continue
		}
		w := eps[i].weight()
		b.current[i] += w
		total += w
		if best < 0 || b.current[i] > b.current[best] {
			best = i
		}
	}
	b.current[best] -= total
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
