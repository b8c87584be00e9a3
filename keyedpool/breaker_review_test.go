package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/keyedpool"
)

// ---------------------------------------------------------------------------
// A factory for breaking things: it counts live objects (per key and all
// together, with their maxima), finds double destroys and calls on
// destroyed objects, and panics or fails in any method with a chosen
// probability while chaos is on.

type bObj struct {
	id        int64
	key       string
	destroyed atomic.Bool
}

type bFactory struct {
	chaos atomic.Bool
	// per mille probability of a panic in each method while chaos is on
	pMake, pActivate, pPassivate, pValidate, pDestroy int
	// per mille probability of a plain error in each method while chaos is on
	eMake, eActivate, ePassivate, eValidate, eDestroy int
	// sleep, if set, is slept in every call (to widen races)
	sleep time.Duration
	// makeDelay is slept in Make
	makeDelay time.Duration

	nextID           atomic.Int64
	made, destroyed  atomic.Int64
	activated        atomic.Int64
	mu               sync.Mutex
	live             map[string]int
	maxLive          map[string]int
	liveAll, maxAll  int
	problems         []string
	destroyedObjects map[int64]int
}

func newBFactory() *bFactory {
	return &bFactory{live: map[string]int{}, maxLive: map[string]int{}, destroyedObjects: map[int64]int{}}
}

func (f *bFactory) roll(pPanic, pErr int, what string) error {
	if f.sleep > 0 {
		time.Sleep(f.sleep)
	}
	if !f.chaos.Load() {
		return nil
	}
	r := rand.IntN(1000)
	if r < pPanic {
		panic("breaker: " + what)
	}
	if r < pPanic+pErr {
		return errors.New("breaker: " + what + " failed")
	}
	return nil
}

func (f *bFactory) problem(format string, args ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *bFactory) Problems() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.problems...)
}

func (f *bFactory) Make(ctx context.Context, key string) (*bObj, error) {
	if f.makeDelay > 0 {
		select {
		case <-time.After(f.makeDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := f.roll(f.pMake, f.eMake, "Make"); err != nil {
		return nil, err
	}
	o := &bObj{id: f.nextID.Add(1), key: key}
	f.made.Add(1)
	f.mu.Lock()
	f.live[key]++
	f.maxLive[key] = max(f.maxLive[key], f.live[key])
	f.liveAll++
	f.maxAll = max(f.maxAll, f.liveAll)
	f.mu.Unlock()
	return o, nil
}

func (f *bFactory) Destroy(ctx context.Context, key string, o *bObj) error {
	if o.destroyed.Swap(true) {
		f.problem("object %d of key %q destroyed twice", o.id, key)
		return nil
	}
	f.destroyed.Add(1)
	f.mu.Lock()
	f.live[key]--
	f.liveAll--
	f.mu.Unlock()
	return f.roll(f.pDestroy, f.eDestroy, "Destroy")
}

func (f *bFactory) check(call string, o *bObj) {
	if o.destroyed.Load() {
		f.problem("%s on destroyed object %d", call, o.id)
	}
}

func (f *bFactory) Activate(ctx context.Context, key string, o *bObj) error {
	f.activated.Add(1)
	f.check("Activate", o)
	return f.roll(f.pActivate, f.eActivate, "Activate")
}

func (f *bFactory) Passivate(ctx context.Context, key string, o *bObj) error {
	f.check("Passivate", o)
	return f.roll(f.pPassivate, f.ePassivate, "Passivate")
}

func (f *bFactory) Validate(ctx context.Context, key string, o *bObj) error {
	f.check("Validate", o)
	return f.roll(f.pValidate, f.eValidate, "Validate")
}

func (f *bFactory) liveOf(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[key]
}

func (f *bFactory) all() (live, maxAll int, maxPer map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]int, len(f.maxLive))
	for k, v := range f.maxLive {
		m[k] = v
	}
	return f.liveAll, f.maxAll, m
}

type bPool = keyedpool.Pool[string, *bObj]
type bHandle = keyedpool.Pooled[string, *bObj]

// newBPool makes a pool over f; the cleanup closes it (bounded) and checks
// that every object made was destroyed exactly once.
func newBPool(t *testing.T, f *bFactory, cfg keyedpool.Config) *bPool {
	t.Helper()
	return newBPoolWith(t, f, f, cfg)
}

// newBPoolWith is newBPool over fac, a factory that wraps f.
func newBPoolWith(t *testing.T, f *bFactory, fac factory.KeyedFactory[string, *bObj], cfg keyedpool.Config) *bPool {
	t.Helper()
	p, err := keyedpool.New[string, *bObj](fac, cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() {
		f.chaos.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
			t.Errorf("cleanup Close() = %v", err)
		}
		if m, d := f.made.Load(), f.destroyed.Load(); m != d {
			t.Errorf("after Close: %d made, %d destroyed", m, d)
		}
		for _, pr := range f.Problems() {
			t.Errorf("factory problem: %s", pr)
		}
	})
	return p
}

