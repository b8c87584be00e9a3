package discovery_test

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// fakeCandidates is a Candidates with fixed usability and loads.
type fakeCandidates struct {
	eps    []discovery.Endpoint
	usable []bool // nil: all usable
	loads  []int
}

func (f *fakeCandidates) Endpoints() []discovery.Endpoint { return f.eps }
func (f *fakeCandidates) Usable(i int) bool               { return f.usable == nil || f.usable[i] }
func (f *fakeCandidates) Load(i int) int {
	if f.loads == nil {
		return 0
	}
	return f.loads[i]
}

func named(weights ...int) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, len(weights))
	for i, w := range weights {
		eps[i] = discovery.Endpoint{Address: string(rune('a' + i)), Weight: w}
	}
	return eps
}

// picks runs n picks and returns the picked endpoints' names.
func picks(b discovery.Balancer, c discovery.Candidates, n int) string {
	var sb strings.Builder
	for range n {
		i := b.Pick(c)
		if i < 0 {
			sb.WriteByte('-')
			continue
		}
		sb.WriteString(c.Endpoints()[i].Address)
	}
	return sb.String()
}

// inTurn reports whether picks follows cycle, from any point of it.
func inTurn(picks, cycle string) bool {
	return strings.Contains(strings.Repeat(cycle, len(picks)/len(cycle)+2), picks)
}

func TestRoundRobin(t *testing.T) {
	c := &fakeCandidates{eps: named(1, 1, 1)}
	if got := picks(discovery.RoundRobin{}, c, 7); !inTurn(got, "abc") {
		t.Errorf("RoundRobin picks = %q, want a, b, c in turn", got)
	}
	c.usable = []bool{true, false, true}
	// b's turn goes to the next usable one, c.
	if got := picks(discovery.RoundRobin{}, c, 6); !inTurn(got, "acc") {
		t.Errorf("RoundRobin picks with b unusable = %q, want a, c, c in turn", got)
	}
	c.usable = []bool{false, false, false}
	if got := (discovery.RoundRobin{}).Pick(c); got != -1 {
		t.Errorf("RoundRobin.Pick(none usable) = %d, want -1", got)
	}
	if got := (discovery.RoundRobin{}).Pick(&fakeCandidates{}); got != -1 {
		t.Errorf("RoundRobin.Pick(no endpoints) = %d, want -1", got)
	}
}

// The turn belongs to the endpoints picked from, not to the balancer
// value: copies and pointers continue it, and a new snapshot has its own.
func TestRoundRobinTurnIsTheSnapshots(t *testing.T) {
	c := &fakeCandidates{eps: named(1, 1, 1)}
	var b discovery.RoundRobin
	copied := b
	got := picks(b, c, 2) + picks(copied, c, 2) + picks(&b, c, 2)
	if !inTurn(got, "abc") {
		t.Errorf("picks by value, by a copy and by pointer = %q, want a, b, c in turn", got)
	}
	other := &fakeCandidates{eps: named(1, 1)}
	if got := picks(b, other, 4); !inTurn(got, "ab") {
		t.Errorf("picks from another snapshot = %q, want a, b in turn", got)
	}
}

// The starting turn is random: balancers that start together do not all
// pick the first endpoint first.
func TestRoundRobinStartsAtRandom(t *testing.T) {
	first := map[int]bool{}
	for range 100 {
		first[discovery.RoundRobin{}.Pick(&fakeCandidates{eps: named(1, 1, 1)})] = true
	}
	if len(first) != 3 {
		t.Errorf("first picks of 100 new snapshots of 3 endpoints = %v, want all 3 seen", first)
	}
}

