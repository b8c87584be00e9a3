package keyedpool_test

// A review of the change that makes a borrower whose object fails
// activation or validation, or is past MaxLifetime, keep it (discard) until
// its next try destroys it and frees its room ahead of later borrowers, and
// of the other three fixes of that change, on other paths.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// dGates makes Validate (and Activate, with activate set) of chosen objects
// block until released, then fail. entered gets the ID of each object as
// its call blocks.
type dGates struct {
	mu      sync.Mutex
	gates   map[*testfactory.Obj]chan struct{}
	entered chan int64
}

func newDGates() *dGates {
	return &dGates{gates: map[*testfactory.Obj]chan struct{}{}, entered: make(chan int64, 64)}
}

// arm makes o's next gated call block until the returned func is called,
// then fail.
func (g *dGates) arm(o *testfactory.Obj) (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.gates[o] = ch
	g.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

func (g *dGates) hook(ctx context.Context, o *testfactory.Obj) error {
	g.mu.Lock()
	ch, ok := g.gates[o]
	delete(g.gates, o)
	g.mu.Unlock()
	if !ok {
		return nil
	}
	g.entered <- o.ID
	<-ch
	return errors.New("discard review: broken object")
}

// dQuiet checks, with nothing lent and nothing going on, that the pool's
// gauges are exact and agree with the factory.
func dQuiet(t *testing.T, p *pool, f *testfactory.Factory) {
	t.Helper()
	s := p.Stats()
	if s.Active != 0 || s.Making != 0 || s.Waiters != 0 || s.SharesInUse != 0 {
		t.Errorf("quiet pool: Stats gauges = %+v, want nothing active, making, waiting or shared", s.Gauges)
	}
	if live := f.LiveAll(); s.Idle != live {
		t.Errorf("quiet pool: Stats.Idle = %d, factory has %d alive", s.Idle, live)
	}
	if s.Created-s.Destroyed != int64(s.Idle) {
		t.Errorf("quiet pool: Created %d - Destroyed %d != Idle %d", s.Created, s.Destroyed, s.Idle)
	}
	if s.Created != f.Made.Load() || s.Destroyed != f.Destroyed.Load() {
		t.Errorf("quiet pool: Created %d, Destroyed %d; factory made %d, destroyed %d",
			s.Created, s.Destroyed, f.Made.Load(), f.Destroyed.Load())
	}
	if s.Borrowed != s.Returned {
		t.Errorf("quiet pool: Borrowed %d != Returned %d", s.Borrowed, s.Returned)
	}
	idle := 0
	for k, ks := range p.AllKeyStats() {
		idle += ks.Idle
		if ks.Active != 0 || ks.Making != 0 || ks.Waiters != 0 || ks.SharesInUse != 0 {
			t.Errorf("quiet pool: KeyStats(%q) gauges = %+v", k, ks.Gauges)
		}
		if n := f.Live(k); ks.Idle != n {
			t.Errorf("quiet pool: KeyStats(%q).Idle = %d, factory has %d alive", k, ks.Idle, n)
		}
		if ks.Borrowed != ks.Returned {
			t.Errorf("quiet pool: KeyStats(%q) Borrowed %d != Returned %d", k, ks.Borrowed, ks.Returned)
		}
	}
	if idle != s.Idle {
		t.Errorf("quiet pool: keys' Idle sum %d, Stats.Idle %d", idle, s.Idle)
	}
}

// ---------------------------------------------------------------------------
// Fairness: the tickets.

// W comes the pool-wide way (its key's lane is empty, its idle object is in
// the idle lists) and takes a ticket; Y comes after W and is lent from its
// key's lane, getting the lanes' ticket, which was issued when the lanes
// came on, before W's. Both objects fail TestOnBorrow; a SetConfig that
// lowered MaxTotal meanwhile leaves room for one of them only once both
// objects are destroyed. W's object fails first: W waits for room. Then
// Y's fails: the room it frees goes "to that borrower before them (to
// borrowers that came before it and wait for room, first)" - W came before
// Y and waits for room, so the room is W's, not Y's.
func TestDiscardReviewLaneTicketJumpsEarlierPoolWideBorrower(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		g := newDGates()
		f := &testfactory.Factory{ValidateHook: g.hook}
		cfg := keyedpool.Config{MaxTotal: 4, TestOnBorrow: true}
		p := testfactory.NewPool(t, f, cfg)

		hb := mustBorrow(t, p, "b")
		mustReturn(t, p, hb) // onto b's lane
		// SetConfig flushes the lanes (b's object goes into the idle lists)
		// and they come on again, with a new ticket.
		if err := p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		ha := mustBorrow(t, p, "a")
		mustReturn(t, p, ha) // onto a's lane
		relW, relY := g.arm(hb.Value()), g.arm(ha.Value())
		defer relW()
		defer relY()

		w := borrowAsync(ctx, p, "b") // pool-wide: takes a ticket
		<-g.entered
		y := borrowAsync(ctx, p, "a") // from a's lane, after W
		<-g.entered

		low := cfg
		low.MaxTotal = 1
		if err := p.SetConfig(low); err != nil {
			t.Fatal(err)
		}
		relW()
		synctest.Wait()
		if _, waiting := pending(w); !waiting || p.Stats().Waiters != 1 {
			t.Fatalf("W after its object failed: waiting %v, Stats %+v; want W waiting for room", waiting, p.Stats().Gauges)
		}
		relY()
		synctest.Wait()
		rw, wWaiting := pending(w)
		ry, yWaiting := pending(y)
		if wWaiting || !yWaiting {
			t.Errorf("after both objects failed: W (came first) waiting %v, Y (came after W) waiting %v; want W served and Y waiting", wWaiting, yWaiting)
		}
		// Clean up: whoever got the room gives it back, the other gets it.
		for _, r := range []struct {
			r       result
			waiting bool
		}{{rw, wWaiting}, {ry, yWaiting}} {
			if !r.waiting {
				if r.r.err != nil {
					t.Fatalf("Borrow() = %v", r.r.err)
				}
				mustReturn(t, p, r.r.h)
			}
		}
		for _, r := range []struct {
			ch      <-chan result
			waiting bool
		}{{w, wWaiting}, {y, yWaiting}} {
			if r.waiting {
				rr := <-r.ch
				if rr.err != nil {
					t.Fatalf("Borrow() = %v", rr.err)
				}
				mustReturn(t, p, rr.h)
			}
		}
		dQuiet(t, p, f)
	})
}

