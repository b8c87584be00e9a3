package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"testing"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// A lease borrowed while Abandoned was on, then returned after SetConfig
// switched it off, must not stay tracked: README says Abandoned, switched
// on again, covers leases taken from then on. The handle is reused by the
// next Borrow (taken while tracking is off); an eviction run after
// Abandoned is switched back on must not take that lease back.
func TestLanesReviewAbandonedOffReturnLeavesStaleTrack(t *testing.T) {
	on := keyedpool.Config{Abandoned: &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Hour}}
	p, _ := newPool(t, on)
	h := mustBorrow(t, p, "a") // tracked

	off := p.Config()
	off.Abandoned = nil
	if err := p.SetConfig(off); err != nil {
		t.Fatal(err)
	}
	mustReturn(t, p, h) // lanes are on again: the fast path

	h2 := mustBorrow(t, p, "a") // taken while tracking is off
	if h2 != h {
		t.Fatal("the handle was not reused: the test needs the tracked one lent again")
	}

	again := p.Config()
	again.Abandoned = &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Nanosecond}
	if err := p.SetConfig(again); err != nil {
		t.Fatal(err)
	}
	if err := p.RunEviction(context.Background()); err != nil {
		t.Fatalf("RunEviction() = %v", err)
	}
	if s := p.Stats(); s.DestroyedByAbandoned != 0 {
		t.Errorf("DestroyedByAbandoned = %d, want 0: a lease taken while tracking was off was taken back", s.DestroyedByAbandoned)
	}
	if err := p.Return(h2); err != nil {
		t.Errorf("Return(lease taken while Abandoned was off) = %v, want nil", err)
	}
}

// The same stale track, when Abandoned comes back on and the handle is lent
// the pool-wide way: leaseLocked pushes the track into lentLeases a second
// time. A Borrow must not panic. (The pool is not closed: a panic there
// leaves its lock held.)
func TestLanesReviewAbandonedToggleBorrowPanics(t *testing.T) {
	f := &testfactory.Factory{}
	on := keyedpool.Config{Abandoned: &keyedpool.AbandonedConfig{Timeout: time.Hour}}
	p, err := keyedpool.New(f, on)
	if err != nil {
		t.Fatal(err)
	}
	h := mustBorrow(t, p, "a")
	off := p.Config()
	off.Abandoned = nil
	if err := p.SetConfig(off); err != nil {
		t.Fatal(err)
	}
	mustReturn(t, p, h) // fast path: the track stays in lentLeases
	if err := p.SetConfig(on); err != nil {
		t.Fatal(err)
	}
	var got any
	func() {
		defer func() { got = recover() }()
		h, err = p.Borrow(context.Background(), "a") // pool-wide: tracking is on
	}()
	if got != nil {
		t.Fatalf("Borrow() panicked: %v", got)
	}
	if err != nil {
		t.Fatalf("Borrow() = %v", err)
	}
	mustReturn(t, p, h)
	if err := p.Close(context.Background()); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

// laneModel is what a pool's idle objects should be: per key in the order
// they went idle, and all keys together in that order.
type laneModel struct {
	idle map[string][]int64
	all  []int64
}

func (m *laneModel) put(key string, id int64) {
	m.idle[key] = append(m.idle[key], id)
	m.all = append(m.all, id)
}

func (m *laneModel) take(key string, id int64) {
	m.idle[key] = slices.DeleteFunc(m.idle[key], func(x int64) bool { return x == id })
	m.all = slices.DeleteFunc(m.all, func(x int64) bool { return x == id })
}

// Random Borrows and Returns of a few keys, mostly on the lanes, with
// flushes (KeyStats, Stats, ListObjects, eviction runs that keep
// everything) and FIFO switched by SetConfig in between: every Borrow must
// lend the object FIFO/LIFO names among those the model holds idle, a
// Return beyond MaxIdlePerKey must destroy the object, the gauges and
// counters must match, and at the end an eviction run that evicts
// everything must visit the idle objects oldest first across keys.
func TestLanesReviewOrderModel(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { laneOrderModel(t, seed) })
	}
}

