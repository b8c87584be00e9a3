package keyedpool

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
)

// laneObj is a pooled value that knows its key and number, and whether it
// was destroyed.
type laneObj struct {
	key       string
	n         int
	destroyed bool
}

// lanePool makes an exclusive pool of laneObjs with cfg, closed when the
// test ends.
func lanePool(t *testing.T, cfg Config) *Pool[string, *laneObj] {
	t.Helper()
	made := 0
	f := factory.Funcs[string, *laneObj]{
		MakeFunc: func(_ context.Context, key string) (*laneObj, error) {
			made++
			return &laneObj{key: key, n: made}, nil
		},
		DestroyFunc: func(_ context.Context, _ string, o *laneObj) error {
			o.destroyed = true
			return nil
		},
	}
	p, err := New[string, *laneObj](f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return p
}

// cycle borrows an object of key and returns it, so that it goes onto
// the key's lane, and checks that it did.
func cycle(t *testing.T, p *Pool[string, *laneObj], key string) *laneObj {
	t.Helper()
	h, err := p.Borrow(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	v := h.Value()
	if err := p.Return(h); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	n := p.keys[key].lane.n.Load()
	p.mu.Unlock()
	if n == 0 {
		t.Fatalf("after Borrow and Return of %q its lane is empty: the test means objects on lanes", key)
	}
	return v
}

// A key whose lane holds an object is borrowed and returned without the
// pool's lock: another key's work, here a section that holds it, does not
// hold it up.
func TestLanesBorrowAndReturnWithoutThePoolsLock(t *testing.T) {
	p := lanePool(t, Config{})
	cycle(t, p, "a")
	cycle(t, p, "a") // the first went the pool-wide way and indexed the key

	p.mu.Lock()
	done := make(chan error, 1)
	go func() {
		for range 100 {
			h, err := p.Borrow(context.Background(), "a")
			if err != nil {
				done <- err
				return
			}
			if err := p.Return(h); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		p.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		p.mu.Unlock()
		<-done
		t.Fatal("100 Borrow+Return of a key with an object on its lane waited for the pool's lock")
	}
	s := p.KeyStats("a")
	if s.Borrowed != 102 || s.Returned != 102 || s.Idle != 1 || s.Active != 0 {
		t.Errorf("KeyStats(a) = %+v, want 102 borrowed and returned, 1 idle", s)
	}
	if s := p.Stats(); s.Borrowed != 102 || s.Returned != 102 || s.Idle != 1 || s.SharesInUse != 0 {
		t.Errorf("Stats() = %+v, want 102 borrowed and returned, 1 idle, none in use", s)
	}
}

// When the pool fills up, the objects on lanes become the victims they
// would have been in the idle list: the oldest returned first, whatever
// their key.
func TestLaneObjectsAreVictimsOldestFirst(t *testing.T) {
	p := lanePool(t, Config{MaxTotal: 3})
	ctx := context.Background()
	ha, _ := p.Borrow(ctx, "a")
	hb, _ := p.Borrow(ctx, "b")
	a, b := ha.Value(), hb.Value()
	_ = p.Return(ha) // oldest
	_ = p.Return(hb)
	p.mu.Lock()
	onLanes := p.keys["a"].lane.n.Load() + p.keys["b"].lane.n.Load()
	p.mu.Unlock()
	if onLanes != 2 {
		t.Fatalf("%d objects on lanes, want both: the test means victims from lanes", onLanes)
	}
	hc, err := p.Borrow(ctx, "c") // the pool is full now
	if err != nil {
		t.Fatal(err)
	}
	defer p.Return(hc)
	hd, err := p.Borrow(ctx, "d") // takes a victim's room
	if err != nil {
		t.Fatal(err)
	}
	defer p.Return(hd)
	if !a.destroyed || b.destroyed {
		t.Errorf("after a fourth key borrowed: a destroyed %v, b destroyed %v; want the oldest, a, only", a.destroyed, b.destroyed)
	}
}

// An eviction run sees the objects on lanes, in the order they were
// returned across keys.
func TestEvictionVisitsLaneObjectsOldestFirst(t *testing.T) {
	var visited []string
	p := lanePool(t, Config{
		NumTestsPerEvictionRun: 1,
		EvictionPolicy: evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
			visited = append(visited, c.Key.(string))
			return true
		}),
	})
	ctx := context.Background()
	var hs []*Pooled[string, *laneObj]
	for _, k := range []string{"c", "a", "b"} {
		cycle(t, p, k)
		h, _ := p.Borrow(ctx, k)
		hs = append(hs, h)
	}
	for _, h := range hs { // c, a, b: each onto its lane
		if err := p.Return(h); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := p.RunEviction(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(visited); got != "[c a b]" {
		t.Errorf("eviction runs visited %s, want [c a b], the order of return", got)
	}
}

// A key dropped while the index holds it, and used again, is a new
// sub-pool: Borrow finds it, and its counts start afresh.
func TestLaneIndexFollowsDroppedKeys(t *testing.T) {
	p := lanePool(t, Config{})
	ctx := context.Background()
	for range 3 {
		cycle(t, p, "x")
		if err := p.Clear(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		if p.KeyStats("x") != (KeyStats{}) {
			t.Fatalf("after Clear, KeyStats(x) = %+v, want the key dropped", p.KeyStats("x"))
		}
	}
	for range 5 {
		cycle(t, p, "x")
	}
	if s := p.KeyStats("x"); s.Borrowed != 5 || s.Created != 1 || s.Idle != 1 {
		t.Errorf("KeyStats(x) = %+v, want 5 borrowed from 1 made since the last Clear", s)
	}
	if s := p.Stats(); s.Borrowed != 8 || s.Returned != 8 {
		t.Errorf("Stats() = %+v, want 8 borrowed and returned over all", s)
	}
}