// Two borrowers lent from lanes of the same spell get the same ticket. Y1
// is lent first, Y2 after; both objects fail, and with the room cut by
// SetConfig both must wait again. Y1 came first, so the room that frees
// next is Y1's. Two ways: Y2's own discard frees the room (different
// keys), or both wait and a third object's room frees (same key: Y2 is
// queued ahead of Y1 since their tickets are equal).
func TestDiscardReviewLaneBorrowersOfOneSpellKeepTheirOrder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		k1, k2 string
		third  bool
	}{
		{"other keys, own room", "a", "c", false},
		{"same key, third room", "a", "a", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				g := newDGates()
				f := &testfactory.Factory{ValidateHook: g.hook}
				cfg := keyedpool.Config{MaxTotal: 8, TestOnBorrow: true}
				p := testfactory.NewPool(t, f, cfg)
				var z *handle
				if tc.third {
					z = mustBorrow(t, p, "z")
				}
				h1 := mustBorrow(t, p, tc.k1)
				h2 := mustBorrow(t, p, tc.k2)
				mustReturn(t, p, h2) // onto the lanes; LIFO: h1 is lent first
				mustReturn(t, p, h1)
				rel1, rel2 := g.arm(h1.Value()), g.arm(h2.Value())
				defer rel1()
				defer rel2()
				y1 := borrowAsync(ctx, p, tc.k1)
				if id := <-g.entered; id != h1.Value().ID {
					t.Fatalf("Y1 lent object %d, want %d", id, h1.Value().ID)
				}
				y2 := borrowAsync(ctx, p, tc.k2)
				<-g.entered
				low := cfg
				low.MaxTotal = 1
				if err := p.SetConfig(low); err != nil {
					t.Fatal(err)
				}
				rel1()
				synctest.Wait()
				rel2()
				synctest.Wait()
				if z != nil {
					if _, w1 := pending(y1); !w1 {
						t.Fatal("Y1 served over MaxTotal")
					}
					mustReturn(t, p, z) // its room: to the first in line
					synctest.Wait()
				}
				r1, w1 := pending(y1)
				r2, w2 := pending(y2)
				if w1 || !w2 {
					t.Errorf("Y1 (lent first) waiting %v, Y2 (lent after Y1) waiting %v; want Y1 served, Y2 waiting", w1, w2)
				}
				for _, x := range []struct {
					r result
					w bool
				}{{r1, w1}, {r2, w2}} {
					if !x.w {
						if x.r.err != nil {
							t.Fatalf("Borrow() = %v", x.r.err)
						}
						mustReturn(t, p, x.r.h)
					}
				}
				for _, x := range []struct {
					ch <-chan result
					w  bool
				}{{y1, w1}, {y2, w2}} {
					if x.w {
						r := <-x.ch
						if r.err != nil {
							t.Fatalf("Borrow() = %v", r.err)
						}
						mustReturn(t, p, r.h)
					}
				}
				dQuiet(t, p, f)
			})
		})
	}
}