func laneOrderModel(t *testing.T, seed uint64) {
	maxIdle := 4
	var evictAll atomic.Bool
	var destroyedMu sync.Mutex
	var destroyed []int64
	f := &testfactory.Factory{}
	f.DestroyHook = func(_ context.Context, o *testfactory.Obj) error {
		destroyedMu.Lock()
		destroyed = append(destroyed, o.ID)
		destroyedMu.Unlock()
		return nil
	}
	fifo := seed%2 == 1
	cfg := keyedpool.Config{
		MaxIdlePerKey:          maxIdle,
		MaxTotalPerKey:         -1,
		FIFO:                   fifo,
		NumTestsPerEvictionRun: -1,
		EvictionPolicy:         evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool { return evictAll.Load() }),
	}
	p := testfactory.NewPool(t, f, cfg)
	rng := rand.New(rand.NewPCG(seed, 7))
	keys := []string{"a", "b", "c"}
	m := &laneModel{idle: map[string][]int64{}}
	held := map[string][]*handle{}
	var borrowed, returned int64
	ctx := context.Background()
	for step := range 600 {
		k := keys[rng.IntN(len(keys))]
		switch op := rng.IntN(100); {
		case op < 40 && len(held[k]) < 6:
			h := mustBorrow(t, p, k)
			borrowed++
			id := h.Value().ID
			if ids := m.idle[k]; len(ids) > 0 {
				want := ids[len(ids)-1]
				if fifo {
					want = ids[0]
				}
				if id != want {
					t.Fatalf("step %d: Borrow(%q) lent %d, want %d (FIFO %v, idle in return order %v)", step, k, id, want, fifo, ids)
				}
				m.take(k, id)
			} else if slices.Contains(m.all, id) {
				t.Fatalf("step %d: Borrow(%q) lent %d, idle as another key's", step, k, id)
			}
			held[k] = append(held[k], h)
		case op < 80 && len(held[k]) > 0:
			i := rng.IntN(len(held[k]))
			h := held[k][i]
			held[k] = slices.Delete(held[k], i, i+1)
			o := h.Value()
			mustReturn(t, p, h)
			returned++
			if len(m.idle[k]) >= maxIdle {
				if !o.Destroyed() {
					t.Fatalf("step %d: Return beyond MaxIdlePerKey %d kept object %d (idle %v)", step, maxIdle, o.ID, m.idle[k])
				}
			} else {
				if o.Destroyed() {
					t.Fatalf("step %d: Return under MaxIdlePerKey destroyed object %d", step, o.ID)
				}
				m.put(k, o.ID)
			}
		case op < 86:
			ks := p.KeyStats(k)
			if ks.Idle != len(m.idle[k]) || ks.Active != len(held[k]) {
				t.Fatalf("step %d: KeyStats(%q) Idle %d Active %d, want %d %d", step, k, ks.Idle, ks.Active, len(m.idle[k]), len(held[k]))
			}
		case op < 90:
			s := p.Stats()
			nHeld := len(held["a"]) + len(held["b"]) + len(held["c"])
			if s.Idle != len(m.all) || s.Active != nHeld || s.SharesInUse != nHeld || s.Borrowed != borrowed || s.Returned != returned {
				t.Fatalf("step %d: Stats() Idle %d Active %d Shares %d Borrowed %d Returned %d, want %d %d %d %d %d",
					step, s.Idle, s.Active, s.SharesInUse, s.Borrowed, s.Returned, len(m.all), nHeld, nHeld, borrowed, returned)
			}
		case op < 94:
			idle := 0
			for _, oi := range p.ListObjects(k) {
				if oi.State == keyedpool.ObjectIdle {
					idle++
				}
			}
			if idle != len(m.idle[k]) {
				t.Fatalf("step %d: ListObjects(%q) shows %d idle, want %d", step, k, idle, len(m.idle[k]))
			}
		case op < 95:
			if err := p.RunEviction(ctx); err != nil {
				t.Fatalf("RunEviction() = %v", err)
			}
		case op < 97:
			if err := p.AddObject(ctx, k); err != nil {
				t.Fatalf("AddObject() = %v", err)
			}
			if id := f.Made.Load(); len(m.idle[k]) < maxIdle {
				m.put(k, id)
			}
		case op < 98:
			// MaxIdlePerKey 4 -> 2 -> 4: lowered, each key loses the idle
			// objects it would lend last.
			maxIdle = 6 - maxIdle
			c := p.Config()
			c.MaxIdlePerKey = maxIdle
			if err := p.SetConfig(c); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				for ids := m.idle[k]; len(ids) > maxIdle; ids = m.idle[k] {
					if fifo {
						m.take(k, ids[len(ids)-1])
					} else {
						m.take(k, ids[0])
					}
				}
			}
		default:
			fifo = !fifo
			c := p.Config()
			c.FIFO = fifo
			if err := p.SetConfig(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, k := range keys {
		for _, h := range held[k] {
			o := h.Value()
			mustReturn(t, p, h)
			if !o.Destroyed() {
				m.put(k, o.ID)
			}
		}
	}
	destroyedMu.Lock()
	destroyed = nil
	destroyedMu.Unlock()
	evictAll.Store(true)
	if err := p.RunEviction(ctx); err != nil {
		t.Fatalf("RunEviction() = %v", err)
	}
	destroyedMu.Lock()
	defer destroyedMu.Unlock()
	if !slices.Equal(destroyed, m.all) {
		t.Errorf("eviction run destroyed %v, want the idle objects oldest first across keys: %v", destroyed, m.all)
	}
}

// When MaxTotal is reached, the idle objects of other keys are destroyed
// oldest first, whichever lanes they were returned to and whatever was
// flushed in between.
func TestLanesReviewVictimsOldestFirstAcrossLanes(t *testing.T) {
	var mu sync.Mutex
	var destroyed []int64
	f := &testfactory.Factory{}
	f.DestroyHook = func(_ context.Context, o *testfactory.Obj) error {
		mu.Lock()
		destroyed = append(destroyed, o.ID)
		mu.Unlock()
		return nil
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 8, MaxTotalPerKey: -1, MaxIdlePerKey: -1})
	var hs []*handle
	for _, k := range []string{"a", "b", "c", "a", "b", "c"} {
		hs = append(hs, mustBorrow(t, p, k))
	}
	// Return order: b, a, c, c, a, b, with a flush of one key in between.
	var order []int64
	for i, j := range []int{1, 0, 2, 5, 3, 4} {
		order = append(order, hs[j].Value().ID)
		mustReturn(t, p, hs[j])
		if i == 2 {
			p.KeyStats("c")
		}
	}
	// Fill the pool with key d: 2 free places, then 6 victims.
	var ds []*handle
	for range 8 {
		ds = append(ds, mustBorrow(t, p, "d"))
	}
	mu.Lock()
	got := slices.Clone(destroyed)
	mu.Unlock()
	if !slices.Equal(got, order) {
		t.Errorf("victims destroyed %v, want oldest first %v", got, order)
	}
	for _, h := range ds {
		mustReturn(t, p, h)
	}
}

