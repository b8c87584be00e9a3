package keyedpool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

func TestAbandonedRemovedOnMaintenance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		p, f := newPool(t, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			Abandoned: &keyedpool.AbandonedConfig{
				RemoveOnMaintenance: true,
				Timeout:             10 * time.Second,
				LogAbandoned:        true,
				Logger:              slog.New(slog.NewTextHandler(&logs, nil)),
			},
		})
		leaked := mustBorrow(t, p, "a")
		used := mustBorrow(t, p, "a")
		for range 6 {
			sleepPast(2 * time.Second)
			used.MarkUsed()
		}
		// 12s: leaked has gone unused past its 10s timeout (at most one run late).
		if err := p.Return(leaked); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("Return of a lease taken back as abandoned = %v, want ErrNotBorrowed", err)
		}
		if !leaked.Value().Destroyed() {
			t.Error("the abandoned object was not destroyed")
		}
		s := p.Stats()
		if s.DestroyedByAbandoned != 1 || s.Active != 1 || f.LiveAll() != 1 {
			t.Errorf("DestroyedByAbandoned = %d, Active = %d, live = %d; want 1, 1, 1", s.DestroyedByAbandoned, s.Active, f.LiveAll())
		}
		mustReturn(t, p, used) // kept alive by MarkUsed
		out := logs.String()
		if !strings.Contains(out, "abandoned") || !strings.Contains(out, "TestAbandonedRemovedOnMaintenance") {
			t.Errorf("log = %q, want an abandoned record with the stack of the leaking Borrow", out)
		}
	})
}

// RemoveOnBorrow frees a full pool's leaked objects for the next borrower,
// without an evictor.
func TestAbandonedRemovedOnBorrow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MaxTotalPerKey: 1,
			WhenExhausted:  keyedpool.Fail,
			Abandoned:      &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: time.Minute},
		})
		leaked := mustBorrow(t, p, "a")
		sleepPast(30 * time.Second)
		if _, err := p.Borrow(context.Background(), "a"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Fatalf("Borrow with a lease 30s old = %v, want ErrExhausted (not abandoned yet)", err)
		}
		sleepPast(31 * time.Second)
		h, err := p.Borrow(context.Background(), "a")
		if err != nil {
			t.Fatalf("Borrow with a lease 61s old = %v, want the room it leaked", err)
		}
		if h.Value() == leaked.Value() {
			t.Error("Borrow lent the abandoned object again; want a new one")
		}
		mustReturn(t, p, h)
		if got := p.Stats().DestroyedByAbandoned; got != 1 {
			t.Errorf("DestroyedByAbandoned = %d, want 1", got)
		}
	})
}

// With shared leases, an abandoned lease stops the object being lent and
// it is destroyed when its other borrowers are done, never under them.
func TestAbandonedSharedLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 2,
			MaxTotalPerKey:     1,
			Abandoned:          &keyedpool.AbandonedConfig{Timeout: time.Minute},
			MaxWait:            time.Second,
		})
		leaked := mustBorrow(t, p, "a")
		sleepPast(50 * time.Second)
		other := mustBorrow(t, p, "a")
		sleepPast(20 * time.Second)
		other.MarkUsed()
		// Removal runs here at Borrow only with RemoveOnBorrow; run it by hand.
		if err := p.SetConfig(keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 1,
			Abandoned: &keyedpool.AbandonedConfig{Timeout: time.Minute, RemoveOnMaintenance: true}}); err != nil {
			t.Fatal(err)
		}
		mustRunEviction(t, p)
		if other.Value().Destroyed() {
			t.Fatal("the shared object was destroyed under another borrower")
		}
		if err := p.Return(leaked); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("Return of the abandoned lease = %v, want ErrNotBorrowed", err)
		}
		mustReturn(t, p, other)
		if !other.Value().Destroyed() || p.Stats().DestroyedByAbandoned != 1 {
			t.Errorf("after the last share came back: destroyed %v, DestroyedByAbandoned %d; want true, 1",
				other.Value().Destroyed(), p.Stats().DestroyedByAbandoned)
		}
	})
}

// A run that outlasts the interval does not stop the pool's clock (see
// TestSlowRunEvictsNothingEarly): a lease borrowed meanwhile is stamped with
// its time, and is not taken back before Abandoned.Timeout.
func TestSlowRunTakesNoLeaseBackEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var slowOnce atomic.Bool
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.Key == "slow" && slowOnce.CompareAndSwap(false, true) {
				time.Sleep(9500 * time.Millisecond)
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			NumTestsPerEvictionRun:  -1,
			TestWhileIdle:           true,
			Abandoned:               &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: 5 * time.Second},
		})
		idleObjects(t, p, "slow", 1)
		sleepPast(10 * time.Second)
		h := mustBorrow(t, p, "a") // at 10s
		sleepPast(1500 * time.Millisecond)
		if err := p.Return(h); err != nil {
			t.Errorf("Return of a lease borrowed 1.5s ago = %v (DestroyedByAbandoned = %d); "+
				"want nil: Abandoned.Timeout is 5s", err, p.Stats().DestroyedByAbandoned)
		}
	})
}

// A leaked lease whose object has also outlived MaxLifetime, taken back by a
// run, counts in DestroyedByAbandoned (the counter users watch for leaks),
// not DestroyedByLifetime, in exclusive and in shared mode: the run's
// lifetime sweep only queues upkeep, it does not retire the object first.
func TestAbandonedExpiredLeaseCountsAsAbandoned(t *testing.T) {
	for _, shares := range []int{1, 4} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, _ := newPool(t, keyedpool.Config{
					MaxSharesPerObject: shares,
					MaxLifetime:        10 * time.Second,
					Abandoned:          &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: 5 * time.Second},
				})
				leaked := mustBorrow(t, p, "k")
				sleepPast(11 * time.Second) // leaked for 11s (> 5s) and past its lifetime (10s)
				mustRunEviction(t, p)
				if err := p.Return(leaked); !errors.Is(err, keyedpool.ErrNotBorrowed) {
					t.Fatalf("Return of the lease taken back = %v, want ErrNotBorrowed", err)
				}
				if s := p.Stats(); s.Destroyed != 1 || s.DestroyedByAbandoned != 1 || s.DestroyedByLifetime != 0 {
					t.Errorf("leaked lease taken back by the run: Destroyed %d, DestroyedByAbandoned %d, DestroyedByLifetime %d; want 1, 1, 0",
						s.Destroyed, s.DestroyedByAbandoned, s.DestroyedByLifetime)
				}
			})
		})
	}
}