// With RemoveOnBorrow, Y's next try, finding no room for itself (a
// SetConfig lowered MaxTotalPerKey while its object was being validated),
// sweeps abandoned leases. The room the sweep frees must not go to W, who
// came after Y: Y "keeps its place in line ahead of everyone who came after
// it". borrowSlow unlocks before it sweeps and comes back only after the
// invalidations dispatched the room to the waiters, W among them, while Y
// is in no line.
func TestDiscardReviewAbandonedSweepKeepsPlaceInLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		g := newDGates()
		f := &testfactory.Factory{ValidateHook: g.hook}
		ab := &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: time.Second}
		cfg := keyedpool.Config{MaxTotalPerKey: 2, TestOnBorrow: true, Abandoned: ab}
		p := testfactory.NewPool(t, f, cfg)

		leaked := mustBorrow(t, p, "k") // never used again: abandoned after 1s
		_ = leaked
		h := mustBorrow(t, p, "k")
		mustReturn(t, p, h)
		rel := g.arm(h.Value())
		defer rel()
		y := borrowAsync(ctx, p, "k") // lent h's object, validates it
		<-g.entered
		w := borrowAsync(ctx, p, "k") // sweeps (nothing yet), waits
		synctest.Wait()
		if p.Stats().Waiters != 1 {
			t.Fatalf("Stats = %+v, want W waiting", p.Stats().Gauges)
		}
		time.Sleep(2 * time.Second) // the leaked lease is abandoned now
		low := cfg
		low.MaxTotalPerKey = 1
		if err := p.SetConfig(low); err != nil {
			t.Fatal(err)
		}
		rel()
		synctest.Wait()
		ry, yw := pending(y)
		rw, ww := pending(w)
		if yw || !ww {
			t.Errorf("Y (came first, its object failed) waiting %v, W (came after Y) waiting %v; want Y served, W waiting", yw, ww)
		}
		if got := p.Stats().DestroyedByAbandoned; got != 1 {
			t.Errorf("DestroyedByAbandoned = %d, want 1", got)
		}
		for _, x := range []struct {
			r result
			w bool
		}{{ry, yw}, {rw, ww}} {
			if !x.w {
				if x.r.err != nil {
					t.Fatalf("Borrow() = %v", x.r.err)
				}
				mustReturn(t, p, x.r.h)
			}
		}
		for _, x := range []struct {
			ch <-chan result
			w  bool
		}{{y, yw}, {w, ww}} {
			if x.w {
				r := <-x.ch
				if r.err != nil {
					t.Fatalf("Borrow() = %v", r.err)
				}
				mustReturn(t, p, r.h)
			}
		}
		dQuiet(t, p, f)
	})
}

// ---------------------------------------------------------------------------
// Counts and room around a pending discard.

// Close comes while Y's next try destroys its failed object (Destroy
// blocks): W, waiting, gets ErrClosed at once; Close waits for the destroy;
// then Y gets ErrClosed, Close returns nil, and every count is exact.
func TestDiscardReviewCloseDuringDiscardDestroy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		g := newDGates()
		destroying, letDestroy := make(chan struct{}), make(chan struct{})
		var bad atomic.Pointer[testfactory.Obj]
		f := &testfactory.Factory{ValidateHook: g.hook, DestroyHook: func(ctx context.Context, o *testfactory.Obj) error {
			if o == bad.Load() {
				close(destroying)
				<-letDestroy
			}
			return nil
		}}
		p, err := keyedpool.New(f, keyedpool.Config{MaxTotalPerKey: 1, TestOnBorrow: true})
		if err != nil {
			t.Fatal(err)
		}
		h := mustBorrow(t, p, "k")
		mustReturn(t, p, h)
		bad.Store(h.Value())
		rel := g.arm(h.Value())
		y := borrowAsync(ctx, p, "k")
		<-g.entered
		w := borrowAsync(ctx, p, "k")
		synctest.Wait()
		rel()
		<-destroying
		closed := make(chan error, 1)
		go func() { closed <- p.Close(ctx) }()
		synctest.Wait()
		if rw, waiting := pending(w); waiting || !errors.Is(rw.err, keyedpool.ErrClosed) {
			t.Errorf("W after Close: waiting %v, err %v; want ErrClosed", waiting, rw.err)
		}
		select {
		case err := <-closed:
			t.Fatalf("Close() = %v before the failed object's destroy ended", err)
		default:
		}
		close(letDestroy)
		synctest.Wait()
		ry, waiting := pending(y)
		if waiting || !errors.Is(ry.err, keyedpool.ErrClosed) {
			t.Errorf("Y after Close: waiting %v, err %v; want ErrClosed", waiting, ry.err)
		}
		if err := <-closed; err != nil {
			t.Errorf("Close() = %v", err)
		}
		s := p.Stats()
		if s.Active != 0 || s.Idle != 0 || s.Making != 0 || s.Waiters != 0 {
			t.Errorf("closed pool: gauges %+v", s.Gauges)
		}
		if s.Created != 1 || s.Destroyed != 1 || s.DestroyedByBorrowValidation != 1 || f.LiveAll() != 0 {
			t.Errorf("closed pool: Created %d Destroyed %d ByBorrowValidation %d, live %d; want 1, 1, 1, 0",
				s.Created, s.Destroyed, s.DestroyedByBorrowValidation, f.LiveAll())
		}
		if s.Borrowed != s.Returned {
			t.Errorf("Borrowed %d != Returned %d", s.Borrowed, s.Returned)
		}
		if err := f.Problems(); err != nil {
			t.Error(err)
		}
	})
}