// ClearOldest destroys the oldest 15% of the idle objects across keys,
// lanes included.
func TestLanesReviewClearOldestAcrossLanes(t *testing.T) {
	var mu sync.Mutex
	var destroyed []int64
	f := &testfactory.Factory{}
	f.DestroyHook = func(_ context.Context, o *testfactory.Obj) error {
		mu.Lock()
		destroyed = append(destroyed, o.ID)
		mu.Unlock()
		return nil
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: -1, MaxIdlePerKey: -1})
	keys := []string{"a", "b", "c", "d"}
	var hs []*handle
	for i := range 20 {
		hs = append(hs, mustBorrow(t, p, keys[i%4]))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(hs), func(i, j int) { hs[i], hs[j] = hs[j], hs[i] })
	var order []int64
	for _, h := range hs {
		order = append(order, h.Value().ID)
		mustReturn(t, p, h)
	}
	if err := p.ClearOldest(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(destroyed)
	mu.Unlock()
	if want := order[:20*15/100+1]; !slices.Equal(got, want) {
		t.Errorf("ClearOldest destroyed %v, want %v", got, want)
	}
	if s := p.Stats(); s.Idle != 16 || s.DestroyedByClear != 4 {
		t.Errorf("Stats() Idle %d DestroyedByClear %d, want 16 4", s.Idle, s.DestroyedByClear)
	}
}