// Every built-in balancer is a Balancer by value and by pointer, and is
// safe for concurrent use either way: concurrent picks keep the balance.
func TestBalancersByValueAndPointer(t *testing.T) {
	var (
		rr  discovery.Balancer = discovery.RoundRobin{}
		rrp discovery.Balancer = &discovery.RoundRobin{}
		wr  discovery.Balancer = discovery.WeightedRoundRobin{}
		wrp discovery.Balancer = &discovery.WeightedRoundRobin{}
		ll  discovery.Balancer = discovery.LeastLoaded{}
		llp discovery.Balancer = &discovery.LeastLoaded{}
	)
	const goroutines, each = 4, 300
	tests := []struct {
		name  string
		b     discovery.Balancer
		loads []int
		want  []int // picks of each endpoint
	}{
		{"RoundRobin{}", rr, nil, []int{400, 400, 400}},
		{"&RoundRobin{}", rrp, nil, []int{400, 400, 400}},
		{"WeightedRoundRobin{}", wr, nil, []int{400, 400, 400}},
		{"&WeightedRoundRobin{}", wrp, nil, []int{400, 400, 400}},
		// Loads 9, 0, 0: a loses every draw it is in.
		{"LeastLoaded{}", ll, []int{9, 0, 0}, nil},
		{"&LeastLoaded{}", llp, []int{9, 0, 0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeCandidates{eps: named(1, 1, 1), loads: tt.loads}
			var counts [3]atomic.Int64
			var wg sync.WaitGroup
			for range goroutines {
				wg.Go(func() {
					for range each {
						i := tt.b.Pick(c)
						if i < 0 || i > 2 {
							t.Errorf("Pick() = %d, want 0, 1 or 2", i)
							return
						}
						counts[i].Add(1)
					}
				})
			}
			wg.Wait()
			got := []int{int(counts[0].Load()), int(counts[1].Load()), int(counts[2].Load())}
			switch {
			case tt.want != nil && !slices.Equal(got, tt.want):
				t.Errorf("%d concurrent picks = %v, want %v", goroutines*each, got, tt.want)
			case tt.want == nil && (got[0] != 0 || got[1]+got[2] != goroutines*each):
				t.Errorf("%d concurrent picks at loads 9, 0, 0 = %v, want none of a", goroutines*each, got)
			}
		})
	}
}

// A Router whose NewBalancer returns a balancer by value keeps it in
// turn across RPCs, as one given by pointer does.
func TestRouterBalancerByValue(t *testing.T) {
	a, b, c := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b, c)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{
		Resolver:    res,
		Pool:        clienttest.SharedLeases(),
		NewBalancer: func() discovery.Balancer { return discovery.RoundRobin{} },
	})
	for i := range 30 {
		if err := unary(grpctest.Context(t, testTimeout), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	for _, s := range []*grpctest.Server{a, b, c} {
		if got := s.UnaryCalls(); got != 10 {
			t.Errorf("server %s UnaryCalls() = %d, want 10 (a third of 30)", s.Addr, got)
		}
	}
}

func TestWeightedRoundRobinIsSmooth(t *testing.T) {
	tests := []struct {
		weights []int
		n       int
		want    string
	}{
		{[]int{5, 1, 1}, 14, "aabacaaaabacaa"}, // nginx's example, twice
		{[]int{1, 1, 1}, 6, "abcabc"},
		{[]int{0, -3, 2}, 8, "cabccabc"}, // zero and negative weigh 1
		{[]int{3, 1}, 8, "aabaaaba"},
	}
	for _, tt := range tests {
		c := &fakeCandidates{eps: named(tt.weights...)}
		if got := picks(discovery.WeightedRoundRobin{}, c, tt.n); got != tt.want {
			t.Errorf("WeightedRoundRobin weights %v picks = %q, want %q", tt.weights, got, tt.want)
		}
	}
}

func TestWeightedRoundRobinSkipsAndResets(t *testing.T) {
	var b discovery.WeightedRoundRobin
	c := &fakeCandidates{eps: named(5, 1, 1), usable: []bool{true, false, true}}
	got := picks(b, c, 12)
	if strings.Contains(got, "b") {
		t.Errorf("picks %q include unusable b", got)
	}
	if n := strings.Count(got, "a"); n != 10 {
		t.Errorf("picks %q: a picked %d times of 12, want 10 (5:1 against c)", got, n)
	}
	// A new snapshot starts the sequence over.
	c2 := &fakeCandidates{eps: named(1, 1)}
	if got, want := picks(b, c2, 4), "abab"; got != want {
		t.Errorf("after a new snapshot picks = %q, want %q", got, want)
	}
	if got := b.Pick(&fakeCandidates{eps: named(1), usable: []bool{false}}); got != -1 {
		t.Errorf("Pick(none usable) = %d, want -1", got)
	}
}

func TestWeightedRoundRobinConcurrent(t *testing.T) {
	var b discovery.WeightedRoundRobin
	c := &fakeCandidates{eps: named(3, 1)}
	var mu sync.Mutex
	counts := make([]int, 2)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				i := b.Pick(c)
				mu.Lock()
				counts[i]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if counts[0] != 3000 || counts[1] != 1000 {
		t.Errorf("4000 concurrent picks at weights 3:1 = %v, want [3000 1000]", counts)
	}
}

func TestLeastLoaded(t *testing.T) {
	var b discovery.LeastLoaded
	// Two endpoints: both are always drawn, so the less loaded wins.
	c := &fakeCandidates{eps: named(1, 1), loads: []int{5, 2}}
	if got := picks(b, c, 20); got != strings.Repeat("b", 20) {
		t.Errorf("LeastLoaded picks with loads 5, 2 = %q, want all b", got)
	}
	// Of many, the most loaded is never picked (it loses every draw it is in).
	c = &fakeCandidates{eps: named(1, 1, 1, 1), loads: []int{9, 1, 1, 1}}
	if got := picks(b, c, 200); strings.Contains(got, "a") {
		t.Errorf("LeastLoaded picked the most loaded endpoint: %q", got)
	}
	// Unusable ones never, even when idle.
	c = &fakeCandidates{eps: named(1, 1, 1), loads: []int{0, 0, 7}, usable: []bool{false, false, true}}
	if got := picks(b, c, 50); got != strings.Repeat("c", 50) {
		t.Errorf("LeastLoaded picks with only c usable = %q, want all c", got)
	}
	c.usable = []bool{false, false, false}
	if got := b.Pick(c); got != -1 {
		t.Errorf("LeastLoaded.Pick(none usable) = %d, want -1", got)
	}
	if got := b.Pick(&fakeCandidates{eps: named(1)}); got != 0 {
		t.Errorf("LeastLoaded.Pick(one endpoint) = %d, want 0", got)
	}
}

// A balancer that returns an index out of range is a bug: the router says so.
func TestRouterPanicsOnBadPick(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, NewBalancer: func() discovery.Balancer { return badBalancer{} }})
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "returned 7 for 1 endpoints") {
			t.Errorf("recover() = %v, want a panic naming the bad index", p)
		}
	}()
	r.Borrow(grpctest.Context(t, testTimeout), "svc")
}

