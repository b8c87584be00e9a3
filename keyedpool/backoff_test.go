package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

var errDial = errors.New("dial: connection refused")

// deadKeyFactory fails every make of key "dead" while down is set, and
// counts them in calls; a make waits on gate first if it is set.
func deadKeyFactory(down *atomic.Bool, gate *chan struct{}, calls *atomic.Int64) *testfactory.Factory {
	return &testfactory.Factory{MakeHook: func(_ context.Context, key string) error {
		if key != "dead" {
			return nil
		}
		calls.Add(1)
		if *gate != nil {
			<-*gate
		}
		if down.Load() {
			return errDial
		}
		return nil
	}}
}

func TestMakeBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		var gate chan struct{}
		var calls atomic.Int64
		f := deadKeyFactory(&down, &gate, &calls)
		p := testfactory.NewPool(t, f, keyedpool.Config{
			MakeFailureThreshold: 3,
			MakeBackoffBase:      time.Second,
			MakeBackoffMax:       4 * time.Second,
		})
		ctx := context.Background()
		for i := range 3 {
			if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, errDial) || errors.Is(err, keyedpool.ErrBackoff) {
				t.Fatalf("Borrow %d = %v, want the make error", i+1, err)
			}
		}
		if got := calls.Load(); got != 3 {
			t.Fatalf("makes of the dead key = %d, want 3", got)
		}
		_, err := p.Borrow(ctx, "dead")
		if !errors.Is(err, keyedpool.ErrBackoff) || !errors.Is(err, errDial) || !strings.Contains(err.Error(), "dead") {
			t.Fatalf("Borrow after 3 failures = %v, want ErrBackoff wrapping the make error and naming the key", err)
		}
		if err := p.AddObject(ctx, "dead"); !errors.Is(err, keyedpool.ErrBackoff) {
			t.Errorf("AddObject in backoff = %v, want ErrBackoff", err)
		}
		ks := p.KeyStats("dead")
		if ks.MakeFailures != 3 || ks.BackoffUntil.IsZero() || ks.BackoffRejected != 2 || p.Stats().KeysInBackoff != 1 {
			t.Errorf("KeyStats = %+v, KeysInBackoff %d; want 3 failures, a BackoffUntil, 2 rejected, 1 key in backoff",
				ks, p.Stats().KeysInBackoff)
		}
		// Other keys are unaffected.
		mustReturn(t, p, mustBorrow(t, p, "live"))

		// Past the first period (1s ± 20%), one borrower probes; it fails
		// and the next period is longer (2s ± 20%).
		sleepPast(1200 * time.Millisecond)
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, errDial) || errors.Is(err, keyedpool.ErrBackoff) {
			t.Fatalf("probe Borrow = %v, want the make error", err)
		}
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, keyedpool.ErrBackoff) {
			t.Fatalf("Borrow after a failed probe = %v, want ErrBackoff", err)
		}
		if until := time.Until(p.KeyStats("dead").BackoffUntil); until < 1600*time.Millisecond || until > 2400*time.Millisecond {
			t.Errorf("second backoff period = %v, want 2s ± 20%%", until)
		}
		// While the next probe runs, other borrowers still fail fast.
		down.Store(false)
		gate = make(chan struct{})
		sleepPast(2400 * time.Millisecond)
		probe := borrowAsync(ctx, p, "dead")
		synctest.Wait()
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, keyedpool.ErrBackoff) || !strings.Contains(err.Error(), "probe") {
			t.Errorf("Borrow during the probe = %v, want ErrBackoff saying a probe runs", err)
		}
		close(gate)
		r := <-probe
		if r.err != nil {
			t.Fatalf("probe Borrow once the backend is back = %v", r.err)
		}
		mustReturn(t, p, r.h)
		mustReturn(t, p, mustBorrow(t, p, "dead"))
		if ks := p.KeyStats("dead"); ks.MakeFailures != 0 || !ks.BackoffUntil.IsZero() || p.Stats().KeysInBackoff != 0 {
			t.Errorf("after a successful probe: KeyStats = %+v, KeysInBackoff %d; want the backoff closed", ks, p.Stats().KeysInBackoff)
		}
		if got := calls.Load(); got != 5 {
			t.Errorf("makes of the dead key = %d, want 5: 3 failures, then only the 2 probes", got)
		}
	})
}

// Min-idle upkeep does not dial a key in backoff, but tries it again once
// the period is over; the key's failures are kept while it holds nothing.
func TestMakeBackoffSpacesUpkeep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		var gate chan struct{}
		var calls atomic.Int64
		p := testfactory.NewPool(t, deadKeyFactory(&down, &gate, &calls), keyedpool.Config{
			MinIdlePerKey:        1,
			MakeFailureThreshold: 1,
			MakeBackoffBase:      time.Minute,
			MakeBackoffMax:       time.Minute,
		})
		h := mustBorrow(t, p, "dead") // the key wants one more idle object
		down.Store(true)
		if err := p.RunEviction(context.Background()); !errors.Is(err, errDial) {
			t.Fatalf("RunEviction() = %v, want the upkeep's make error", err)
		}
		if err := p.Prepare(context.Background(), "dead"); !errors.Is(err, keyedpool.ErrBackoff) {
			t.Errorf("Prepare in backoff = %v, want ErrBackoff", err)
		}
		for range 5 {
			mustRunEviction(t, p)
		}
		if got := calls.Load(); got != 2 {
			t.Errorf("makes of the dead key = %d, want 2 (the Borrow, one upkeep): no upkeep dial in backoff", got)
		}
		sleepPast(73 * time.Second) // past 1m + 20%
		if err := p.RunEviction(context.Background()); !errors.Is(err, errDial) {
			t.Errorf("RunEviction() after the backoff period = %v, want the probe's make error", err)
		}
		if got := calls.Load(); got != 3 {
			t.Errorf("makes of the dead key = %d, want 3: upkeep probes once the period ends", got)
		}
		mustReturn(t, p, h)
		if err := p.Clear(context.Background(), "dead"); err != nil {
			t.Fatal(err)
		}
		if ks := p.KeyStats("dead"); ks.MakeFailures != 2 {
			t.Errorf("KeyStats(dead).MakeFailures = %d, want 2 (kept while the key holds nothing)", ks.MakeFailures)
		}
	})
}