// Borrowers of a few shared keys, mostly on the lanes, while an observer
// reads every object (ListObjects), the gauges and counters, and changes
// FIFO and MaxIdlePerKey, clears and runs evictions: no data race, no idle
// count above the MaxIdlePerKey in force, and at the end the counters are
// exactly the Borrows and Returns that succeeded.
func TestLanesReviewConcurrentObservers(t *testing.T) {
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxIdlePerKey: 4, MaxTotalPerKey: -1, NumTestsPerEvictionRun: 2,
		EvictionPolicy: evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool { return false })})
	keys := []string{"a", "b", "c"}
	var borrowed, returned atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			var held []*handle
			for range 3000 {
				k := keys[rng.IntN(len(keys))]
				if len(held) < 3 && rng.IntN(2) == 0 {
					h, err := p.Borrow(context.Background(), k)
					if err != nil {
						t.Errorf("Borrow() = %v", err)
						return
					}
					borrowed.Add(1)
					held = append(held, h)
				} else if len(held) > 0 {
					i := rng.IntN(len(held))
					if err := p.Return(held[i]); err != nil {
						t.Errorf("Return() = %v", err)
						return
					}
					returned.Add(1)
					held = slices.Delete(held, i, i+1)
				}
			}
			for _, h := range held {
				if err := p.Return(h); err != nil {
					t.Errorf("Return() = %v", err)
				}
				returned.Add(1)
			}
		})
	}
	obs := make(chan struct{})
	go func() {
		defer close(obs)
		maxIdle := 4
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[i%len(keys)]
			switch i % 9 {
			case 0:
				for _, oi := range p.ListObjects(k) {
					if oi.BorrowCount < 0 || oi.Shares < 0 || oi.Shares > 1 {
						t.Errorf("ListObjects(%q) = %+v", k, oi)
					}
				}
			case 1:
				if ks := p.KeyStats(k); ks.Idle > maxIdle || ks.Idle < 0 || ks.Active < 0 {
					t.Errorf("KeyStats(%q) Idle %d Active %d, MaxIdlePerKey %d", k, ks.Idle, ks.Active, maxIdle)
				}
			case 2:
				for k, ks := range p.AllKeyStats() {
					if ks.Idle > maxIdle {
						t.Errorf("AllKeyStats()[%q].Idle = %d > MaxIdlePerKey %d", k, ks.Idle, maxIdle)
					}
				}
			case 3:
				if s := p.Stats(); s.Active < 0 || s.Idle > maxIdle*len(keys) || s.SharesInUse > s.Active {
					t.Errorf("Stats() = %+v", s)
				}
			case 4:
				c := p.Config()
				c.FIFO = !c.FIFO
				maxIdle = 6 - maxIdle // 4, 2, 4, ...
				c.MaxIdlePerKey = maxIdle
				if err := p.SetConfig(c); err != nil {
					t.Errorf("SetConfig() = %v", err)
				}
			case 5:
				if err := p.RunEviction(context.Background()); err != nil {
					t.Errorf("RunEviction() = %v", err)
				}
			case 6:
				if i%27 == 6 {
					_ = p.ClearOldest(context.Background())
				}
			case 7:
				if i%45 == 7 {
					_ = p.Clear(context.Background(), k)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-obs
	s := p.Stats()
	if s.Borrowed != borrowed.Load() || s.Returned != returned.Load() || s.Active != 0 || s.SharesInUse != 0 {
		t.Errorf("Stats() Borrowed %d Returned %d Active %d Shares %d, want %d %d 0 0",
			s.Borrowed, s.Returned, s.Active, s.SharesInUse, borrowed.Load(), returned.Load())
	}
	if int64(s.Idle) != s.Created-s.Destroyed || s.Idle != f.LiveAll() {
		t.Errorf("Stats() Idle %d, Created-Destroyed %d, factory live %d", s.Idle, s.Created-s.Destroyed, f.LiveAll())
	}
	var sum int64
	for _, ks := range p.AllKeyStats() {
		sum += int64(ks.Idle)
	}
	if sum != int64(s.Idle) {
		t.Errorf("AllKeyStats idle sum %d, Stats().Idle %d", sum, s.Idle)
	}
}

// README: a key's sub-pool is dropped when it holds nothing, "so one-off
// keys do not grow memory". A one-off key whose object went through its
// lane once (a fast Return) stays linked in the pool's list of dirty lanes
// after it is dropped, until something flushes every lane (Stats, an
// eviction run): with neither, each one-off key keeps its sub-pool alive.
func TestLanesReviewOneOffKeysDoNotGrowMemory(t *testing.T) {
	var live atomic.Int64
	f := factory.Funcs[string, int]{
		MakeFunc:    func(context.Context, string) (int, error) { live.Add(1); return 1, nil },
		DestroyFunc: func(context.Context, string, int) error { live.Add(-1); return nil },
	}
	p := newPoolOf(t, f, keyedpool.Config{})
	ctx := context.Background()
	keys := make([]string, 41000) // made up front, so that they do not count
	for i := range keys {
		keys[i] = fmt.Sprintf("one-off-%d", i)
	}
	oneOff := func(keys []string) {
		for _, k := range keys {
			h, err := p.Borrow(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Return(h); err != nil { // onto the key's lane
				t.Fatal(err)
			}
			if err := p.Clear(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	oneOff(keys[:1000]) // warm up: maps, buffers
	_ = p.Stats()
	n := int64(len(keys) - 1000)
	before := heap()
	oneOff(keys[1000:])
	after := heap()
	if s := p.Stats(); s.Keys != 0 || s.Idle != 0 || live.Load() != 0 {
		t.Fatalf("Stats() Keys %d Idle %d, %d alive, want 0 0 0", s.Keys, s.Idle, live.Load())
	}
	flushed := heap()
	grew := int64(after) - int64(before)
	t.Logf("heap: %d before, %d after %d one-off keys (%d B/key), %d after Stats()", before, after, n, grew/n, flushed)
	if grew > 32*n { // a sub-pool is several hundred bytes
		t.Errorf("heap grew by %d bytes (%d per key) over %d one-off keys, all dropped", grew, grew/n, n)
	}
}

// A pool so small that lanes turn off and on all the time: MaxTotal 2 over
// three keys of MaxTotalPerKey 1, so that borrowers wait for their key,
// take other keys' idle objects as victims, and return on the lanes in
// between. No Borrow may be left waiting while an object it could take
// sits on a lane (each is bounded by a 10 s context), and at the end every
// object is idle or destroyed, once.
func TestLanesReviewWaitersAndVictimsNoLostWakeup(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxTotal: 2, MaxTotalPerKey: 1})
	keys := []string{"a", "b", "c"}
	var borrowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			for range 400 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				h, err := p.Borrow(ctx, keys[rng.IntN(len(keys))])
				cancel()
				if err != nil {
					t.Errorf("Borrow() = %v", err)
					return
				}
				borrowed.Add(1)
				if err := p.Return(h); err != nil {
					t.Errorf("Return() = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	if s.Borrowed != borrowed.Load() || s.Returned != borrowed.Load() || s.Active != 0 || s.Waiters != 0 {
		t.Errorf("Stats() Borrowed %d Returned %d Active %d Waiters %d, want %d %d 0 0",
			s.Borrowed, s.Returned, s.Active, s.Waiters, borrowed.Load(), borrowed.Load())
	}
	if s.Idle != f.LiveAll() || s.Idle > 2 || f.MaxLiveAll() > 2 || f.MaxLivePerKey() > 1 {
		t.Errorf("Idle %d, live %d, most alive %d (per key %d): limits broken", s.Idle, f.LiveAll(), f.MaxLiveAll(), f.MaxLivePerKey())
	}
	if s.Waited == 0 || s.DestroyedByClear == 0 {
		t.Errorf("Stats() = %+v: no waits or no victims, the test did not exercise them", s)
	}
}

// Counters of Borrows and Returns on the lanes, with the clock running
// (RunEviction by hand): Stats, KeyStats, AllKeyStats and ListObjects all
// see them, idle and active spans counted as the pool-wide path counts
// them, and they survive the key being dropped (Stats keeps the totals).
func TestLanesReviewCountersOnLanes(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	ctx := context.Background()
	if err := p.RunEviction(ctx); err != nil { // starts the clock
		t.Fatal(err)
	}
	const n = 10
	for range n {
		mustReturn(t, p, mustBorrow(t, p, "a"))
	}
	for range 3 {
		mustReturn(t, p, mustBorrow(t, p, "b"))
	}
	ks := p.KeyStats("a")
	if ks.Borrowed != n || ks.Returned != n || ks.IdleCount != n-1 || ks.ActiveCount != n || ks.Idle != 1 || ks.Active != 0 || ks.Created != 1 {
		t.Errorf("KeyStats(a) = %+v, want Borrowed/Returned/ActiveCount %d, IdleCount %d, 1 idle, 1 created", ks, n, n-1)
	}
	all := p.AllKeyStats()
	if all["a"].Counters != ks.Counters || all["b"].Borrowed != 3 || all["b"].IdleCount != 2 {
		t.Errorf("AllKeyStats() = %+v, want a as KeyStats %+v and b with 3 borrows, 2 idle spans", all, ks)
	}
	objs := p.ListObjects("a")
	if len(objs) != 1 || objs[0].BorrowCount != n || objs[0].State != keyedpool.ObjectIdle || objs[0].LastReturned.Before(objs[0].LastBorrowed) {
		t.Errorf("ListObjects(a) = %+v, want one idle object lent %d times, returned after its last borrow", objs, n)
	}
	if err := p.Clear(ctx, "a"); err != nil { // drops the key
		t.Fatal(err)
	}
	s := p.Stats()
	if s.Borrowed != n+3 || s.Returned != n+3 || s.IdleCount != n-1+2 || s.ActiveCount != n+3 || s.Keys != 1 || s.Idle != 1 {
		t.Errorf("Stats() = %+v, want Borrowed/Returned/ActiveCount %d, IdleCount %d, 1 key, 1 idle", s, n+3, n+1)
	}
	if s.ActiveTime < ks.ActiveTime || s.IdleTime < ks.IdleTime {
		t.Errorf("Stats() times %v %v below key a's %v %v", s.ActiveTime, s.IdleTime, ks.ActiveTime, ks.IdleTime)
	}
}

// MinIdlePerKey upkeep is asked for by a Borrow on the lane that leaves the
// key short, and does not run for a key Clear forgot, even when its lent
// objects come back on the lane; the key leaves once a second Clear empties
// it, and comes back when used again.
func TestLanesReviewMinIdleAndForgottenKeyOnLane(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 2})
	ctx := context.Background()
	if err := p.Prepare(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	h1, h2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
	mustReturn(t, p, h1)
	mustReturn(t, p, h2) // both on the lane now
	h := mustBorrow(t, p, "a")
	if err := p.RunEviction(ctx); err != nil { // upkeep: one more idle object
		t.Fatal(err)
	}
	if ks := p.KeyStats("a"); ks.Idle != 2 || ks.Active != 1 || ks.Created != 3 {
		t.Errorf("after a lane Borrow and a run: KeyStats(a) Idle %d Active %d Created %d, want 2 1 3", ks.Idle, ks.Active, ks.Created)
	}
	if err := p.Clear(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	mustReturn(t, p, h) // onto the lane of a forgotten key
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if ks := p.KeyStats("a"); ks.Idle != 1 || ks.Created != 3 {
		t.Errorf("forgotten key: KeyStats(a) Idle %d Created %d, want 1 3 (no upkeep)", ks.Idle, ks.Created)
	}
	if err := p.Clear(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Keys != 0 || f.LiveAll() != 0 {
		t.Errorf("after the second Clear: %d keys, %d alive, want 0 0", s.Keys, f.LiveAll())
	}
	mustReturn(t, p, mustBorrow(t, p, "a"))
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if ks := p.KeyStats("a"); ks.Idle != 2 {
		t.Errorf("key used again: KeyStats(a).Idle = %d, want 2 (MinIdlePerKey upkeep again)", ks.Idle)
	}
}

// Close with objects on the lanes of several keys destroys them all, and
// an object lent on the lane and returned after Close is destroyed too.
func TestLanesReviewCloseWithObjectsOnLanes(t *testing.T) {
	f := &testfactory.Factory{}
	p, err := keyedpool.New(f, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		h1, h2 := mustBorrow(t, p, k), mustBorrow(t, p, k)
		mustReturn(t, p, h1)
		mustReturn(t, p, h2)
	}
	lent := mustBorrow(t, p, "a") // from the lane
	closed := make(chan error, 1)
	go func() { closed <- p.Close(context.Background()) }()
	for i := 0; !p.Stats().Closed; i++ {
		if i == 1e6 {
			t.Fatal("Close did not mark the pool closed")
		}
		runtime.Gosched()
	}
	if _, err := p.Borrow(context.Background(), "b"); !errors.Is(err, keyedpool.ErrClosed) {
		t.Errorf("Borrow after Close = %v, want ErrClosed", err)
	}
	mustReturn(t, p, lent)
	if err := <-closed; err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s := p.Stats()
	if s.Idle != 0 || s.Active != 0 || s.DestroyedByClose != 6 || f.LiveAll() != 0 || s.Borrowed != 7 || s.Returned != 7 {
		t.Errorf("after Close: Stats() = %+v, %d alive; want all 6 destroyed by Close, 7 borrowed and returned", s, f.LiveAll())
	}
	if err := f.Problems(); err != nil {
		t.Error(err)
	}
}

// Panics in Activate (on a lane Borrow) and Passivate (before a lane
// Return) destroy the object and free its room; nothing stays on the lane.
func TestLanesReviewPanickingFactoryOnLane(t *testing.T) {
	var panicActivate, panicPassivate atomic.Bool
	f := &testfactory.Factory{
		ActivateHook: func(context.Context, *testfactory.Obj) error {
			if panicActivate.Swap(false) {
				panic("activate")
			}
			return nil
		},
		PassivateHook: func(context.Context, *testfactory.Obj) error {
			if panicPassivate.Swap(false) {
				panic("passivate")
			}
			return nil
		},
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{})
	h := mustBorrow(t, p, "a")
	first := h.Value().ID
	mustReturn(t, p, h) // on the lane
	panicActivate.Store(true)
	h = mustBorrow(t, p, "a") // the lane's object panics: a new one
	if h.Value().ID == first {
		t.Errorf("Borrow lent object %d whose Activate panicked", first)
	}
	panicPassivate.Store(true)
	if err := p.Return(h); !errors.Is(err, keyedpool.ErrFactoryPanic) {
		t.Errorf("Return() = %v, want ErrFactoryPanic", err)
	}
	s := p.Stats()
	if s.Idle != 0 || s.Active != 0 || s.DestroyedByBorrowValidation != 1 || s.DestroyedByReturnValidation != 1 || f.LiveAll() != 0 {
		t.Errorf("Stats() = %+v, %d alive; want both objects destroyed, nothing idle", s, f.LiveAll())
	}
	if ks := p.KeyStats("a"); ks != (keyedpool.KeyStats{}) {
		t.Errorf("KeyStats(a) = %+v, want the key dropped", ks)
	}
}