type badBalancer struct{}

func (badBalancer) Pick(discovery.Candidates) int { return 7 }

// LeastLoaded routes around an endpoint busy with held RPCs, by the pool's
// leases in use.
func TestRouterLeastLoadedAvoidsBusyEndpoint(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{
		Resolver:    res,
		Pool:        clienttest.SharedLeases(),
		NewBalancer: func() discovery.Balancer { return discovery.LeastLoaded{} },
	})
	conn := r.Conn("svc")
	release := a.Hold()
	defer release()
	const most = 50
	errc := make(chan error, most)
	// Send RPCs one by one until one lands on a, which holds it (while both
	// are idle the draw decides).
	sent := 0
	for a.InFlight() == 0 {
		if sent == most {
			t.Fatalf("none of %d RPCs went to a", most)
		}
		sent++
		go func() { errc <- unary(grpctest.Context(t, testTimeout), conn) }()
		// ...and, if it went to b, until b's share is back: b is idle.
		grpctest.WaitFor(t, testTimeout, "RPC never arrived", func() bool {
			return a.InFlight()+b.UnaryCalls() == int64(sent) && r.Pool().KeyStats(b.Addr).SharesInUse == 0
		})
	}
	held := a.InFlight()
	before := b.UnaryCalls()
	for i := range 20 {
		if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if got := b.UnaryCalls() - before; got != 20 {
		t.Errorf("with %d RPCs held on a, b got %d of 20 new RPCs, want all", held, got)
	}
	release()
	for range sent {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// WeightedRoundRobin spreads RPCs by endpoint weight.
func TestRouterWeightedRoundRobin(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	ea, eb := ep(a), ep(b)
	ea.Weight, eb.Weight = 3, 1
	res := static.New(map[string][]discovery.Endpoint{"svc": {ea, eb}})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{
		Resolver:    res,
		Pool:        clienttest.SharedLeases(),
		NewBalancer: func() discovery.Balancer { return discovery.WeightedRoundRobin{} },
	})
	for i := range 40 {
		if err := unary(grpctest.Context(t, testTimeout), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if got := []int64{a.UnaryCalls(), b.UnaryCalls()}; !slices.Equal(got, []int64{30, 10}) {
		t.Errorf("UnaryCalls at weights 3:1 = %v, want [30 10]", got)
	}
}