// quiet checks, with nothing lent and nothing going on, that the pool's
// gauges are exact: nothing active, making or waiting, the idle count
// equal to the objects alive, per key and all together, and the counters
// consistent.
func quiet(t *testing.T, p *bPool, f *bFactory, borrowed int64) {
	t.Helper()
	// Background work (an eviction run's upkeep makes, their passivation)
	// may still be finishing: let it.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s := p.Stats(); s.Making == 0 && s.Active == 0 {
			break
		}
	}
	s := p.Stats()
	live, _, _ := f.all()
	if s.Active != 0 || s.Making != 0 || s.Waiters != 0 || s.SharesInUse != 0 {
		t.Errorf("quiet pool: Stats gauges = %+v, want nothing active, making, waiting or shared", s.Gauges)
	}
	if s.Idle != live {
		t.Errorf("quiet pool: Stats.Idle = %d, factory has %d alive", s.Idle, live)
	}
	if s.Created-s.Destroyed != int64(s.Idle) {
		t.Errorf("quiet pool: Created %d - Destroyed %d != Idle %d", s.Created, s.Destroyed, s.Idle)
	}
	if borrowed >= 0 && (s.Borrowed != borrowed || s.Returned != borrowed) {
		t.Errorf("quiet pool: Borrowed %d, Returned %d, want both %d (successful Borrows)", s.Borrowed, s.Returned, borrowed)
	}
	idle := 0
	for k, ks := range p.AllKeyStats() {
		idle += ks.Idle
		if ks.Active != 0 || ks.Making != 0 || ks.Waiters != 0 || ks.SharesInUse != 0 {
			t.Errorf("quiet pool: KeyStats(%q) gauges = %+v", k, ks.Gauges)
		}
		if n := f.liveOf(k); ks.Idle != n {
			t.Errorf("quiet pool: KeyStats(%q).Idle = %d, factory has %d alive", k, ks.Idle, n)
		}
	}
	if idle != s.Idle {
		t.Errorf("quiet pool: keys' Idle sum %d, Stats.Idle %d", idle, s.Idle)
	}
}

// lendToLimits borrows, concurrently, as many objects as the limits allow
// (perKey of each key in keys) and fails the test if any Borrow does not
// succeed within a few seconds; then returns them all.
func lendToLimits(t *testing.T, p *bPool, keys []string, perKey int) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var hs []*bHandle
	var errs []error
	for _, k := range keys {
		for range perKey {
			wg.Go(func() {
				h, err := p.Borrow(ctx, k)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("Borrow(%q) = %w", k, err))
					return
				}
				hs = append(hs, h)
			})
		}
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("lending to the limits: %v (Stats %+v)", err, p.Stats())
	}
	for _, h := range hs {
		if err := p.Return(h); err != nil {
			t.Errorf("Return() = %v", err)
		}
	}
	return int64(len(hs))
}

// waitGoroutines waits up to 3 s for the number of goroutines to fall to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines left, want at most %d:\n%s", runtime.NumGoroutine(), n, buf)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var bKeys = []string{"a", "b", "c", "d"}

