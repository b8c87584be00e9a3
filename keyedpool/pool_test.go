package keyedpool_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

func TestBorrowReturnReusesIdle(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{})
	h := mustBorrow(t, p, "a")
	first := h.Value()
	mustReturn(t, p, h)
	h = mustBorrow(t, p, "a")
	if h.Value() != first {
		t.Errorf("second Borrow() = object %d, want reused object %d", h.Value().ID, first.ID)
	}
	mustReturn(t, p, h)
	if got := f.Made.Load(); got != 1 {
		t.Errorf("objects made = %d, want 1", got)
	}
	if got, want := f.Activated.Load(), int64(2); got != want {
		t.Errorf("Activate calls = %d, want %d", got, want)
	}
	if got, want := f.Passivated.Load(), int64(2); got != want {
		t.Errorf("Passivate calls = %d, want %d", got, want)
	}
	s := p.KeyStats("a")
	if s.Borrowed != 2 || s.Returned != 2 || s.Created != 1 || s.Idle != 1 || s.Active != 0 {
		t.Errorf("KeyStats(a) = %+v, want 2 borrowed, 2 returned, 1 created, 1 idle, 0 active", s)
	}
}

func TestIdleOrder(t *testing.T) {
	for _, tt := range []struct {
		name string
		fifo bool
		want []int // index of the object lent first, second, third
	}{
		{"LIFO", false, []int{2, 1, 0}},
		{"FIFO", true, []int{0, 1, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPool(t, keyedpool.Config{FIFO: tt.fifo})
			var hs []*handle
			for range 3 {
				hs = append(hs, mustBorrow(t, p, "k"))
			}
			for _, h := range hs {
				mustReturn(t, p, h)
			}
			for i, want := range tt.want {
				h := mustBorrow(t, p, "k")
				if h.Value() != hs[want].Value() {
					t.Errorf("Borrow() #%d = object %d, want object %d", i, h.Value().ID, hs[want].Value().ID)
				}
			}
		})
	}
}

func TestExhaustedFail(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 2, WhenExhausted: keyedpool.Fail})
	mustBorrow(t, p, "a")
	mustBorrow(t, p, "a")
	if _, err := p.Borrow(context.Background(), "a"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("Borrow() over MaxTotalPerKey error = %v, want ErrExhausted", err)
	}
	// Another key is not affected by a's limit.
	mustBorrow(t, p, "b")
}

func TestExhaustedBlockMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: 3 * time.Second})
		mustBorrow(t, p, "a")
		start := time.Now()
		_, err := p.Borrow(context.Background(), "a")
		if !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("Borrow() error = %v, want ErrExhausted", err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("Borrow() waited %v, want MaxWait 3s", got)
		}
		s := p.Stats()
		if s.Waited != 1 || s.MaxWaitTime != 3*time.Second || s.WaitTime != 3*time.Second || s.Waiters != 0 {
			t.Errorf("Stats() = %+v, want 1 wait of 3s and no waiters left", s)
		}
	})
}

func TestExhaustedBlockContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1})
		mustBorrow(t, p, "a")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := p.Borrow(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Borrow() error = %v, want context.DeadlineExceeded", err)
		}
		if got := p.KeyStats("a").Waiters; got != 0 {
			t.Errorf("waiters after deadline = %d, want 0", got)
		}
	})
}

func TestReturnHandsToWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{MaxTotalPerKey: 1})
		h := mustBorrow(t, p, "a")
		ch := borrowAsync(context.Background(), p, "a")
		synctest.Wait()
		if got := p.KeyStats("a").Waiters; got != 1 {
			t.Fatalf("waiters = %d, want 1", got)
		}
		mustReturn(t, p, h)
		r := <-ch
		if r.err != nil || r.h.Value() != h.Value() {
			t.Fatalf("waiting Borrow() = %v, %v, want the returned object", r.h, r.err)
		}
		if got := f.Made.Load(); got != 1 {
			t.Errorf("objects made = %d, want 1", got)
		}
	})
}