// Y's ctx ends, or its MaxWait passes, while its next try destroys its
// failed object: Y gets ctx.Err() / ErrExhausted, the room goes to W, who
// waits after it, and the counts are exact.
func TestDiscardReviewGiveUpDuringDiscardDestroy(t *testing.T) {
	for _, how := range []string{"ctx", "MaxWait"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newDGates()
				destroying, letDestroy := make(chan struct{}), make(chan struct{})
				var bad atomic.Pointer[testfactory.Obj]
				f := &testfactory.Factory{ValidateHook: g.hook, DestroyHook: func(ctx context.Context, o *testfactory.Obj) error {
					if o == bad.Load() {
						close(destroying)
						<-letDestroy
					}
					return nil
				}}
				cfg := keyedpool.Config{MaxTotalPerKey: 1, TestOnBorrow: true}
				if how == "MaxWait" {
					cfg.MaxWait = time.Second
				}
				p := testfactory.NewPool(t, f, cfg)
				h := mustBorrow(t, p, "k")
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				y := borrowAsync(ctx, p, "k") // waits: its MaxWait starts
				synctest.Wait()
				bad.Store(h.Value())
				rel := g.arm(h.Value())
				mustReturn(t, p, h) // to Y, who validates it
				<-g.entered
				rel()
				<-destroying
				want := keyedpool.ErrExhausted
				if how == "ctx" {
					cancel()
					want = nil
				} else {
					time.Sleep(2 * time.Second)
				}
				// W comes after Y, while Y's object is being destroyed.
				w := borrowAsync(context.Background(), p, "k")
				synctest.Wait()
				close(letDestroy)
				synctest.Wait()
				ry, yw := pending(y)
				if yw || (want != nil && !errors.Is(ry.err, want)) || (want == nil && !errors.Is(ry.err, context.Canceled)) {
					t.Errorf("Y: waiting %v, err %v; want it to give up", yw, ry.err)
				}
				if ry.h != nil {
					mustReturn(t, p, ry.h)
				}
				synctest.Wait()
				rw, ww := pending(w)
				if ww || rw.err != nil {
					t.Fatalf("W after Y gave up: waiting %v, err %v; want it served", ww, rw.err)
				}
				mustReturn(t, p, rw.h)
				synctest.Wait()
				dQuiet(t, p, f)
				if got := p.Stats().DestroyedByBorrowValidation; got != 1 {
					t.Errorf("DestroyedByBorrowValidation = %d, want 1", got)
				}
				if f.MaxLive("k") > 1 {
					t.Errorf("MaxLive(k) = %d, over MaxTotalPerKey 1", f.MaxLive("k"))
				}
			})
		})
	}
}

// With WhenExhausted Fail, a borrower coming while Y's failed object is
// pending fails with ErrExhausted (the room is still counted), Y gets the
// room, and the counts are exact.
func TestDiscardReviewFailModeDiscard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		g := newDGates()
		f := &testfactory.Factory{ValidateHook: g.hook}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 1, TestOnBorrow: true, WhenExhausted: keyedpool.Fail})
		h := mustBorrow(t, p, "k")
		mustReturn(t, p, h)
		rel := g.arm(h.Value())
		y := borrowAsync(ctx, p, "k")
		<-g.entered
		if _, err := p.Borrow(ctx, "k"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("Borrow while the only object is validated = %v, want ErrExhausted", err)
		}
		rel()
		ry := <-y
		if ry.err != nil {
			t.Fatalf("Y's Borrow() = %v", ry.err)
		}
		if _, err := p.Borrow(ctx, "k"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("Borrow while Y holds the only object = %v, want ErrExhausted", err)
		}
		mustReturn(t, p, ry.h)
		dQuiet(t, p, f)
		s := p.Stats()
		if s.Created != 2 || s.DestroyedByBorrowValidation != 1 {
			t.Errorf("Created %d, DestroyedByBorrowValidation %d; want 2, 1", s.Created, s.DestroyedByBorrowValidation)
		}
	})
}

