package keyedpool_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// capConn is a pooled value that learns its own share cap, as a gRPC
// connection learns its server's stream limit.
type capConn struct {
	id       int64
	cap      keyedpool.ShareCap
	panicCap bool
}

func (c *capConn) ShareCap() *keyedpool.ShareCap {
	if c.panicCap {
		panic("ShareCap exploded")
	}
	return &c.cap
}

// capFactory makes capConns whose cap starts at initial (0: not known;
// negative: no cap).
type capFactory struct {
	initial           int
	caps              []int // the caps of the first len(caps) objects, in order; then initial
	panicCap          bool
	delay             time.Duration // each Make takes this long
	made, destroyed   atomic.Int64
	making, maxMaking atomic.Int64 // Makes running now, and at most
}

func (f *capFactory) Make(context.Context, string) (*capConn, error) {
	n := f.making.Add(1)
	defer f.making.Add(-1)
	for m := f.maxMaking.Load(); n > m && !f.maxMaking.CompareAndSwap(m, n); m = f.maxMaking.Load() {
	}
	time.Sleep(f.delay)
	c := &capConn{id: f.made.Add(1), panicCap: f.panicCap}
	limit := f.initial
	if i := int(c.id) - 1; i < len(f.caps) {
		limit = f.caps[i]
	}
	if limit != 0 { // 0: left not known; negative: no cap
		c.cap.Set(limit)
	}
	return c, nil
}
func (f *capFactory) Destroy(context.Context, string, *capConn) error {
	f.destroyed.Add(1)
	return nil
}
func (f *capFactory) Validate(context.Context, string, *capConn) error  { return nil }
func (f *capFactory) Activate(context.Context, string, *capConn) error  { return nil }
func (f *capFactory) Passivate(context.Context, string, *capConn) error { return nil }

func newCapPool(t *testing.T, f *capFactory, cfg keyedpool.Config) *keyedpool.Pool[string, *capConn] {
	t.Helper()
	return newPoolOf(t, f, cfg)
}

func borrowCap(t *testing.T, p *keyedpool.Pool[string, *capConn]) *keyedpool.Pooled[string, *capConn] {
	t.Helper()
	h, err := p.Borrow(context.Background(), "k")
	if err != nil {
		t.Fatalf("Borrow() = %v", err)
	}
	return h
}

// An object's own cap bounds its shares below MaxSharesPerObject: the pool
// makes another object instead of lending past it, and shows the cap.
func TestShareCapBoundsShares(t *testing.T) {
	f := &capFactory{initial: 2}
	p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 10})
	var hs []*keyedpool.Pooled[string, *capConn]
	for range 5 {
		hs = append(hs, borrowCap(t, p))
	}
	perObject := map[int64]int{}
	for _, h := range hs {
		perObject[h.Value().id]++
	}
	if len(perObject) != 3 || f.made.Load() != 3 {
		t.Errorf("5 borrows of objects capped at 2: %v over %d made, want 3 objects", perObject, f.made.Load())
	}
	for id, n := range perObject {
		if n > 2 {
			t.Errorf("object %d carries %d shares, want at most its cap 2", id, n)
		}
	}
	if got := p.KeyStats("k").ShareCap; got != 2 {
		t.Errorf("KeyStats.ShareCap = %d, want 2", got)
	}
	for _, o := range p.ListObjects("k") {
		if o.ShareCap != 2 {
			t.Errorf("ListObjects: ShareCap = %d, want 2", o.ShareCap)
		}
	}
	for _, h := range hs {
		if err := p.Return(h); err != nil {
			t.Fatal(err)
		}
	}
}

// An object that has not learned its cap (a connection not yet told by its
// server) takes the latest cap its key's objects learned, not
// MaxSharesPerObject: a new connection to a server known to allow 2 streams
// is not handed 100 RPCs to queue.
func TestShareCapUnknownTakesTheKeys(t *testing.T) {
	f := &capFactory{caps: []int{2, 0}}
	p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 2, WhenExhausted: keyedpool.Fail})
	hs := []*keyedpool.Pooled[string, *capConn]{borrowCap(t, p), borrowCap(t, p)} // A, learned 2
	hs = append(hs, borrowCap(t, p), borrowCap(t, p))                             // B, not learned
	if hs[2].Value() == hs[0].Value() || hs[3].Value() != hs[2].Value() {
		t.Fatalf("borrows 3 and 4 = objects %d, %d; want both on a second object", hs[2].Value().id, hs[3].Value().id)
	}
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("fifth Borrow() = %v, want ErrExhausted: the object that learned nothing takes the key's 2", err)
	}
	hs[2].Value().cap.Set(3) // B learns its own
	h := borrowCap(t, p)
	if h.Value() != hs[2].Value() {
		t.Errorf("Borrow() after B learned 3 = object %d, want B", h.Value().id)
	}
	for _, h := range append(hs, h) {
		mustReturnCap(t, p, h)
	}
}

