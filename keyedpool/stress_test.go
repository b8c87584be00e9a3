package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// TestStress runs random Borrow, Return, Invalidate, Clear and SetConfig
// calls from many goroutines over many keys, with a factory that fails some
// makes, is slow for others, has objects go bad, and panics now and then in
// each of its methods (a panic is one more failure the pool must contain). The limits are checked by
// the factory itself (objects made and not yet destroyed), so an object the
// pool forgot to count would show. At the end every object made must have
// been destroyed exactly once and the counters must agree. The Evictor
// variants add eviction runs every half millisecond and by hand, with every
// eviction option on and short enough to act during the test. The Roomy
// variants give MaxTotal room for every key's MaxTotalPerKey, without
// abandoned-object tracking, and look at Stats less often, so that
// exclusive Borrows and Returns mostly take the per-key lanes (lane.go),
// which turn off and on as waiters come and go at the per-key limit.
func TestStress(t *testing.T) {
	for _, shares := range []int{1, 3} {
		for _, evict := range []bool{false, true} {
			t.Run(fmt.Sprintf("Shares=%d/Evictor=%v", shares, evict), func(t *testing.T) { stress(t, shares, evict, false) })
		}
	}
	for _, evict := range []bool{false, true} {
		t.Run(fmt.Sprintf("Roomy/Evictor=%v", evict), func(t *testing.T) { stress(t, 1, evict, true) })
	}
}