// Modelled on commons-pool2's testBlockedKeyDoesNotBlockPool: a key at its
// own limit, with a borrower waiting on it, does not stop other keys.
func TestBlockedKeyDoesNotBlockPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1, MaxTotal: -1})
		mustBorrow(t, p, "one")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		waiting := borrowAsync(ctx, p, "one")
		synctest.Wait()
		h := mustBorrow(t, p, "two")
		mustReturn(t, p, h)
		cancel()
		if r := <-waiting; !errors.Is(r.err, context.Canceled) {
			t.Errorf("blocked Borrow() error = %v, want context.Canceled", r.err)
		}
	})
}

// Modelled on commons-pool2's testMaxTotalWithIdle... : when MaxTotal is
// reached and other keys hold idle objects, the oldest idle objects make
// room, never lent ones.
func TestMaxTotalDestroysOldestIdleOfOtherKeys(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxTotal: 3})
	a1, a2, b1 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a"), mustBorrow(t, p, "b")
	mustReturn(t, p, a1) // oldest idle
	mustReturn(t, p, a2)
	c := mustBorrow(t, p, "c")
	if !a1.Value().Destroyed() || a2.Value().Destroyed() || b1.Value().Destroyed() {
		t.Errorf("destroyed a1, a2, b1 = %v, %v, %v, want true, false, false",
			a1.Value().Destroyed(), a2.Value().Destroyed(), b1.Value().Destroyed())
	}
	if got := f.MaxLiveAll(); got > 3 {
		t.Errorf("most objects alive = %d, want <= MaxTotal 3", got)
	}
	if got := p.Stats().DestroyedByClear; got != 1 {
		t.Errorf("DestroyedByClear = %d, want 1", got)
	}
	mustReturn(t, p, c)
	mustReturn(t, p, b1)
}

// Modelled on commons-pool2's testInvalidateFreesCapacityForOtherKeys.
func TestInvalidateFreesRoomForOtherKeysWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 1})
		a := mustBorrow(t, p, "a")
		ch := borrowAsync(context.Background(), p, "b")
		synctest.Wait()
		if err := p.Invalidate(a); err != nil {
			t.Fatalf("Invalidate() error = %v", err)
		}
		r := <-ch
		if r.err != nil || r.h.Key() != "b" {
			t.Fatalf("Borrow(b) = %v, %v, want an object of b", r.h, r.err)
		}
		if !a.Value().Destroyed() {
			t.Error("invalidated object not destroyed")
		}
		mustReturn(t, p, r.h)
	})
}

// Waiters of different keys are served in arrival order as room frees.
func TestWaitersServedFirstComeFirstServedAcrossKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 1})
		h := mustBorrow(t, p, "x")
		keys := []string{"d", "b", "c", "a"}
		var chs []<-chan result
		for _, k := range keys {
			chs = append(chs, borrowAsync(context.Background(), p, k))
			synctest.Wait() // queued in this order
		}
		for i, k := range keys {
			if err := p.Invalidate(h); err != nil {
				t.Fatalf("Invalidate() error = %v", err)
			}
			r := <-chs[i]
			if r.err != nil || r.h.Key() != k {
				t.Fatalf("waiter %d got %v, %v, want an object of %q", i, r.h, r.err, k)
			}
			h = r.h
		}
		mustReturn(t, p, h)
	})
}

func TestMakeErrorReleasesRoomAndWakesNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("backend down")
		f := &testfactory.Factory{}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 1})
		h := mustBorrow(t, p, "a")
		f.MakeHook = func(context.Context, string) error { return boom }
		var chs []<-chan result
		for range 5 {
			chs = append(chs, borrowAsync(context.Background(), p, "b"))
		}
		synctest.Wait()
		if err := p.Invalidate(h); err != nil {
			t.Fatal(err)
		}
		for i, ch := range chs {
			if r := <-ch; !errors.Is(r.err, boom) {
				t.Errorf("waiter %d error = %v, want wrapped %v", i, r.err, boom)
			}
		}
		s := p.Stats()
		if s.MakeErrors != 5 || s.Active+s.Idle+s.Making != 0 || s.Waiters != 0 {
			t.Errorf("Stats() = %+v, want 5 make errors and nothing held", s)
		}
	})
}

func TestBorrowerGivingUpDuringMakeKeepsObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
			time.Sleep(time.Minute) // a slow dial
			return nil
		}}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := p.Borrow(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Borrow() error = %v, want DeadlineExceeded", err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if s := p.KeyStats("a"); s.Idle != 1 || s.Created != 1 {
			t.Errorf("KeyStats(a) = %+v, want the made object idle", s)
		}
	})
}