// ---------------------------------------------------------------------------
// Promise 1 and 3: under panics and errors in every factory method, on
// every path (lane and pool-wide Borrow and Return, TestOnBorrow,
// TestOnReturn, TestWhileIdle, MinIdlePerKey upkeep, MaxLifetime, victims),
// with eviction runs, Clear, ClearOldest and observers racing, the limits
// hold at every instant, and once everything is back the counts are exact
// and the pool lends to its limits again.
func TestBreakerChaosFixedLimits(t *testing.T) {
	for _, mode := range []struct {
		fifo   bool
		shares int
	}{{false, 1}, {true, 1}, {false, 3}, {true, 2}} {
		fifo := mode.fifo
		t.Run(fmt.Sprintf("FIFO=%v,shares=%d", fifo, mode.shares), func(t *testing.T) {
			f := newBFactory()
			f.pMake, f.pActivate, f.pPassivate, f.pValidate, f.pDestroy = 20, 20, 20, 20, 20
			f.eMake, f.eActivate, f.ePassivate, f.eValidate, f.eDestroy = 20, 20, 20, 20, 20
			const maxTotal, maxPerKey = 5, 2
			p := newBPool(t, f, keyedpool.Config{
				MaxTotal: maxTotal, MaxTotalPerKey: maxPerKey, MaxIdlePerKey: 2, MinIdlePerKey: 1,
				FIFO: fifo, MaxSharesPerObject: mode.shares, TestOnBorrow: true, TestOnReturn: true, TestWhileIdle: true,
				MaxLifetime: 30 * time.Millisecond, MaxLifetimeJitter: 20 * time.Millisecond,
				NumTestsPerEvictionRun: 2, FactoryTimeout: time.Second,
				EvictionPolicy: evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
					if rand.IntN(20) == 0 {
						panic("policy")
					}
					return rand.IntN(4) == 0
				}),
			})
			f.chaos.Store(true)
			var borrowed atomic.Int64
			stop := make(chan struct{})
			var wg, obs sync.WaitGroup
			for g := range 6 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 99))
					for range 1500 {
						k := bKeys[rng.IntN(len(bKeys))]
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rng.IntN(20))*time.Millisecond)
						h, err := p.Borrow(ctx, k)
						cancel()
						if err != nil {
							continue
						}
						borrowed.Add(1)
						if h.Key() != k {
							t.Errorf("Borrow(%q) lent key %q", k, h.Key())
						}
						if h.Value().destroyed.Load() {
							t.Errorf("Borrow(%q) lent destroyed object %d", k, h.Value().id)
						}
						if rng.IntN(3) == 0 {
							runtime.Gosched()
						}
						if rng.IntN(8) == 0 {
							_ = p.Invalidate(h)
						} else {
							_ = p.Return(h)
						}
					}
				})
			}
			obs.Go(func() {
				ctx := context.Background()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					switch i % 7 {
					case 0:
						_ = p.RunEviction(ctx)
					case 1:
						_ = p.Stats()
					case 2:
						if i%5 == 2 {
							_ = p.ClearOldest(ctx)
						}
					case 3:
						if i%10 == 3 {
							_ = p.Clear(ctx, bKeys[i%len(bKeys)])
						}
					case 4:
						_ = p.AllKeyStats()
					case 5:
						_ = p.ListObjects(bKeys[i%len(bKeys)])
					case 6:
						_ = p.Prepare(ctx, bKeys[i%len(bKeys)])
					}
					time.Sleep(time.Millisecond)
				}
			})
			wg.Wait()
			close(stop)
			obs.Wait()
			f.chaos.Store(false)
			_, maxAll, maxPer := f.all()
			if maxAll > maxTotal {
				t.Errorf("at most %d objects alive at once, MaxTotal %d", maxAll, maxTotal)
			}
			for k, n := range maxPer {
				if n > maxPerKey {
					t.Errorf("key %q: at most %d objects alive at once, MaxTotalPerKey %d", k, n, maxPerKey)
				}
			}
			t.Logf("borrowed %d, stats %+v", borrowed.Load(), p.Stats())
			quiet(t, p, f, borrowed.Load())
			// Lend to the limits: maxTotal over keys with maxPerKey each.
			n := lendToLimits(t, p, []string{"a", "b"}, maxPerKey)
			n += lendToLimits(t, p, []string{"c"}, 1)
			borrowed.Add(n)
			quiet(t, p, f, borrowed.Load())
		})
	}
}