// ForgetFailures ends a key's backoff and drops the key when it holds
// nothing, so that a caller that knows the key is gone (an endpoint that
// left) need not wait for an eviction run.
func TestForgetFailures(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var gate chan struct{}
	var calls atomic.Int64
	p := testfactory.NewPool(t, deadKeyFactory(&down, &gate, &calls), keyedpool.Config{MakeFailureThreshold: 1, MakeBackoffBase: time.Hour, MakeBackoffMax: time.Hour})
	ctx := context.Background()
	if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, errDial) {
		t.Fatalf("Borrow = %v, want the make error", err)
	}
	if got := p.Stats(); got.Keys != 1 || got.KeysInBackoff != 1 {
		t.Fatalf("Stats() Keys = %d, KeysInBackoff = %d; want the failing key kept, in backoff", got.Keys, got.KeysInBackoff)
	}
	p.ForgetFailures("other") // no such key: nothing happens
	p.ForgetFailures("dead")
	if got := p.Stats(); got.Keys != 0 || got.KeysInBackoff != 0 {
		t.Errorf("after ForgetFailures: Keys = %d, KeysInBackoff = %d; want 0 and 0", got.Keys, got.KeysInBackoff)
	}
	if ks := p.KeyStats("dead"); ks.MakeFailures != 0 || !ks.BackoffUntil.IsZero() {
		t.Errorf("KeyStats(dead) = %+v, want no failures, no backoff", ks)
	}
	down.Store(false)
	h, err := p.Borrow(ctx, "dead")
	if err != nil {
		t.Fatalf("Borrow after ForgetFailures = %v, want a make at once", err)
	}
	p.Return(h)
	p.ForgetFailures("dead") // a key that holds objects and has no failures: kept
	if got := p.Stats().Keys; got != 1 {
		t.Errorf("Keys = %d after ForgetFailures of a healthy key, want 1", got)
	}
}

// Past the backoff period one Borrow makes the probe. A probe that finds the
// pool full, with no idle object whose room it could take, fails with
// ErrExhausted and gives the probe back: once room frees and the backend is
// up, the key makes again instead of refusing every make for ever.
func TestBackoffEndsWhenProbeFindsPoolFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		f := &testfactory.Factory{MakeHook: func(_ context.Context, key string) error {
			if key == "dead" && down.Load() {
				return errDial
			}
			return nil
		}}
		p := testfactory.NewPool(t, f, keyedpool.Config{
			MaxTotal:             1,
			WhenExhausted:        keyedpool.Fail,
			MakeFailureThreshold: 1,
			MakeBackoffBase:      time.Second,
			MakeBackoffMax:       time.Second,
		})
		ctx := context.Background()
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, errDial) {
			t.Fatalf("first Borrow(dead) = %v, want the make error", err)
		}
		other := mustBorrow(t, p, "other") // fills MaxTotal, nothing idle
		sleepPast(2 * time.Second)         // past the backoff period
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Fatalf("Borrow(dead) in a full pool = %v, want ErrExhausted", err)
		}
		down.Store(false)
		mustReturn(t, p, other) // now there is an idle object whose room can be taken
		sleepPast(time.Minute)
		_, err := p.Borrow(ctx, "dead")
		if err != nil {
			t.Errorf("Borrow(dead) 1m later, backend up, room available = %v; want an object "+
				"(the probe taken by the ErrExhausted Borrow was never given back: the key is stuck)", err)
		}
	})
}

// With MakeFailureThreshold set, a key whose one make failed (below the
// threshold, never in backoff) is still dropped once it holds nothing and
// nobody uses it: one-off keys do not grow the pool without bound.
func TestKeysWithOneFailedMakeAreDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{MakeHook: func(context.Context, string) error { return errDial }}
		p := testfactory.NewPool(t, f, keyedpool.Config{
			MakeFailureThreshold:    3,
			TimeBetweenEvictionRuns: time.Second,
		})
		for i := range 100 {
			if _, err := p.Borrow(context.Background(), fmt.Sprint("host", i)); !errors.Is(err, errDial) {
				t.Fatalf("Borrow = %v, want the make error", err)
			}
		}
		sleepPast(time.Hour)
		if s := p.Stats(); s.Keys != 0 {
			t.Errorf("Stats().Keys an hour after 100 one-off keys each failed one make = %d (KeysInBackoff %d), want 0",
				s.Keys, s.KeysInBackoff)
		}
	})
}