// The failed object's Destroy panics, or blocks until FactoryTimeout: the
// borrower still gets the room, the error is swallowed and counted, and
// the counts are exact.
func TestDiscardReviewDestroyPanicsOrTimesOut(t *testing.T) {
	for _, how := range []string{"panic", "timeout"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				g := newDGates()
				var bad atomic.Pointer[testfactory.Obj]
				f := &testfactory.Factory{ValidateHook: g.hook, DestroyHook: func(ctx context.Context, o *testfactory.Obj) error {
					if o != bad.Load() {
						return nil
					}
					if how == "panic" {
						panic("discard review: Destroy")
					}
					<-ctx.Done()
					return ctx.Err()
				}}
				var swallowed atomic.Int64
				cfg := keyedpool.Config{MaxTotalPerKey: 1, TestOnBorrow: true, FactoryTimeout: time.Second,
					SwallowedErrorListener: keyedpool.SwallowedErrorFunc(func(key any, op keyedpool.Op, err error) { swallowed.Add(1) })}
				p := testfactory.NewPool(t, f, cfg)
				h := mustBorrow(t, p, "k")
				mustReturn(t, p, h)
				bad.Store(h.Value())
				rel := g.arm(h.Value())
				y := borrowAsync(ctx, p, "k")
				<-g.entered
				w := borrowAsync(ctx, p, "k")
				synctest.Wait()
				rel()
				ry := <-y
				if ry.err != nil {
					t.Fatalf("Y's Borrow() = %v", ry.err)
				}
				synctest.Wait()
				if _, ww := pending(w); !ww {
					t.Error("W, who came after Y, served while Y holds the only room")
				}
				mustReturn(t, p, ry.h)
				rw := <-w
				if rw.err != nil {
					t.Fatalf("W's Borrow() = %v", rw.err)
				}
				mustReturn(t, p, rw.h)
				dQuiet(t, p, f)
				s := p.Stats()
				if s.DestroyedByBorrowValidation != 1 || s.BackgroundErrors.Of(keyedpool.OpDestroy) != 1 || swallowed.Load() != 1 {
					t.Errorf("DestroyedByBorrowValidation %d, BackgroundErrors[Destroy] %d, swallowed %d; want 1 each",
						s.DestroyedByBorrowValidation, s.BackgroundErrors.Of(keyedpool.OpDestroy), swallowed.Load())
				}
			})
		})
	}
}

// Shared leases: Y is lent an idle object (activation is Y's); S comes
// while it is being validated and waits for a share of it ("soon", even
// with Fail). The object fails: Y's next try takes the room (S came after
// it), makes an object, and S gets a share of it. Counts exact after.
func TestDiscardReviewSharedSoonWaiterAfterDiscard(t *testing.T) {
	for _, mode := range []keyedpool.ExhaustedAction{keyedpool.Block, keyedpool.Fail} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				g := newDGates()
				f := &testfactory.Factory{ValidateHook: g.hook}
				p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 1, MaxTotal: 2,
					TestOnBorrow: true, WhenExhausted: mode})
				h := mustBorrow(t, p, "k")
				mustReturn(t, p, h)
				rel := g.arm(h.Value())
				y := borrowAsync(ctx, p, "k")
				<-g.entered
				s := borrowAsync(ctx, p, "k")
				synctest.Wait()
				if _, sw := pending(s); !sw {
					t.Fatal("S did not wait for a share of the object being activated")
				}
				rel()
				synctest.Wait()
				ry, yw := pending(y)
				rs, sw := pending(s)
				if yw || sw || ry.err != nil || rs.err != nil {
					t.Fatalf("Y waiting %v err %v; S waiting %v err %v; want both served", yw, ry.err, sw, rs.err)
				}
				if ry.h.Value() != rs.h.Value() {
					t.Errorf("Y has object %d, S object %d: want shares of one", ry.h.Value().ID, rs.h.Value().ID)
				}
				if f.MaxLive("k") > 1 {
					t.Errorf("MaxLive(k) = %d, over MaxTotalPerKey 1", f.MaxLive("k"))
				}
				mustReturn(t, p, ry.h)
				mustReturn(t, p, rs.h)
				dQuiet(t, p, f)
			})
		})
	}
}

// SetConfig lowers MaxTotalPerKey from 2 to 1 while the key holds a lent
// shared object (at its cap) and Y's failed object, whose destroy is under
// way. The failed object is already going: once it is gone the key holds
// one object, which is within the new limit, so SetConfig must not retire
// the lent one ("lent objects over the limit stop taking new leases"; the
// idle objects SetConfig dooms itself count as part of what goes, see
// TestLoweredLimitRetiresOnlyWhatIsOver). When one of its shares comes
// back, Y gets it.
func TestDiscardReviewLoweredLimitCountsPendingDiscardAsGoing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		var keep, bad atomic.Pointer[testfactory.Obj]
		entered, fail := make(chan struct{}), make(chan struct{})
		destroying, letDestroy := make(chan struct{}), make(chan struct{})
		f := &testfactory.Factory{
			ValidateHook: func(ctx context.Context, o *testfactory.Obj) error {
				if k := keep.Load(); k == nil || k == o || !bad.CompareAndSwap(nil, o) {
					return nil
				}
				close(entered)
				<-fail
				return errors.New("discard review: broken object")
			},
			DestroyHook: func(ctx context.Context, o *testfactory.Obj) error {
				if o == bad.Load() {
					close(destroying)
					<-letDestroy
				}
				return nil
			},
		}
		cfg := keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 2, TestOnBorrow: true}
		p := testfactory.NewPool(t, f, cfg)
		a1, a2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k") // one object, at its cap
		if a1.Value() != a2.Value() {
			t.Fatalf("two objects for two borrowers, want shares of one")
		}
		keep.Store(a1.Value())
		if err := p.AddObject(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		y := borrowAsync(ctx, p, "k") // lent the idle object, which fails
		<-entered
		close(fail)
		<-destroying
		low := cfg
		low.MaxTotalPerKey = 1
		if err := p.SetConfig(low); err != nil {
			t.Fatal(err)
		}
		var states []keyedpool.ObjectState
		for _, o := range p.ListObjects("k") {
			states = append(states, o.State)
		}
		close(letDestroy)
		synctest.Wait()
		if len(states) != 2 || states[0] != keyedpool.ObjectLent {
			t.Errorf("after SetConfig, objects %v; want the lent one still lent (the other is being destroyed)", states)
		}
		mustReturn(t, p, a1)
		synctest.Wait()
		ry, yw := pending(y)
		if yw {
			t.Errorf("Y still waits after a share of the key's one object came back; objects %v", fmtObjs(p.ListObjects("k")))
		} else if ry.err != nil {
			t.Errorf("Y's Borrow() = %v", ry.err)
		} else {
			mustReturn(t, p, ry.h)
		}
		mustReturn(t, p, a2)
		if yw {
			ry = <-y
			if ry.err != nil {
				t.Fatalf("Y's Borrow() = %v", ry.err)
			}
			mustReturn(t, p, ry.h)
		}
		dQuiet(t, p, f)
	})
}