// ---------------------------------------------------------------------------
// Config.MakeFailureThreshold: "After the period one borrower probes with a
// make; a success ends the backoff, a failure starts a longer period."
// Here the pool is full (MaxTotal 1) with one idle object of another key,
// which an eviction run is testing at the moment the backoff period of key
// "bad" ends. A Borrow of "bad" then finds no room (the only idle object
// cannot be taken as a victim while under test) and fails; it made no
// make. Once the test is over, the key must still be probed by the next
// Borrow that has room.
func TestBreakerBackoffProbeLostWhenVictimUnderTest(t *testing.T) {
	f := newBFactory()
	f.eMake = 1000
	inPolicy := make(chan struct{}, 1)
	release := make(chan struct{})
	var blockPolicy atomic.Bool
	p := newBPool(t, f, keyedpool.Config{
		MaxTotal: 1, WhenExhausted: keyedpool.Fail,
		MakeFailureThreshold: 1, MakeBackoffBase: 5 * time.Millisecond, MakeBackoffMax: 10 * time.Millisecond,
		EvictionPolicy: evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool {
			if blockPolicy.Load() {
				inPolicy <- struct{}{}
				<-release
			}
			return false
		}),
	})
	ctx := context.Background()
	// "other" holds the pool's one room, idle.
	if err := p.AddObject(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	// One failed make of "bad" puts it in backoff. It needs room: take
	// "other"'s as a victim.
	f.chaos.Store(true)
	if _, err := p.Borrow(ctx, "bad"); err == nil {
		t.Fatal("Borrow(bad) succeeded, want its make to fail")
	}
	f.chaos.Store(false)
	if ks := p.KeyStats("bad"); ks.BackoffUntil.IsZero() {
		t.Fatalf("KeyStats(bad) = %+v, want the key in backoff", ks)
	}
	if err := p.AddObject(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	// An eviction run tests "other"'s object, and holds it under test.
	blockPolicy.Store(true)
	runDone := make(chan error, 1)
	go func() { runDone <- p.RunEviction(ctx) }()
	<-inPolicy
	time.Sleep(30 * time.Millisecond) // past the backoff period (at most 6 ms)
	// No room now: the only idle object is under test.
	if _, err := p.Borrow(ctx, "bad"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("Borrow(bad) while the pool's only idle object is under test = %v, want ErrExhausted", err)
	}
	blockPolicy.Store(false)
	close(release)
	if err := <-runDone; err != nil {
		t.Fatalf("RunEviction() = %v", err)
	}
	// The test is over: "other"'s idle object can make room, and the
	// backoff period ended long ago. Makes succeed again. The next Borrow
	// must probe (and succeed), whatever eviction runs happen meanwhile.
	var err error
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		if err := p.RunEviction(ctx); err != nil {
			t.Fatalf("RunEviction() = %v", err)
		}
		var h *bHandle
		if h, err = p.Borrow(ctx, "bad"); err == nil {
			mustReturnB(t, p, h)
			return
		}
	}
	t.Fatalf("Borrow(bad) long after its backoff period, with room and eviction runs = %v; KeyStats(bad) = %+v", err, p.KeyStats("bad").MakeFailures)
}

func mustReturnB(t *testing.T, p *bPool, h *bHandle) {
	t.Helper()
	if err := p.Return(h); err != nil {
		t.Fatalf("Return() = %v", err)
	}
}