func TestMisuse(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	other, _ := newPool(t, keyedpool.Config{})
	h := mustBorrow(t, p, "a")
	oh := mustBorrow(t, other, "a")
	if err := p.Return(oh); !errors.Is(err, keyedpool.ErrForeignObject) {
		t.Errorf("Return(other pool's handle) = %v, want ErrForeignObject", err)
	}
	if err := p.Invalidate(oh); !errors.Is(err, keyedpool.ErrForeignObject) {
		t.Errorf("Invalidate(other pool's handle) = %v, want ErrForeignObject", err)
	}
	if err := p.Return(nil); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("Return(nil) = %v, want ErrNotBorrowed", err)
	}
	mustReturn(t, p, h)
	if err := p.Return(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("second Return() = %v, want ErrNotBorrowed", err)
	}
	if err := p.Invalidate(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("Invalidate() after Return = %v, want ErrNotBorrowed", err)
	}
	s := p.Stats()
	if s.Borrowed != 1 || s.Returned != 1 || s.Idle != 1 || s.Active != 0 {
		t.Errorf("Stats() after misuse = %+v, want counts untouched", s)
	}
	mustReturn(t, other, oh)
}

// The pool judges age by when an object last went idle, however often
// objects cycle through the idle set in between.
func TestOldestIdleAfterManyCycles(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxTotal: 3})
	old := mustBorrow(t, p, "old")
	a1, a2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
	mustReturn(t, p, old) // idle first, so the oldest
	mustReturn(t, p, a2)
	for range 5000 { // a1 and a2 cycle, leaving stale entries behind
		mustReturn(t, p, a1)
		a1 = mustBorrow(t, p, "a")
	}
	mustReturn(t, p, a1)
	h := mustBorrow(t, p, "new") // at MaxTotal: destroys the oldest idle
	if !old.Value().Destroyed() || a1.Value().Destroyed() || a2.Value().Destroyed() {
		t.Errorf("destroyed old, a1, a2 = %v, %v, %v; want only old",
			old.Value().Destroyed(), a1.Value().Destroyed(), a2.Value().Destroyed())
	}
	mustReturn(t, p, h)
	if err := p.ClearOldest(context.Background()); err != nil { // 3 idle: takes 1
		t.Fatal(err)
	}
	if a1.Value().Destroyed() == a2.Value().Destroyed() {
		t.Errorf("ClearOldest() destroyed a1 %v, a2 %v; want exactly the older one", a1.Value().Destroyed(), a2.Value().Destroyed())
	}
}

// A borrower whose context ends while an idle object is being activated
// (a health check that honours ctx) gives up; the object is not to blame and
// goes back, and the other idle objects are left alone.
func TestBorrowerGivingUpDuringActivationKeepsObjects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		var hs []*handle
		for range 5 {
			hs = append(hs, mustBorrow(t, p, "a"))
		}
		for _, h := range hs {
			mustReturn(t, p, h)
		}
		f.ActivateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			select {
			case <-time.After(2 * time.Second): // slow but healthy
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := p.Borrow(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Borrow() = %v, want DeadlineExceeded", err)
		}
		if s := p.Stats(); s.Destroyed != 0 || s.Idle != 5 || s.Created != 5 || s.Borrowed != 5 {
			t.Errorf("Stats() = %+v, want the 5 idle objects kept and no borrow counted", s)
		}
	})
}

// A stale handle given back while the pool is activating its object for a
// new borrower fails with ErrNotBorrowed and does not disturb that borrower:
// the object is in one list at a time.
func TestStaleReturnDuringActivationFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2})
		h1 := mustBorrow(t, p, "a")
		mustReturn(t, p, h1)
		f.ActivateHook = func(context.Context, *testfactory.Obj) error { time.Sleep(time.Second); return nil }
		ch := borrowAsync(context.Background(), p, "a") // reuses h1's handle
		synctest.Wait()
		if err := p.Return(h1); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("stale Return() during activation = %v, want ErrNotBorrowed", err)
		}
		r := <-ch
		if r.err != nil {
			t.Fatalf("Borrow() = %v", r.err)
		}
		mustReturn(t, p, r.h)
	})
}