// MinIdlePerKey upkeep while a failed object is pending: the key is at
// MaxTotalPerKey until the discard settles, and a run finds no room; once
// it settles and its borrower has made its object, the next run makes up
// the idle object within the limits. Counts exact, limits never exceeded.
func TestDiscardReviewUpkeepAroundDiscard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		g := newDGates()
		f := &testfactory.Factory{ValidateHook: g.hook}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 2, MinIdlePerKey: 1, TestOnBorrow: true})
		if err := p.Prepare(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		a := mustBorrow(t, p, "k")
		mustReturn(t, p, a)
		b := mustBorrow(t, p, "k")
		rel := g.arm(b.Value())
		mustReturn(t, p, b)
		y := borrowAsync(ctx, p, "k")
		<-g.entered
		if err := p.RunEviction(ctx); err != nil {
			t.Fatalf("RunEviction() = %v", err)
		}
		rel()
		ry := <-y
		if ry.err != nil {
			t.Fatalf("Y's Borrow() = %v", ry.err)
		}
		if err := p.RunEviction(ctx); err != nil {
			t.Fatalf("RunEviction() = %v", err)
		}
		synctest.Wait()
		if f.MaxLive("k") > 2 {
			t.Errorf("MaxLive(k) = %d, over MaxTotalPerKey 2", f.MaxLive("k"))
		}
		if ks := p.KeyStats("k"); ks.Idle != 1 || ks.Active != 1 {
			t.Errorf("KeyStats(k) = %+v, want 1 idle (MinIdlePerKey) and Y's", ks.Gauges)
		}
		mustReturn(t, p, ry.h)
		dQuiet(t, p, f)
	})
}

// ---------------------------------------------------------------------------
// Idle order: paths that put an object back.

// "Eviction runs ... look at NumTestsPerEvictionRun idle objects, going on
// where the last run stopped in its list of idle objects (oldest first,
// all keys together). A run therefore visits every idle object in turn."
// Idle objects of keys a, b, c, in that order; a run with one test looks at
// a's and stops before b's. A borrower of b is lent b's object and gives
// up during activation: the object goes back to its place, between a's and
// c's, as if never taken ("at its old place in the idle order"). The next
// run must look at b's, where the last one stopped, not skip it for c's
// (unidleLocked moved the cursor past it, and putLocked's unused path
// does not move it back, as mergeIdleLocked does for lane objects).
func TestDiscardReviewGaveUpObjectKeepsEvictionTurn(t *testing.T) {
	var mu sync.Mutex
	var looked []string
	policy := evictor.PolicyFunc(func(s evictor.Settings, c evictor.Candidate) bool {
		mu.Lock()
		looked = append(looked, fmt.Sprint(c.Key))
		mu.Unlock()
		return false
	})
	ctx := context.Background()
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{NumTestsPerEvictionRun: 1, EvictionPolicy: policy})
	ha, hb, hc := mustBorrow(t, p, "a"), mustBorrow(t, p, "b"), mustBorrow(t, p, "c")
	mustReturn(t, p, ha)
	mustReturn(t, p, hb)
	mustReturn(t, p, hc)
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The hook is set while nothing runs in the pool: b's borrower gives
	// up during its activation.
	f.ActivateHook = func(ctx context.Context, o *testfactory.Obj) error {
		if o.Key != "b" {
			return nil
		}
		cancel()
		return ctx.Err()
	}
	if _, err := p.Borrow(bctx, "b"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Borrow(b) = %v, want context.Canceled", err)
	}
	f.ActivateHook = nil
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a", "b", "c"}; fmt.Sprint(looked) != fmt.Sprint(want) {
		t.Errorf("runs looked at %v, want %v: b's object, given back unused to its place, lost its turn", looked, want)
	}
	if s := p.Stats(); s.Idle != 3 {
		t.Errorf("Idle = %d, want 3", s.Idle)
	}
}