// Borrow: "a borrower handed an object that then fails activation or
// validation, or is past MaxLifetime, waits again only for what is left of
// it, and keeps its place in line ahead of later borrowers." W waits first,
// L second, for a key at MaxTotalPerKey 1. The object comes back and goes
// to W, fails W's TestOnBorrow and is destroyed: its room must go to W,
// ahead of L, not to L.
func TestBreakerFailedHandOffKeepsPlaceInLine(t *testing.T) {
	for _, why := range []string{"validate", "activate"} {
		t.Run(why, func(t *testing.T) {
			f := newBFactory()
			var bad atomic.Int64
			cfg := keyedpool.Config{MaxTotalPerKey: 1, TestOnBorrow: true}
			p := newBPoolWith(t, f, &hookFactory{bFactory: f, fail: func(call string, o *bObj) error {
				if o.id == bad.Load() && call == why {
					return errors.New("bad object")
				}
				return nil
			}}, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			h0, err := p.Borrow(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			bad.Store(h0.Value().id)
			type res struct {
				who string
				h   *bHandle
				err error
			}
			got := make(chan res, 2)
			borrow := func(who string) {
				h, err := p.Borrow(ctx, "a")
				got <- res{who, h, err}
			}
			go borrow("W")
			bWaitFor(t, func() bool { return p.Stats().Waiters == 1 })
			go borrow("L")
			bWaitFor(t, func() bool { return p.Stats().Waiters == 2 })
			if err := p.Return(h0); err != nil {
				t.Fatal(err)
			}
			first := <-got
			if first.err != nil {
				t.Fatalf("%s: Borrow() = %v", first.who, first.err)
			}
			if first.who != "W" {
				t.Errorf("%s, who waited after W, was lent an object first, after W's hand-off failed (%s)", first.who, why)
			}
			if err := p.Return(first.h); err != nil {
				t.Fatal(err)
			}
			second := <-got
			if second.err != nil {
				t.Fatalf("%s: Borrow() = %v", second.who, second.err)
			}
			if err := p.Return(second.h); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// hookFactory is a bFactory whose Activate and Validate fail as fail says.
type hookFactory struct {
	*bFactory
	fail func(call string, o *bObj) error
}

func (f *hookFactory) Activate(ctx context.Context, key string, o *bObj) error {
	if err := f.bFactory.Activate(ctx, key, o); err != nil {
		return err
	}
	return f.fail("activate", o)
}

func (f *hookFactory) Validate(ctx context.Context, key string, o *bObj) error {
	if err := f.bFactory.Validate(ctx, key, o); err != nil {
		return err
	}
	return f.fail("validate", o)
}

// waitFor polls cond for up to 3 s.
func bWaitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 3s")
		}
		time.Sleep(time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Promise 2: Close racing everything. Workers Borrow, Return and Invalidate
// (lanes and the pool-wide way, shared or not), others SetConfig,
// RunEviction, Clear, Prepare and read Stats, while Close runs. Afterwards:
// every Borrow fails with ErrClosed, every object made is destroyed
// exactly once, nothing is lent or idle, and no goroutine is left.
func TestBreakerCloseRacesEverything(t *testing.T) {
	for _, shares := range []int{1, 3} {
		for round := range 4 {
			t.Run(fmt.Sprintf("shares=%d/round=%d", shares, round), func(t *testing.T) {
				base := runtime.NumGoroutine()
				f := newBFactory()
				f.pMake, f.pActivate, f.pPassivate, f.pValidate, f.pDestroy = 10, 10, 10, 10, 10
				f.eMake, f.eActivate, f.ePassivate, f.eValidate, f.eDestroy = 10, 10, 10, 10, 10
				f.makeDelay = time.Duration(round) * 200 * time.Microsecond
				cfg := keyedpool.Config{MaxTotal: 6, MaxTotalPerKey: 3, MaxIdlePerKey: 2, MinIdlePerKey: 1,
					MaxSharesPerObject: shares, TestOnBorrow: round%2 == 0, TestOnReturn: round%2 == 1,
					TimeBetweenEvictionRuns: time.Millisecond, TestWhileIdle: true, FactoryTimeout: time.Second}
				p, err := keyedpool.New[string, *bObj](f, cfg)
				if err != nil {
					t.Fatal(err)
				}
				f.chaos.Store(true)
				var wg sync.WaitGroup
				for g := range 6 {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(uint64(g), uint64(round)))
						var held []*bHandle
						for i := 0; i < 400; i++ {
							if len(held) < 2 && rng.IntN(2) == 0 {
								ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rng.IntN(5))*time.Millisecond)
								h, err := p.Borrow(ctx, bKeys[rng.IntN(len(bKeys))])
								cancel()
								if err == nil {
									held = append(held, h)
								}
							} else if len(held) > 0 {
								j := rng.IntN(len(held))
								if rng.IntN(6) == 0 {
									_ = p.Invalidate(held[j])
								} else {
									_ = p.Return(held[j])
								}
								held = append(held[:j], held[j+1:]...)
							}
						}
						for _, h := range held {
							_ = p.Return(h)
						}
					})
				}
				wg.Go(func() {
					for i := 0; i < 100; i++ {
						c := p.Config()
						c.MaxTotal = 3 + i%5
						c.MaxTotalPerKey = 1 + i%3
						c.MaxIdlePerKey = 1 + i%3
						c.MinIdlePerKey = min(c.MaxIdlePerKey, c.MaxTotalPerKey, i%2)
						c.FIFO = i%2 == 0
						_ = p.SetConfig(c)
						_ = p.RunEviction(context.Background())
						_ = p.Stats()
						_ = p.Clear(context.Background(), bKeys[i%len(bKeys)])
						_ = p.Prepare(context.Background(), bKeys[i%len(bKeys)])
						time.Sleep(100 * time.Microsecond)
					}
				})
				time.Sleep(time.Duration(2+round) * time.Millisecond)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				closeErr := p.Close(ctx)
				cancel()
				// Borrows after Close returned fail.
				for _, k := range bKeys {
					if h, err := p.Borrow(context.Background(), k); !errors.Is(err, keyedpool.ErrClosed) {
						t.Errorf("Borrow(%q) after Close = %v, %v; want ErrClosed", k, h, err)
					}
				}
				wg.Wait()
				if closeErr != nil && !errors.Is(closeErr, keyedpool.ErrFactoryPanic) && !strings.Contains(closeErr.Error(), "breaker") {
					t.Errorf("Close() = %v", closeErr)
				}
				f.chaos.Store(false)
				s := p.Stats()
				if !s.Closed || s.Active != 0 || s.Idle != 0 || s.Making != 0 || s.Waiters != 0 || s.SharesInUse != 0 {
					t.Errorf("after Close: Stats gauges = %+v closed=%v", s.Gauges, s.Closed)
				}
				if m, d := f.made.Load(), f.destroyed.Load(); m != d {
					t.Errorf("after Close: %d made, %d destroyed", m, d)
				}
				if s.Created != s.Destroyed {
					t.Errorf("after Close: Created %d, Destroyed %d", s.Created, s.Destroyed)
				}
				for _, pr := range f.Problems() {
					t.Errorf("factory problem: %s", pr)
				}
				waitGoroutines(t, base)
			})
		}
	}
}

// Promise 1 under SetConfig: limits lowered and raised (MaxTotal,
// MaxTotalPerKey, MaxIdlePerKey, MinIdlePerKey, FIFO, WhenExhausted,
// MaxLifetime, the evictor) while traffic with failing and panicking
// factory methods runs. Once traffic stops and a final config is set, the
// counts are exact and the pool lends to its final limits.
func TestBreakerSetConfigChurnNoLeak(t *testing.T) {
	for _, shares := range []int{1, 2} {
		t.Run(fmt.Sprintf("shares=%d", shares), func(t *testing.T) {
			f := newBFactory()
			f.pMake, f.pActivate, f.pPassivate, f.pValidate, f.pDestroy = 10, 10, 10, 10, 10
			f.eMake, f.eActivate, f.ePassivate, f.eValidate, f.eDestroy = 10, 10, 10, 10, 10
			p := newBPool(t, f, keyedpool.Config{MaxTotal: 6, MaxTotalPerKey: 3, MaxSharesPerObject: shares,
				TestOnBorrow: true, FactoryTimeout: time.Second})
			f.chaos.Store(true)
			var borrowed atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 6 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 5))
					var held []*bHandle
					for i := 0; i < 1500; i++ {
						if len(held) < 2 && rng.IntN(2) == 0 {
							ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rng.IntN(5))*time.Millisecond)
							h, err := p.Borrow(ctx, bKeys[rng.IntN(len(bKeys))])
							cancel()
							if err == nil {
								borrowed.Add(1)
								held = append(held, h)
							}
						} else if len(held) > 0 {
							j := rng.IntN(len(held))
							if rng.IntN(6) == 0 {
								_ = p.Invalidate(held[j])
							} else {
								_ = p.Return(held[j])
							}
							held = append(held[:j], held[j+1:]...)
						}
					}
					for _, h := range held {
						_ = p.Return(h)
					}
				})
			}
			var cw sync.WaitGroup
			cw.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c := p.Config()
					c.MaxTotal = 2 + i%6
					c.MaxTotalPerKey = 1 + i%3
					c.MaxIdlePerKey = 1 + (i/3)%3
					c.MinIdlePerKey = min(c.MaxIdlePerKey, c.MaxTotalPerKey, (i/2)%2)
					c.FIFO = i%4 < 2
					c.WhenExhausted = keyedpool.ExhaustedAction(i / 5 % 2)
					if i%7 == 0 {
						c.MaxLifetime = 2 * time.Millisecond
					} else {
						c.MaxLifetime = 0
					}
					if i%11 == 0 {
						c.TimeBetweenEvictionRuns = time.Millisecond
					} else if i%11 == 5 {
						c.TimeBetweenEvictionRuns = 0
					}
					if err := p.SetConfig(c); errors.Is(err, keyedpool.ErrInvalidConfig) {
						t.Errorf("SetConfig() = %v", err) // destroy errors are documented
					}
					if i%3 == 0 {
						_ = p.RunEviction(context.Background())
					}
					time.Sleep(200 * time.Microsecond)
				}
			})
			wg.Wait()
			close(stop)
			cw.Wait()
			f.chaos.Store(false)
			final := keyedpool.Config{MaxTotal: 5, MaxTotalPerKey: 2, MaxSharesPerObject: shares, FactoryTimeout: time.Second}
			if err := p.SetConfig(final); err != nil {
				t.Fatal(err)
			}
			quiet(t, p, f, borrowed.Load())
			n := lendToLimits(t, p, []string{"a", "b"}, 2)
			n += lendToLimits(t, p, []string{"c", "a", "d", "b", "e"}, 1)
			borrowed.Add(n)
			quiet(t, p, f, borrowed.Load())
			_, maxAll, _ := f.all()
			t.Logf("borrowed %d, max alive %d, stats %+v", borrowed.Load(), maxAll, p.Stats().Counters)
		})
	}
}