func stress(t *testing.T, shares int, evict, roomy bool) {
	const (
		goroutines = 16
		ops        = 400
		keys       = 12
		maxPerKey  = 3
	)
	maxTotal, statsEvery := 10, 1
	if roomy {
		maxTotal, statsEvery = keys*maxPerKey, 25
	}
	errMake := errors.New("make failed")
	sometimesPanic := func(context.Context, *testfactory.Obj) error {
		if rand.IntN(100) == 0 {
			panic("factory panic")
		}
		return nil
	}
	f := &testfactory.Factory{
		ActivateHook: sometimesPanic, PassivateHook: sometimesPanic,
		ValidateHook: sometimesPanic, DestroyHook: sometimesPanic,
		MakeHook: func(ctx context.Context, _ string) error {
			switch n := rand.IntN(20); {
			case n == 19:
				panic("factory panic")
			case n <= 1:
				return errMake
			case n == 1:
				select {
				case <-time.After(200 * time.Microsecond):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		},
	}
	base := keyedpool.Config{MaxTotal: maxTotal, MaxTotalPerKey: maxPerKey, MaxSharesPerObject: shares, MinIdlePerKey: 1}
	if evict {
		base.TimeBetweenEvictionRuns = 500 * time.Microsecond
		base.NumTestsPerEvictionRun = -2
		base.TestWhileIdle = true
		base.MinEvictableIdle = 500 * time.Microsecond
		base.SoftMinEvictableIdle = 200 * time.Microsecond
		base.MaxLifetime = 3 * time.Millisecond
		base.MaxLifetimeJitter = 2 * time.Millisecond
		base.MakeFailureThreshold = 2
		base.MakeBackoffBase = 100 * time.Microsecond
		base.MakeBackoffMax = time.Millisecond
		if !roomy {
			base.Abandoned = &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, RemoveOnBorrow: true, Timeout: 2 * time.Millisecond}
		}
	}
	p, err := keyedpool.New(f, base)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var held []*handle
			giveBack := func(i int) {
				h := held[i]
				held = append(held[:i], held[i+1:]...)
				var err error
				if rng.IntN(8) == 0 {
					err = p.Invalidate(h)
				} else {
					if rng.IntN(20) == 0 {
						h.Value().Dead.Store(true)
					}
					err = p.Return(h)
				}
				if err != nil && !errors.Is(err, testfactory.ErrDead) && !errors.Is(err, keyedpool.ErrFactoryPanic) &&
					!(evict && !roomy && errors.Is(err, keyedpool.ErrNotBorrowed)) { // taken back as abandoned
					t.Errorf("giving back: %v", err)
				}
			}
			for i := range ops {
				key := fmt.Sprintf("k%d", rng.IntN(keys))
				switch op := rng.IntN(100); {
				case op < 55 && len(held) < 3:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(2000))*time.Microsecond)
					h, err := p.Borrow(ctx, key)
					cancel()
					switch {
					case err == nil:
						held = append(held, h)
					case errors.Is(err, errMake), errors.Is(err, keyedpool.ErrFactoryPanic), errors.Is(err, context.DeadlineExceeded),
						errors.Is(err, keyedpool.ErrExhausted), errors.Is(err, keyedpool.ErrValidation),
						errors.Is(err, keyedpool.ErrBackoff):
					default:
						t.Errorf("Borrow() = %v", err)
					}
				case op < 90 && len(held) > 0:
					giveBack(rng.IntN(len(held)))
				case op < 93:
					if err := p.Clear(context.Background(), key); err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
						t.Errorf("Clear() = %v", err)
					}
				case op < 95:
					if err := p.ClearOldest(context.Background()); err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
						t.Errorf("ClearOldest() = %v", err)
					}
				case op < 97:
					if err := p.Prepare(context.Background(), key); err != nil && !errors.Is(err, errMake) && !errors.Is(err, keyedpool.ErrFactoryPanic) &&
						!errors.Is(err, keyedpool.ErrExhausted) && !errors.Is(err, keyedpool.ErrBackoff) {
						t.Errorf("Prepare() = %v", err)
					}
				case op < 98 && evict:
					if err := p.RunEviction(context.Background()); err != nil && !errors.Is(err, errMake) && !errors.Is(err, keyedpool.ErrFactoryPanic) {
						t.Errorf("RunEviction() = %v", err)
					}
				default:
					cfg := base
					cfg.MaxIdlePerKey = 1 + rng.IntN(3)
					cfg.FIFO = rng.IntN(2) == 0
					cfg.TestOnBorrow = rng.IntN(2) == 0
					cfg.TestOnReturn = rng.IntN(2) == 0
					if rng.IntN(4) == 0 {
						cfg.WhenExhausted = keyedpool.Fail
					}
					if err := p.SetConfig(cfg); err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
						t.Errorf("SetConfig() = %v", err)
					}
				}
				if i%statsEvery != 0 {
					continue
				}
				if s := p.Stats(); s.Active+s.Idle+s.Making > maxTotal || s.SharesInUse > maxTotal*shares {
					t.Errorf("Stats() = %+v exceeds MaxTotal %d", s, maxTotal)
				}
			}
			for len(held) > 0 {
				giveBack(0)
			}
		}()
	}
	wg.Wait()
	before := p.Stats()
	// Bounded, so that a leaked lease fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil && (!errors.Is(err, keyedpool.ErrFactoryPanic) || ctx.Err() != nil) {
		t.Errorf("Close() = %v, want nil or panicking Destroys only", err)
	}
	s := p.Stats()
	t.Logf("%+v", s)
	if got := f.MaxLiveAll(); got > maxTotal {
		t.Errorf("most objects alive = %d, want <= MaxTotal %d", got, maxTotal)
	}
	if got := f.MaxLivePerKey(); got > maxPerKey {
		t.Errorf("most objects alive for one key = %d, want <= MaxTotalPerKey %d", got, maxPerKey)
	}
	if err := f.Problems(); err != nil {
		t.Errorf("factory saw misuse: %v", err)
	}
	if f.LiveAll() != 0 || s.Active+s.Idle+s.Making+s.Waiters+s.SharesInUse != 0 {
		t.Errorf("after Close: %d alive, Stats() = %+v; want nothing", f.LiveAll(), s)
	}
	if s.Created != f.Made.Load() || s.Destroyed != f.Destroyed.Load() || s.Created != s.Destroyed {
		t.Errorf("created %d (factory made %d), destroyed %d (factory %d): want all equal",
			s.Created, f.Made.Load(), s.Destroyed, f.Destroyed.Load())
	}
	if before.Borrowed != before.Returned || before.SharesInUse != 0 {
		t.Errorf("borrowed %d, returned %d, shares in use %d: want every lease back", before.Borrowed, before.Returned, before.SharesInUse)
	}
	if s.Borrowed == 0 || s.MakeErrors == 0 || s.Waited == 0 || (evict && s.EvictionTests == 0) {
		t.Errorf("Stats() = %+v: the stress did not exercise borrowing, make errors, waiting and eviction", s)
	}
	if s.Keys != 0 || s.KeysInBackoff != 0 {
		t.Errorf("after Close: Keys = %d, KeysInBackoff = %d, want 0, 0", s.Keys, s.KeysInBackoff)
	}
}