// Per-lend state: an object handed to a borrower that gives up during its
// activation goes back unused: its lease is not counted (BorrowCount stays)
// and its idle span is taken back, so its LastBorrowed, "when it was last
// lent", must stay that of its last counted lease, not move to the lend
// that was undone.
func TestDiscardReviewGaveUpLendLeavesLastBorrowed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &testfactory.Factory{}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		if err := p.RunEviction(ctx); err != nil { // the clock runs from now on
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		mustReturn(t, p, mustBorrow(t, p, "k"))
		before := p.ListObjects("k")
		time.Sleep(10 * time.Second)
		bctx, cancel := context.WithCancel(ctx)
		defer cancel()
		f.ActivateHook = func(ctx context.Context, o *testfactory.Obj) error {
			cancel()
			return ctx.Err()
		}
		if _, err := p.Borrow(bctx, "k"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Borrow() = %v, want context.Canceled", err)
		}
		f.ActivateHook = nil
		after := p.ListObjects("k")
		if len(before) != 1 || len(after) != 1 {
			t.Fatalf("objects before %d, after %d; want 1", len(before), len(after))
		}
		if after[0].BorrowCount != before[0].BorrowCount {
			t.Errorf("BorrowCount %d -> %d for a lend that was undone", before[0].BorrowCount, after[0].BorrowCount)
		}
		if !after[0].LastBorrowed.Equal(before[0].LastBorrowed) {
			t.Errorf("LastBorrowed moved from %v to %v (BorrowCount %d unchanged): it shows a lend that was undone",
				before[0].LastBorrowed, after[0].LastBorrowed, after[0].BorrowCount)
		}
	})
}

// ---------------------------------------------------------------------------
// Stress: borrowers of several keys, lanes on and off, objects failing
// activation and validation and growing past MaxLifetime at random, some
// borrowers giving up, eviction runs racing. The limits hold at every
// instant (counted in the factory), and once everything is back the counts
// are exact; Close ends, and every object is destroyed once.
func TestDiscardReviewStress(t *testing.T) {
	for _, shares := range []int{1, 3} {
		for _, fifo := range []bool{false, true} {
			t.Run(fmt.Sprintf("shares=%d/fifo=%v", shares, fifo), func(t *testing.T) {
				var failing atomic.Bool
				failing.Store(true)
				maybe := func(ctx context.Context, o *testfactory.Obj) error {
					if failing.Load() && rand.IntN(100) < 15 {
						if rand.IntN(4) == 0 {
							time.Sleep(50 * time.Microsecond)
						}
						return errors.New("discard review: random failure")
					}
					return nil
				}
				f := &testfactory.Factory{ValidateHook: maybe, ActivateHook: maybe}
				cfg := keyedpool.Config{MaxTotal: 5, MaxTotalPerKey: 3, MaxSharesPerObject: shares, TestOnBorrow: true,
					FIFO: fifo, MaxLifetime: 5 * time.Millisecond, MinIdlePerKey: 1, MaxWait: 200 * time.Millisecond}
				p, err := keyedpool.New(f, cfg)
				if err != nil {
					t.Fatal(err)
				}
				keys := []string{"a", "b", "c", "d"}
				stop := time.Now().Add(400 * time.Millisecond)
				var wg sync.WaitGroup
				for i := range 8 {
					wg.Go(func() {
						for time.Now().Before(stop) {
							ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(3000))*time.Microsecond)
							if i%2 == 0 {
								cancel()
								ctx, cancel = context.WithCancel(context.Background())
							}
							h, err := p.Borrow(ctx, keys[rand.IntN(len(keys))])
							cancel()
							if err != nil {
								continue
							}
							time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
							if rand.IntN(10) == 0 {
								_ = p.Invalidate(h)
							} else {
								_ = p.Return(h)
							}
						}
					})
				}
				wg.Go(func() {
					for time.Now().Before(stop) {
						_ = p.RunEviction(context.Background())
						_ = p.Stats()
						time.Sleep(time.Millisecond)
					}
				})
				wg.Go(func() {
					// SetConfig churn within the limits checked below: lower
					// and raise MaxTotal, flip FIFO, TestOnBorrow and lanes
					// (Abandoned turns them off).
					for i := 0; time.Now().Before(stop); i++ {
						c := cfg
						if i%2 == 1 {
							c.MaxTotal, c.MaxTotalPerKey = 3, 2
							c.FIFO = !c.FIFO
						}
						if i%3 == 1 {
							c.Abandoned = &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: time.Millisecond}
						}
						if err := p.SetConfig(c); err != nil {
							t.Errorf("SetConfig() = %v", err)
							return
						}
						time.Sleep(2 * time.Millisecond)
					}
					_ = p.SetConfig(cfg)
				})
				wg.Wait()
				failing.Store(false)
				if n := f.MaxLiveAll(); n > cfg.MaxTotal {
					t.Errorf("MaxLiveAll = %d, over MaxTotal %d", n, cfg.MaxTotal)
				}
				if n := f.MaxLivePerKey(); n > cfg.MaxTotalPerKey {
					t.Errorf("MaxLivePerKey = %d, over MaxTotalPerKey %d", n, cfg.MaxTotalPerKey)
				}
				// Let background passivations of given-up makes end.
				for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if s := p.Stats(); s.Making == 0 && s.Active == 0 {
						break
					}
				}
				dQuiet(t, p, f)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := p.Close(ctx); err != nil {
					t.Errorf("Close() = %v", err)
				}
				if m, d := f.Made.Load(), f.Destroyed.Load(); m != d {
					t.Errorf("after Close: made %d, destroyed %d", m, d)
				}
				if err := f.Problems(); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// Across keys with MaxTotal the limit: Y (key a) is lent an object, from
// its key's lane or the pool-wide way, that fails TestOnBorrow; W (key b)
// came after Y and waits for room. The room Y's object frees is Y's; W
// gets the next room (Y's object back: destroyed as W's victim).
func TestDiscardReviewAcrossKeysUnderMaxTotal(t *testing.T) {
	for _, lane := range []bool{false, true} {
		t.Run(fmt.Sprintf("lane=%v", lane), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				g := newDGates()
				f := &testfactory.Factory{ValidateHook: g.hook}
				cfg := keyedpool.Config{MaxTotal: 2, TestOnBorrow: true}
				if !lane {
					cfg.Abandoned = &keyedpool.AbandonedConfig{Timeout: time.Hour} // no lanes
				}
				p := testfactory.NewPool(t, f, cfg)
				h := mustBorrow(t, p, "a")
				mustReturn(t, p, h)
				rel := g.arm(h.Value())
				defer rel()
				y := borrowAsync(ctx, p, "a")
				<-g.entered
				z := mustBorrow(t, p, "c") // the pool is full
				w := borrowAsync(ctx, p, "b")
				synctest.Wait()
				if p.Stats().Waiters != 1 {
					t.Fatalf("Stats %+v, want W waiting", p.Stats().Gauges)
				}
				rel()
				synctest.Wait()
				ry, yw := pending(y)
				_, ww := pending(w)
				if yw || ry.err != nil || !ww {
					t.Fatalf("Y waiting %v err %v, W waiting %v; want Y served, W waiting", yw, ry.err, ww)
				}
				mustReturn(t, p, ry.h)
				rw := <-w
				if rw.err != nil {
					t.Fatalf("W's Borrow() = %v", rw.err)
				}
				mustReturn(t, p, rw.h)
				mustReturn(t, p, z)
				if n := f.MaxLiveAll(); n > 2 {
					t.Errorf("MaxLiveAll = %d, over MaxTotal 2", n)
				}
				dQuiet(t, p, f)
			})
		})
	}
}