// Idle order (promise 4) for an object made for a borrower who gives up.
// Borrow: "A make still running at the deadline goes on, and its object
// joins the pool"; putLocked's contract: an object "returned or made ...
// goes in as the most recently returned"; only one "taken from the idle
// set and not used" goes back to its old place. Here the borrower gives up
// while its new object N is being activated, after X was returned: N
// joins the idle set after X, so LIFO must lend N first and FIFO X first
// (as they do when the borrower gives up while N is still being made).
func TestBreakerMadeObjectOfGaveUpBorrowerIsNewest(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, when := range []string{"activate", "make"} {
			t.Run(fmt.Sprintf("FIFO=%v/gaveUpDuring=%s", fifo, when), func(t *testing.T) {
				f := newBFactory()
				var blockID atomic.Int64 // the object whose Activate blocks until its ctx ends
				blockID.Store(-1)
				var blockMake atomic.Bool
				makeStarted := make(chan struct{}, 1)
				releaseMake := make(chan struct{})
				activating := make(chan struct{}, 1)
				fac := &ctxFactory{bFactory: f,
					make: func(ctx context.Context) {
						if blockMake.Load() {
							makeStarted <- struct{}{}
							<-releaseMake
						}
					},
					activate: func(ctx context.Context, o *bObj) error {
						if o.id == blockID.Load() {
							activating <- struct{}{}
							<-ctx.Done()
							return ctx.Err()
						}
						return nil
					}}
				p := newBPoolWith(t, f, fac, keyedpool.Config{FIFO: fifo})
				bg := context.Background()
				hX, err := p.Borrow(bg, "a")
				if err != nil {
					t.Fatal(err)
				}
				x := hX.Value().id
				ctx, cancel := context.WithCancel(bg)
				done := make(chan error, 1)
				if when == "activate" {
					blockID.Store(x + 1) // the next object made
				} else {
					blockMake.Store(true)
				}
				go func() {
					_, err := p.Borrow(ctx, "a")
					done <- err
				}()
				if when == "activate" {
					<-activating
				} else {
					<-makeStarted
				}
				mustReturnB(t, p, hX) // X idle now
				time.Sleep(time.Millisecond)
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("Borrow() = %v, want context.Canceled", err)
				}
				if when == "make" {
					blockMake.Store(false)
					close(releaseMake)
				}
				bWaitFor(t, func() bool { s := p.Stats(); return s.Idle == 2 && s.Making == 0 && s.Active == 0 })
				blockID.Store(-1)
				h1, err := p.Borrow(bg, "a")
				if err != nil {
					t.Fatal(err)
				}
				defer mustReturnB(t, p, h1)
				want := x + 1 // N, the newest, in LIFO
				if fifo {
					want = x
				}
				if got := h1.Value().id; got != want {
					t.Errorf("first Borrow after N (%d) joined the idle set after X (%d) lent %d, want %d (FIFO %v)", x+1, x, got, want, fifo)
				}
			})
		}
	}
}