// A cap that is not known, or is set back to not known, leaves
// MaxSharesPerObject alone to bound the object; one above it changes
// nothing.
func TestShareCapUnknownOrAboveMaxShares(t *testing.T) {
	for _, initial := range []int{0, 50} {
		f := &capFactory{initial: initial}
		p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
		hs := []*keyedpool.Pooled[string, *capConn]{borrowCap(t, p), borrowCap(t, p), borrowCap(t, p)}
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("cap %d: fourth Borrow() = %v, want ErrExhausted at MaxSharesPerObject 3", initial, err)
		}
		for _, h := range hs {
			if err := p.Return(h); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A cap that rises serves the borrowers waiting for room at once; one that
// falls lends no more until the shares out are under it, and cuts none.
func TestShareCapChangesWhileLent(t *testing.T) {
	f := &capFactory{initial: 1}
	p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 10, MaxTotalPerKey: 1})
	first := borrowCap(t, p)
	obj := first.Value()

	got := make(chan *keyedpool.Pooled[string, *capConn], 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			h, err := p.Borrow(context.Background(), "k")
			if err != nil {
				t.Errorf("waiting Borrow() = %v", err)
				return
			}
			got <- h
		})
	}
	waitFor(t, func() bool { return p.KeyStats("k").Waiters == 2 })
	obj.cap.Set(3)
	wg.Wait()
	close(got)
	hs := []*keyedpool.Pooled[string, *capConn]{first}
	for h := range got {
		if h.Value() != obj {
			t.Errorf("waiter got object %d, want a share of %d", h.Value().id, obj.id)
		}
		hs = append(hs, h)
	}
	if s := p.KeyStats("k"); s.SharesInUse != 3 || s.ShareCap != 3 {
		t.Errorf("after the cap rose to 3: %+v, want 3 shares, ShareCap 3", s)
	}

	obj.cap.Set(1)
	if err := p.Return(hs[0]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Borrow(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Borrow() with 2 shares out over a cap of 1 = %v, want to wait", err)
	}
	for _, h := range hs[1:] {
		if err := p.Return(h); err != nil {
			t.Errorf("Return() of a share lent before the cap fell = %v", err)
		}
	}
	mustReturnCap(t, p, borrowCap(t, p))
}

func mustReturnCap(t *testing.T, p *keyedpool.Pool[string, *capConn], h *keyedpool.Pooled[string, *capConn]) {
	t.Helper()
	if err := p.Return(h); err != nil {
		t.Fatal(err)
	}
}

// A burst of borrowers on a cold key whose objects learn a cap of 2 gets
// objects enough for all of them: once the first object has shown the
// key's cap, the rest are made together, not one at a time as if each
// could carry MaxSharesPerObject.
func TestShareCapSizesColdBurst(t *testing.T) {
	f := &capFactory{initial: 2, delay: 30 * time.Millisecond}
	p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 3, MaxWait: 5 * time.Second})
	var wg sync.WaitGroup
	hs := make(chan *keyedpool.Pooled[string, *capConn], 6)
	for range 6 {
		wg.Go(func() {
			h, err := p.Borrow(context.Background(), "k")
			if err != nil {
				t.Errorf("Borrow() = %v", err)
				return
			}
			hs <- h
		})
	}
	wg.Wait()
	close(hs)
	n := 0
	for h := range hs {
		n++
		defer mustReturnCap(t, p, h)
	}
	if n != 6 || f.made.Load() != 3 {
		t.Errorf("6 borrowers, cap 2: %d served on %d objects, want 6 on 3", n, f.made.Load())
	}
	if got := f.maxMaking.Load(); got != 2 {
		t.Errorf("at most %d makes at once, want the last 2 together", got)
	}
}

// A panic in ShareCap is contained like one in a factory method: the
// borrower gets an error wrapping ErrFactoryPanic, the object is destroyed
// and its room freed.
func TestShareCapPanicContained(t *testing.T) {
	f := &capFactory{panicCap: true}
	p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	for range 2 { // the second finds the room freed
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrFactoryPanic) {
			t.Fatalf("Borrow() = %v, want ErrFactoryPanic", err)
		}
	}
	if s := p.Stats(); s.Active != 0 || s.Making != 0 || f.destroyed.Load() != 2 {
		t.Errorf("after ShareCap panics: %+v, destroyed %d; want nothing held, 2 destroyed", s.Gauges, f.destroyed.Load())
	}
}

// Set after the object is destroyed, or on a cap no pool holds, changes
// nothing and does not block.
func TestShareCapSetAfterDestroy(t *testing.T) {
	f := &capFactory{initial: 2}
	p := newCapPool(t, f, keyedpool.Config{MaxSharesPerObject: 4})
	h := borrowCap(t, p)
	obj := h.Value()
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	obj.cap.Set(7)
	var lone keyedpool.ShareCap
	lone.Set(5)
	if lone.Load() != 5 || obj.cap.Load() != 7 {
		t.Errorf("Load() = %d, %d; want 5, 7", lone.Load(), obj.cap.Load())
	}
	lone.Set(-3)
	if lone.Load() != 0 {
		t.Errorf("Load() after Set(-3) = %d, want 0 (not known)", lone.Load())
	}
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