// The same for MaxTotal and idle objects: SetConfig lowers MaxTotal from 3
// to 2 while the pool holds Y's failed object (being destroyed) and two
// idle objects. Once the failed object is gone the pool holds two, within
// the new limit: "idle objects over the new limits are destroyed at once",
// and none is over, so both stay (Y takes one of them).
func TestDiscardReviewLoweredMaxTotalKeepsIdleForPendingDiscard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		g := newDGates()
		destroying, letDestroy := make(chan struct{}), make(chan struct{})
		var bad atomic.Pointer[testfactory.Obj]
		f := &testfactory.Factory{ValidateHook: g.hook, DestroyHook: func(ctx context.Context, o *testfactory.Obj) error {
			if o == bad.Load() {
				close(destroying)
				<-letDestroy
			}
			return nil
		}}
		cfg := keyedpool.Config{MaxTotal: 3, TestOnBorrow: true}
		p := testfactory.NewPool(t, f, cfg)
		hs := []*handle{mustBorrow(t, p, "k"), mustBorrow(t, p, "k"), mustBorrow(t, p, "k")}
		for _, h := range hs {
			mustReturn(t, p, h)
		}
		// LIFO: the last returned is lent first.
		bad.Store(hs[2].Value())
		rel := g.arm(hs[2].Value())
		y := borrowAsync(ctx, p, "k")
		<-g.entered
		rel()
		<-destroying
		low := cfg
		low.MaxTotal = 2
		if err := p.SetConfig(low); err != nil {
			t.Fatal(err)
		}
		close(letDestroy)
		ry := <-y
		if ry.err != nil {
			t.Fatalf("Y's Borrow() = %v", ry.err)
		}
		synctest.Wait()
		if live, s := f.LiveAll(), p.Stats(); live != 2 || s.DestroyedSurplus != 0 {
			t.Errorf("after SetConfig: %d objects alive, DestroyedSurplus %d; want 2 (Y's and one idle), 0 surplus",
				live, s.DestroyedSurplus)
		}
		mustReturn(t, p, ry.h)
		dQuiet(t, p, f)
	})
}