// ctxFactory is a bFactory with hooks for Make and Activate.
type ctxFactory struct {
	*bFactory
	make     func(ctx context.Context)
	activate func(ctx context.Context, o *bObj) error
}

func (f *ctxFactory) Make(ctx context.Context, key string) (*bObj, error) {
	f.make(ctx)
	return f.bFactory.Make(ctx, key)
}

func (f *ctxFactory) Activate(ctx context.Context, key string, o *bObj) error {
	if err := f.bFactory.Activate(ctx, key, o); err != nil {
		return err
	}
	return f.activate(ctx, o)
}

// Counters.IdleCount counts idle spans ended by a lend. A waiter granted
// room, with another key's idle object as the victim, who gives up at the
// same moment hands the room back and the victim goes back idle, never
// lent: IdleCount must not change. (The race is hit by chance: the test
// tries many times.)
func TestBreakerVictimHandedBackKeepsIdleCount(t *testing.T) {
	f := newBFactory()
	p := newBPool(t, f, keyedpool.Config{MaxTotal: 1, TimeBetweenEvictionRuns: time.Hour})
	bg := context.Background()
	hits := 0
	for i := range 200 {
		h, err := p.Borrow(bg, "a")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(bg)
		done := make(chan error, 1)
		go func() {
			hb, err := p.Borrow(ctx, "b")
			if err == nil {
				err = p.Return(hb)
				if err == nil {
					err = errors.New("lent")
				}
			}
			done <- err
		}()
		bWaitFor(t, func() bool { return p.Stats().Waiters == 1 })
		before := p.Stats().IdleCount
		cancel()
		mustReturnB(t, p, h) // a's object: the waiter's victim, if it still waits
		err = <-done
		s := p.Stats()
		if errors.Is(err, context.Canceled) {
			if s.IdleCount != before {
				t.Fatalf("try %d: IdleCount went from %d to %d though nothing was lent from the idle set (Stats %+v)", i, before, s.IdleCount, s)
			}
			if s.Idle == 1 {
				hits++
			}
		}
		if s.Active != 0 || s.Making != 0 || s.Waiters != 0 {
			t.Fatalf("try %d: Stats gauges %+v", i, s.Gauges)
		}
		// Back to one idle object of a for the next try.
		if s.Idle == 0 || p.KeyStats("a").Idle == 0 {
			if err := p.ClearAll(bg); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d tries ended with a cancelled waiter and the victim idle", hits)
}

// Promise 5: bad input gets a clear error, on the lane path and the
// pool-wide way alike, and costs no room.
func TestBreakerBadInput(t *testing.T) {
	f := newBFactory()
	p := newBPool(t, f, keyedpool.Config{MaxTotalPerKey: 1})
	other := newBPool(t, newBFactory(), keyedpool.Config{})
	bg := context.Background()
	for _, h := range []*bHandle{nil, {}} {
		if err := p.Return(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("Return(%v) = %v, want ErrNotBorrowed", h, err)
		}
		if err := p.Invalidate(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("Invalidate(%v) = %v, want ErrNotBorrowed", h, err)
		}
	}
	h, err := p.Borrow(bg, "a")
	if err != nil {
		t.Fatal(err)
	}
	ho, err := other.Borrow(bg, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Return(ho); !errors.Is(err, keyedpool.ErrForeignObject) {
		t.Errorf("Return(other pool's handle) = %v, want ErrForeignObject", err)
	}
	if err := p.Invalidate(ho); !errors.Is(err, keyedpool.ErrForeignObject) {
		t.Errorf("Invalidate(other pool's handle) = %v, want ErrForeignObject", err)
	}
	if err := other.Return(ho); err != nil {
		t.Errorf("other.Return() = %v", err)
	}
	mustReturnB(t, p, h) // onto the lane
	if err := p.Return(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("second Return() = %v, want ErrNotBorrowed", err)
	}
	if err := p.Invalidate(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("Invalidate() after Return = %v, want ErrNotBorrowed", err)
	}
	// The room is intact: the key's one object can be lent.
	ctx, cancel := context.WithTimeout(bg, time.Second)
	h, err = p.Borrow(ctx, "a")
	cancel()
	if err != nil {
		t.Fatalf("Borrow() after bad Returns = %v", err)
	}
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	if err := p.Invalidate(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("second Invalidate() = %v, want ErrNotBorrowed", err)
	}
	// Configs.
	if _, err := keyedpool.New[string, *bObj](nil, keyedpool.Config{}); !errors.Is(err, keyedpool.ErrInvalidConfig) {
		t.Errorf("New(nil factory) = %v, want ErrInvalidConfig", err)
	}
	for _, c := range []keyedpool.Config{
		{MaxWait: -1}, {MinIdlePerKey: -1}, {MinIdlePerKey: 3, MaxIdlePerKey: 2}, {MaxSharesPerObject: -1},
		{WhenExhausted: 7}, {MaxLifetime: -1}, {MakeBackoffBase: 2 * time.Second, MakeBackoffMax: time.Second},
	} {
		if _, err := keyedpool.New[string, *bObj](f, c); !errors.Is(err, keyedpool.ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", c, err)
		}
		if err := p.SetConfig(c); !errors.Is(err, keyedpool.ErrInvalidConfig) {
			t.Errorf("SetConfig(%+v) = %v, want ErrInvalidConfig", c, err)
		}
	}
	if got := p.Config().MaxTotalPerKey; got != 1 {
		t.Errorf("refused SetConfigs changed MaxTotalPerKey to %d", got)
	}
	if err := p.SetConfig(keyedpool.Config{MaxSharesPerObject: 2}); !errors.Is(err, keyedpool.ErrInvalidConfig) {
		t.Errorf("SetConfig(MaxSharesPerObject 2) = %v, want ErrInvalidConfig", err)
	}
	// Odd keys.
	pa, err := keyedpool.New[any, int](factory.Funcs[any, int]{MakeFunc: func(context.Context, any) (int, error) { return 1, nil }}, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close(bg)
	for _, k := range []any{[]int{1}, map[int]int{}, struct{ F any }{[]int{}}, [1]any{float64NaN()}} {
		if _, err := pa.Borrow(bg, k); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("Borrow(%v) = %v, want ErrInvalidKey", k, err)
		}
		if err := pa.AddObject(bg, k); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("AddObject(%v) = %v, want ErrInvalidKey", k, err)
		}
	}
	// After Close: a handle lent before goes back and is destroyed; nothing
	// more is lent.
	h, err = p.Borrow(bg, "a")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close(bg) }()
	bWaitFor(t, func() bool { return p.Stats().Closed })
	if _, err := p.Borrow(bg, "a"); !errors.Is(err, keyedpool.ErrClosed) {
		t.Errorf("Borrow() after Close = %v, want ErrClosed", err)
	}
	if err := p.SetConfig(keyedpool.Config{}); !errors.Is(err, keyedpool.ErrClosed) {
		t.Errorf("SetConfig() after Close = %v, want ErrClosed", err)
	}
	if err := p.RunEviction(bg); !errors.Is(err, keyedpool.ErrClosed) {
		t.Errorf("RunEviction() after Close = %v, want ErrClosed", err)
	}
	if err := p.Return(h); err != nil {
		t.Errorf("Return() of a lease lent before Close = %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close() = %v", err)
	}
	if !h.Value().destroyed.Load() {
		t.Error("object returned after Close not destroyed")
	}
}

func float64NaN() float64 { z := 0.0; return z / z }
