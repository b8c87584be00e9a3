package keyedpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/ilist"
)

// Pool is a keyed object pool. Make one with New; the zero Pool is not
// usable. All methods are safe for concurrent use.
type Pool[K comparable, V any] struct {
	f       safeFactory[K, V]
	shared  bool // MaxSharesPerObject > 1; fixed at New
	oddKeys bool // K can hold keys that need checkKey; fixed at New

	// isClosed mirrors closed, readable without the lock: a Borrow checks
	// it last, so that nothing is lent once Close has begun.
	isClosed atomic.Bool

	// closeCtx ends when Close is called; it cancels makes in flight.
	closeCtx   context.Context
	closeMakes context.CancelFunc
	// drained is closed once the pool is closed, holds no object and runs
	// no eviction.
	drained chan struct{}

	cfg atomic.Pointer[Config] // read without the lock; stored under mu

	// The pool's clock, in nanoseconds since epoch; see clock.go. Stored
	// under mu, read without it.
	epoch    time.Time
	clock    atomic.Int64 // stamp for objects and leases: the evictor's next tick
	lastTick atomic.Int64 // the evictor's last tick, or the start of the last run

	mu         sync.Mutex // protects the fields below. Nothing slow runs under it: no factory call, no I/O, no blocking send.
	lim        limits
	closed     bool
	isDrained  bool
	c          counters // pool-wide totals
	keys       map[K]*subPool[K, V]
	total      int                      // objects of all keys: idle, lent, being made or destroyed
	victims    int                      // of total: idle objects being destroyed whose room a reservation took
	retiring   int                      // of total: shared objects destroyed when their last lease comes back
	making     int                      // objects being made, all keys
	shares     int                      // leases out, all keys
	idle       ilist.List[object[K, V]] // idle objects of all keys, oldest first
	lent       ilist.List[object[K, V]] // shared mode with MaxLifetime: the objects in sub.lents, for the eviction run's lifetime sweep
	waiters    ilist.List[waiter[K, V]] // blocked borrowers of all keys, first come first
	freeWaiter *waiter[K, V]            // waiters for reuse, linked by next

	reg         *evictor.Registration        // the evictor's schedule of this pool, or nil
	handClock   bool                         // no evictor, and RunEviction was called: stamp from the real clock
	clears      uint32                       // ClearAlls, so that an object under test learns of them
	tickets     uint64                       // waiters queued so far: a waiter's place in line
	idleSeqs    uint64                       // objects put in the idle set so far: their order there
	clockStart  int64                        // when the pool's clock started to run; see clockRuns
	runs        int                          // eviction runs in flight
	evictNext   *object[K, V]                // in idle: where the next eviction run goes on; nil: the front
	lentNext    *object[K, V]                // in lent: where the next lifetime sweep goes on; nil: the front
	upkeep      []*subPool[K, V]             // keys with fewer than MinIdlePerKey spare objects, first queued first; may hold dropped ones
	lentLeases  ilist.List[leaseTrack[K, V]] // leases out, while abandoned objects are tracked
	backoffKeys int                          // keys in make backoff
	failing     []*subPool[K, V]             // keys that have a makeBackoff; may hold stale ones
}

// subPool is the part of a pool that belongs to one key. Its fields below
// pool are protected by the pool's mu.
type subPool[K comparable, V any] struct {
	key  K
	pool *Pool[K, V]

	c counters

	count  int // objects of this key: idle, lent, being made or destroyed
	making int // objects being made
	// activating counts shared-mode objects being activated for their
	// first borrower, after which they take more.
	activating int
	retiring   int                      // shared mode: objects that take no lease and go when their last comes back
	shares     int                      // leases out
	testing    int                      // idle objects under an eviction test, which stay in idle
	idle       ilist.List[object[K, V]] // idle objects; the front is lent first
	lent       ilist.List[object[K, V]] // shared mode: lent objects that may take more leases
	objs       ilist.List[object[K, V]] // every object of the key, made and not yet destroyed
	waiters    ilist.List[waiter[K, V]] // blocked borrowers of this key, first come first
	queued     bool                     // in pool.upkeep
	clears     uint32                   // Clears of the key, so that an object under test learns of them
	// forgotten: Clear or ClearAll was called and no Borrow, AddObject or
	// Prepare since, so the key is dropped once it holds nothing even when
	// MinIdlePerKey would keep it.
	forgotten bool

	bo *makeBackoff // make failures in a row (Config.MakeFailureThreshold), or nil; see backoff.go
}

type objState uint8

const (
	stIdle    objState = iota // in the idle lists
	stTesting                 // in the idle lists, under an eviction test: not lendable
	stLent                    // lent; in shared mode also in sub.lent and may take more leases
	stBusy                    // held by one goroutine for a factory call; not lendable
	stBroken                  // shared mode: invalidated, destroyed when its last lease comes back
	stDestroy                 // being destroyed
)

// object is one pooled value and its bookkeeping. Its mutable fields are
// protected by the pool's mu.
type object[K comparable, V any] struct {
	// Hot: what every Borrow and Return reads or writes, together.
	sub       *subPool[K, V]
	value     V
	keyLinks  ilist.Links[object[K, V]] // in sub.idle or sub.lent
	allLinks  ilist.Links[object[K, V]] // in pool.idle or pool.lent
	state     objState
	brokenWhy reason // stBroken: why it will be destroyed
	// idleCounted: its last lend from the idle set counted an idle span,
	// to be taken back if it goes back unused.
	idleCounted bool
	shares      int32
	free        *Pooled[K, V] // leases not in use, linked by next
	borrows     int64         // leases taken
	idleSeq     uint64        // when it last went into the idle set, in pool.idleSeqs: its place there
	// Stamps in nanoseconds since the pool's epoch. created reads the real
	// clock; the others the pool's clock (see clock.go). activeSince is
	// when the object last left the idle set (or was made) to be lent.
	lastBorrowed, lastReturned, activeSince int64
	lease                                   Pooled[K, V] // the first lease, so exclusive use allocates none

	// Cold: read at make, destroy, eviction or on request.
	created  int64
	jitter   uint32                    // this object's share of MaxLifetimeJitter, out of 1<<32
	objLinks ilist.Links[object[K, V]] // in sub.objs
	rctx     returnCtx[K, V]           // the context of Passivate and Validate at Return
}

func keyLinks[K comparable, V any](o *object[K, V]) *ilist.Links[object[K, V]] { return &o.keyLinks }
func allLinks[K comparable, V any](o *object[K, V]) *ilist.Links[object[K, V]] { return &o.allLinks }
func objLinks[K comparable, V any](o *object[K, V]) *ilist.Links[object[K, V]] { return &o.objLinks }

// Pooled is a borrower's handle on a lent object: one lease. Give it back
// with Return or Invalidate exactly once and do not use it afterwards.
// Giving it back twice fails with ErrNotBorrowed until the pool lends the
// handle again: handles are reused, so that Borrow allocates nothing, and
// once reused a stale handle is indistinguishable from the new borrower's.
type Pooled[K comparable, V any] struct {
	obj    *object[K, V]
	next   *Pooled[K, V] // in obj.free; protected by the pool's mu
	leased atomic.Bool

	track *leaseTrack[K, V] // made on the first lease while abandoned objects are tracked
}

// leaseTrack is what abandoned-object tracking (Config.Abandoned) keeps of a
// lease, apart so that pools without it do not pay its memory.
type leaseTrack[K comparable, V any] struct {
	h        *Pooled[K, V]
	lastUsed atomic.Int64                  // when lent or marked used, as the pool's stamps
	links    ilist.Links[leaseTrack[K, V]] // in pool.lentLeases; protected by the pool's mu
	stack    []byte                        // the Borrow's stack, with LogAbandoned; written before leased is set
}

func trackLinks[K comparable, V any](t *leaseTrack[K, V]) *ilist.Links[leaseTrack[K, V]] {
	return &t.links
}

// Value returns the borrowed object.
func (h *Pooled[K, V]) Value() V { return h.obj.value }

// Key returns the key the object was borrowed for.
func (h *Pooled[K, V]) Key() K { return h.obj.sub.key }

// MarkUsed records that the borrower still uses the object, so that
// abandoned-object tracking (Config.Abandoned) does not take it back: the
// Timeout counts from the last call, or from Borrow. It costs an atomic
// store (and a clock read when no evictor runs), and is safe for concurrent
// use.
func (h *Pooled[K, V]) MarkUsed() {
	if t := h.track; t != nil {
		t.lastUsed.Store(h.obj.sub.pool.useStamp())
	}
}

// grant is what a borrower is given: a lease, or capacity to make an object.
type grant[K comparable, V any] struct {
	lease *Pooled[K, V]
	// fresh: the leased object came from the idle set or was just made and
	// must be activated (and validated) by the borrower before use.
	fresh bool
	// reserved: room for one object of the key is counted for the borrower,
	// who must make it, or give the room back.
	reserved bool
	// victim: an idle object of another key whose room was handed to this
	// borrower; the borrower destroys it before making.
	victim *object[K, V]
	err    error
	// soon: nothing now, but objects of the key being made or activated
	// will take this borrower as a share; wait for them even with Fail.
	soon bool
}

func (g grant[K, V]) ok() bool { return g.lease != nil || g.reserved || g.err != nil }

// waiter is a blocked borrower. Waiters are reused; a grant is set under the
// pool's lock and announced on ready, which holds at most one token.
type waiter[K comparable, V any] struct {
	sub      *subPool[K, V]
	ticket   uint64 // the borrower's place in line, kept if it must wait again
	g        grant[K, V]
	ready    chan struct{}
	timer    *time.Timer
	keyLinks ilist.Links[waiter[K, V]] // in sub.waiters
	allLinks ilist.Links[waiter[K, V]] // in pool.waiters
	next     *waiter[K, V]             // in pool.freeWaiter
}

func wKeyLinks[K comparable, V any](w *waiter[K, V]) *ilist.Links[waiter[K, V]] { return &w.keyLinks }
func wAllLinks[K comparable, V any](w *waiter[K, V]) *ilist.Links[waiter[K, V]] { return &w.allLinks }

// New returns a pool that makes its objects with f. It refuses an invalid
// cfg with an error wrapping ErrInvalidConfig that names the field.
func New[K comparable, V any](f factory.KeyedFactory[K, V], cfg Config) (*Pool[K, V], error) {
	if f == nil {
		return nil, fmt.Errorf("%w: factory is nil", ErrInvalidConfig)
	}
	cfg, lim, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	p := &Pool[K, V]{
		f:          safeFactory[K, V]{f},
		shared:     lim.maxShares > 1,
		oddKeys:    oddKeys(reflect.TypeFor[K]()),
		drained:    make(chan struct{}),
		epoch:      time.Now(),
		lim:        lim,
		keys:       make(map[K]*subPool[K, V]),
		idle:       ilist.New(allLinks[K, V]),
		lent:       ilist.New(allLinks[K, V]),
		waiters:    ilist.New(wAllLinks[K, V]),
		lentLeases: ilist.New(trackLinks[K, V]),
	}
	p.cfg.Store(&cfg)
	p.closeCtx, p.closeMakes = context.WithCancel(context.Background())
	p.mu.Lock()
	p.advanceClockLocked(0)
	p.scheduleLocked(lim.every)
	p.mu.Unlock()
	return p, nil
}

// scheduleLocked puts the pool on the evictor's schedule at every, taking it
// off its old one; every 0 takes it off.
func (p *Pool[K, V]) scheduleLocked(every time.Duration) {
	if p.reg != nil {
		p.reg.Stop()
		p.reg = nil
	}
	if every > 0 {
		p.reg = evictor.Default.Schedule(every, p)
	}
}

// Config returns the pool's configuration with defaults filled in.
func (p *Pool[K, V]) Config() Config { return *p.cfg.Load() }

// subLocked returns key's sub-pool, making it if needed.
func (p *Pool[K, V]) subLocked(key K) *subPool[K, V] {
	sp := p.keys[key]
	if sp == nil {
		sp = &subPool[K, V]{
			key:     key,
			pool:    p,
			idle:    ilist.New(keyLinks[K, V]),
			lent:    ilist.New(keyLinks[K, V]),
			objs:    ilist.New(objLinks[K, V]),
			waiters: ilist.New(wKeyLinks[K, V]),
		}
		p.keys[key] = sp
	}
	return sp
}

// dropIfEmptyLocked forgets sp when it holds nothing and nobody waits on it,
// so that one-off keys do not grow the pool forever. A key whose makes are
// failing is kept, so that its backoff holds, and so is a key that
// MinIdlePerKey covers, so that eviction runs make up its idle objects,
// until Clear or ClearAll forgets it (or the pool closes).
func (p *Pool[K, V]) dropIfEmptyLocked(sp *subPool[K, V]) {
	if sp.count == 0 && sp.waiters.Len() == 0 && sp.bo == nil &&
		(p.lim.minIdle == 0 || sp.forgotten || p.closed) && p.keys[sp.key] == sp {
		delete(p.keys, sp.key) // if queued for upkeep, the run skips it
	}
}

// useLocked returns key's sub-pool for a caller that wants objects of it:
// a key Clear forgot is wanted again.
func (p *Pool[K, V]) useLocked(key K) *subPool[K, V] {
	sp := p.subLocked(key)
	if sp.forgotten {
		sp.forgotten = false
	}
	return sp
}

// Borrow lends an object of key. It takes an idle object if there is one
// (activating it, and validating it with TestOnBorrow: an object that fails
// is destroyed and the next one tried), or a share of a lent object under
// MaxSharesPerObject, or makes a new one if the limits allow, destroying the
// oldest idle objects of other keys when MaxTotal is reached. Otherwise it
// fails with ErrExhausted (WhenExhausted Fail) or waits, first come first
// served with the borrowers of every key, until an object or room frees, ctx
// ends (it returns ctx.Err()) or MaxWait passes (ErrExhausted).
//
// MaxWait is one deadline for the whole Borrow, counted from the moment it
// first has to wait (in line, or for a make): a borrower handed an object
// that then fails activation or validation, or is past MaxLifetime, waits
// again only for what is left of it, and keeps its place in line ahead of
// later borrowers. A make still running at the deadline goes on, and its
// object joins the pool.
//
// A failed make returns the factory's error, wrapped; a panic in a factory
// method an error wrapping ErrFactoryPanic. A key that cannot be hashed or
// is not equal to itself gets an error wrapping ErrInvalidKey. On a closed
// pool, or one that closes before the object is handed over, Borrow fails
// with ErrClosed and lends nothing.
//
// Give the handle back with Return or Invalidate.
func (p *Pool[K, V]) Borrow(ctx context.Context, key K) (*Pooled[K, V], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.checkKey(key); err != nil {
		return nil, err
	}
	var b borrowState
	swept := false
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		sp := p.useLocked(key)
		g := p.tryLocked(sp, false)
		if !g.ok() {
			cfg := p.cfg.Load()
			if ab := cfg.Abandoned; ab != nil && ab.RemoveOnBorrow && !swept {
				// Leaked objects may be what fills the pool: take them
				// back and try again, once.
				swept = true
				p.dropIfEmptyLocked(sp)
				p.mu.Unlock()
				p.removeAbandoned(ab, p.since())
				continue
			}
			if cfg.WhenExhausted == Fail && !g.soon {
				p.dropIfEmptyLocked(sp)
				p.mu.Unlock()
				return nil, ErrExhausted
			}
			var err error
			if g, err = p.wait(ctx, sp, &b); err != nil {
				return nil, err
			}
		} else {
			p.mu.Unlock()
		}
		if g.err != nil {
			return nil, g.err
		}
		made := false
		if g.reserved {
			h, err := p.makeObject(ctx, sp, g.victim, b.start(p.cfg.Load().MaxWait))
			if err != nil {
				return nil, err
			}
			g, made = grant[K, V]{lease: h, fresh: true}, true
		}
		if g.fresh && !made && p.retired(g.lease) {
			continue // it outlived MaxLifetime and was destroyed; try the next
		}
		if g.fresh {
			if err := p.ready(ctx, g.lease); err != nil {
				if made || ctx.Err() != nil {
					return nil, err
				}
				continue // the object was destroyed; try the next
			}
		}
		if p.isClosed.Load() {
			// Close began while the object was on its way: it goes back,
			// to be destroyed, and nothing is lent from a closed pool.
			_ = p.giveBack(g.lease, false, true)
			return nil, ErrClosed
		}
		if ab := p.cfg.Load().Abandoned; ab != nil && ab.LogAbandoned && g.lease.track != nil {
			g.lease.track.stack = debug.Stack()
		}
		// Marked lent only now that the borrower has it, so that a stale
		// handle given back meanwhile cannot take it.
		g.lease.leased.Store(true)
		return g.lease, nil
	}
}

// borrowState is what one Borrow keeps across its tries: its MaxWait
// deadline and its place in line.
type borrowState struct {
	deadline time.Time     // zero: not started, or no MaxWait
	started  bool          // deadline is set, if MaxWait asks for one
	ticket   uint64        // place in line once queued; 0: never queued
	waited   time.Duration // time spent waiting so far, over all its waits
	// waitedBefore: it has waited, and is counted in Counters.Waited.
	waitedBefore bool
}

// start starts the Borrow's deadline, maxWait from now, if it has not
// started yet, and returns it (zero: none). Only borrowers that wait read
// the clock.
func (b *borrowState) start(maxWait time.Duration) time.Time {
	if !b.started {
		b.started = true
		if maxWait > 0 {
			b.deadline = time.Now().Add(maxWait)
		}
	}
	return b.deadline
}

// tryLocked finds something for a borrower of sp without waiting: an idle
// object, a share of a lent object, or room to make one, possibly by taking
// over the room of another key's oldest idle object. queued says whether the
// borrower is one of sp's waiters.
func (p *Pool[K, V]) tryLocked(sp *subPool[K, V], queued bool) grant[K, V] {
	if g := p.lendLocked(sp); g.lease != nil {
		return g
	}
	if p.shared {
		// Objects of the key being made or activated will each take
		// MaxSharesPerObject-1 more borrowers: a burst on a cold key waits
		// for them instead of making an object per borrower.
		need := sp.waiters.Len()
		if !queued {
			need++
		}
		if need <= (sp.making+sp.activating)*(p.lim.maxShares-1) {
			return grant[K, V]{soon: true}
		}
	}
	if sp.count >= p.lim.maxPerKey {
		return grant[K, V]{}
	}
	full := p.fullLocked()
	if full && p.idle.Len() == 0 {
		return grant[K, V]{}
	}
	// Only now that there is room: past the backoff period, this borrower
	// becomes the probe and must make.
	if sp.bo != nil {
		if err := p.backoffLocked(sp); err != nil {
			p.countRejectedLocked(sp)
			return grant[K, V]{err: err}
		}
	}
	var victim *object[K, V]
	if full {
		// Take over the room of the oldest idle object. It stays counted
		// in its own key until destroyed, so that key's limit holds; the
		// pool-wide limit counts it and the reservation as one.
		victim = p.idle.Front()
		for victim.state == stTesting { // idle.Len() counts it, so there is another
			victim = p.idle.Next(victim)
			if victim == nil {
				return grant[K, V]{}
			}
		}
		p.unidleLocked(victim)
		victim.state = stDestroy
		p.victims++
	}
	p.reserveLocked(sp)
	return grant[K, V]{reserved: true, victim: victim}
}

// lendLocked leases an idle object of sp, or in shared mode a share of its
// least loaded lent object under the cap.
func (p *Pool[K, V]) lendLocked(sp *subPool[K, V]) grant[K, V] {
	obj := sp.idle.Front()
	for sp.testing > 0 && obj != nil && obj.state == stTesting {
		obj = sp.idle.Next(obj) // under an eviction test, where it stays
	}
	if obj != nil {
		p.unidleLocked(obj)
		obj.state = stLent
		if p.shared {
			obj.state = stBusy // until activated: see ready
			sp.activating++
		}
		h := p.leaseLocked(obj)
		obj.activeSince = obj.lastBorrowed
		if obj.idleCounted = p.clockRuns(); obj.idleCounted {
			p.countIdleLocked(sp, obj.lastBorrowed-max(obj.lastReturned, p.clockStart), 1)
		}
		return grant[K, V]{lease: h, fresh: true}
	}
	if !p.shared {
		return grant[K, V]{}
	}
	var best *object[K, V]
	var cfg *Config
	var now int64
	if p.lim.lifetime {
		cfg = p.cfg.Load()
		now = p.floorNow(cfg)
	}
	for o := sp.lent.Front(); o != nil; {
		next := sp.lent.Next(o)
		if cfg != nil && p.expired(o, cfg, now) {
			// Under steady load a shared object may never go back to
			// zero leases: stop lending it, so that it retires when its
			// borrowers are done.
			p.retireLocked(o, byLifetime)
		} else if int(o.shares) < p.lim.maxShares && (best == nil || o.shares < best.shares) {
			best = o
		}
		o = next
	}
	if best == nil {
		return grant[K, V]{}
	}
	h := p.leaseLocked(best)
	if int(best.shares) == p.lim.maxShares {
		p.wantUpkeepLocked(sp) // best was the key's last room, maybe
	}
	return grant[K, V]{lease: h}
}

// addLentLocked puts a shared object that was just activated for its first
// borrower into its key's lent list, where it takes more, and with
// MaxLifetime into the pool's, for the eviction run's sweep. (An object lent
// before SetConfig turned MaxLifetime on joins the sweep when next lent.)
func (p *Pool[K, V]) addLentLocked(obj *object[K, V]) {
	obj.state = stLent
	obj.sub.lent.PushBack(obj)
	if p.lim.lifetime {
		p.lent.PushBack(obj)
	}
}

// removeLentLocked takes a shared object out of the lent lists: it takes no
// more leases.
func (p *Pool[K, V]) removeLentLocked(obj *object[K, V]) {
	obj.sub.lent.Remove(obj)
	if obj.allLinks.In() {
		if obj == p.lentNext {
			p.lentNext = p.lent.Next(obj)
		}
		p.lent.Remove(obj)
	}
}

// retireLocked stops lending a lent shared object; it is destroyed for why
// when its last lease comes back. Its room is gone, so its key may want
// upkeep.
func (p *Pool[K, V]) retireLocked(obj *object[K, V], why reason) {
	p.removeLentLocked(obj)
	obj.state, obj.brokenWhy = stBroken, why
	obj.sub.retiring++
	p.retiring++
	p.wantUpkeepLocked(obj.sub)
}

// unretireLocked moves a retiring object on to being destroyed.
func (p *Pool[K, V]) unretireLocked(obj *object[K, V]) {
	obj.state = stDestroy
	obj.sub.retiring--
	p.retiring--
}

// leaseLocked takes a lease on obj.
func (p *Pool[K, V]) leaseLocked(obj *object[K, V]) *Pooled[K, V] {
	h := obj.free
	if h != nil {
		obj.free = h.next
		h.next = nil
	} else {
		h = &Pooled[K, V]{obj: obj}
	}
	obj.shares++
	obj.borrows++
	obj.sub.shares++
	p.shares++
	p.c.borrowed++
	obj.sub.c.borrowed++
	obj.lastBorrowed = p.stampLocked(obj)
	if p.lim.abandoned {
		if h.track == nil {
			h.track = &leaseTrack[K, V]{h: h}
		}
		h.track.lastUsed.Store(p.useStamp())
		p.lentLeases.PushBack(h.track)
	}
	return h
}

// unleaseLocked puts back a lease whose leased flag the caller cleared, and
// reports whether it was the object's last. returned says whether the
// borrower had it; if not (activation failed, or the borrower gave up before
// receiving it), the lease is taken off Borrowed instead of added to
// Returned.
func (p *Pool[K, V]) unleaseLocked(h *Pooled[K, V], returned bool) (last bool) {
	obj := h.obj
	h.next = obj.free
	obj.free = h
	if t := h.track; t != nil && t.links.In() {
		p.lentLeases.Remove(t)
		t.stack = nil
	}
	obj.shares--
	obj.sub.shares--
	p.shares--
	if returned {
		p.c.returned++
		obj.sub.c.returned++
	} else {
		p.c.borrowed--
		obj.sub.c.borrowed--
		obj.borrows--
	}
	return obj.shares == 0
}

func (p *Pool[K, V]) unidleLocked(obj *object[K, V]) {
	if obj == p.evictNext {
		p.evictNext = p.idle.Next(obj)
	}
	obj.sub.idle.Remove(obj)
	p.idle.Remove(obj)
	p.wantUpkeepLocked(obj.sub)
}

// wait queues a borrower of sp and blocks until it is granted something, ctx
// ends or the Borrow's deadline (b, MaxWait) passes. A borrower that waited
// before goes back to its place in line. Called with p.mu held; returns
// with it released.
func (p *Pool[K, V]) wait(ctx context.Context, sp *subPool[K, V], b *borrowState) (grant[K, V], error) {
	var left time.Duration
	if deadline := b.start(p.cfg.Load().MaxWait); !deadline.IsZero() {
		if left = time.Until(deadline); left <= 0 {
			p.dropIfEmptyLocked(sp)
			p.mu.Unlock()
			return grant[K, V]{}, ErrExhausted
		}
	}
	w := p.freeWaiter
	if w != nil {
		p.freeWaiter = w.next
		w.next = nil
	} else {
		w = &waiter[K, V]{ready: make(chan struct{}, 1)}
	}
	w.sub = sp
	if b.ticket == 0 {
		p.tickets++
		b.ticket = p.tickets
		sp.waiters.PushBack(w)
		p.waiters.PushBack(w)
	} else {
		p.requeueLocked(w, b.ticket)
	}
	w.ticket = b.ticket
	p.mu.Unlock()

	start := time.Now()
	var timeout <-chan time.Time
	if left > 0 {
		if w.timer == nil {
			w.timer = time.NewTimer(left)
		} else {
			w.timer.Reset(left)
		}
		timeout = w.timer.C
	}
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = ErrExhausted
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	d := time.Since(start)

	p.mu.Lock()
	first := !b.waitedBefore
	b.waitedBefore = true
	b.waited += d
	p.c.wait(d, b.waited, first)
	sp.c.wait(d, b.waited, first)
	if err != nil && w.allLinks.In() {
		// Gave up before anything was granted.
		p.unwaitLocked(w)
		p.dropIfEmptyLocked(sp)
		p.putWaiterLocked(w)
		p.mu.Unlock()
		return grant[K, V]{}, err
	}
	if err != nil {
		// A grant raced with giving up; it was sent under the lock, so it
		// is in ready now. Take it and hand it back.
		<-w.ready
	}
	g := w.g
	p.putWaiterLocked(w)
	p.mu.Unlock()
	if err != nil {
		p.undo(sp, g)
		return grant[K, V]{}, err
	}
	return g, nil
}

// requeueLocked puts w, a borrower that waited before with ticket, back in
// line at its place: ahead of every waiter that came after it. The lists
// are kept in ticket order, and such a borrower was served recently, so the
// walk is short.
func (p *Pool[K, V]) requeueLocked(w *waiter[K, V], ticket uint64) {
	var mark *waiter[K, V]
	for o := w.sub.waiters.Front(); o != nil; o = w.sub.waiters.Next(o) {
		if o.ticket > ticket {
			mark = o
			break
		}
	}
	if mark != nil {
		w.sub.waiters.InsertBefore(w, mark)
	} else {
		w.sub.waiters.PushBack(w)
	}
	mark = nil
	for o := p.waiters.Front(); o != nil; o = p.waiters.Next(o) {
		if o.ticket > ticket {
			mark = o
			break
		}
	}
	if mark != nil {
		p.waiters.InsertBefore(w, mark)
	} else {
		p.waiters.PushBack(w)
	}
}

func (p *Pool[K, V]) unwaitLocked(w *waiter[K, V]) {
	w.sub.waiters.Remove(w)
	p.waiters.Remove(w)
}

func (p *Pool[K, V]) putWaiterLocked(w *waiter[K, V]) {
	w.g, w.sub = grant[K, V]{}, nil
	w.next = p.freeWaiter
	p.freeWaiter = w
}

// grantLocked hands g to w, which leaves the queues.
func (p *Pool[K, V]) grantLocked(w *waiter[K, V], g grant[K, V]) {
	p.unwaitLocked(w)
	w.g = g
	w.ready <- struct{}{} // never blocks: one grant per wait, and ready is drained before reuse
}

// serveKeyLocked lends what sp has to lend to its waiters, in order.
func (p *Pool[K, V]) serveKeyLocked(sp *subPool[K, V]) {
	for w := sp.waiters.Front(); w != nil; w = sp.waiters.Front() {
		g := p.lendLocked(sp)
		if g.lease == nil {
			return
		}
		p.grantLocked(w, g)
	}
}

// dispatchLocked serves waiters of every key, first come first served, after
// room freed or idle objects appeared: the longest waiting borrower whose key
// can take an object gets it. A waiter whose key is at MaxTotalPerKey does
// not hold up the others.
func (p *Pool[K, V]) dispatchLocked() { p.dispatchAheadLocked(nil) }

// dispatchAheadLocked is dispatchLocked for the waiters ahead of the first
// waiter of stop (all waiters if stop has none or is nil).
func (p *Pool[K, V]) dispatchAheadLocked(stop *subPool[K, V]) {
	for w := p.waiters.Front(); w != nil && w.sub != stop; {
		next := p.waiters.Next(w)
		if g := p.tryLocked(w.sub, true); g.ok() {
			p.grantLocked(w, g)
		}
		w = next
	}
}

// undo gives back a grant to sp's borrower who no longer wants it.
func (p *Pool[K, V]) undo(sp *subPool[K, V], g grant[K, V]) {
	switch {
	case g.lease != nil && g.fresh:
		// Taken from the idle set and not yet activated: it goes back
		// where it was, without a factory call.
		obj := g.lease.obj
		p.mu.Lock()
		p.unleaseLocked(g.lease, false)
		if p.shared {
			sp.activating--
		}
		r, destroy := p.putLocked(obj, true)
		p.mu.Unlock()
		if destroy {
			p.destroyBackground(obj, r)
		}
	case g.lease != nil:
		p.giveBack(g.lease, false, true)
	case g.reserved:
		// The victim, if any, is still whole: put it back rather than
		// destroy it for nothing.
		var r reason
		destroy := false
		p.mu.Lock()
		sp.making--
		p.making--
		sp.bo.endProbe() // if this was the probe, it never ran
		if g.victim != nil {
			// The reservation's room goes back to the victim, in one step,
			// so that neither waiters nor the surplus check see both.
			p.victims--
			sp.count--
			p.total--
			r, destroy = p.putLocked(g.victim, true)
			p.roomFreedLocked(sp)
		} else {
			p.unreserveLocked(sp)
		}
		p.mu.Unlock()
		if destroy {
			p.destroyBackground(g.victim, r)
		}
	}
}

// fullLocked reports whether MaxTotal leaves no room for another object.
func (p *Pool[K, V]) fullLocked() bool { return p.total-p.victims >= p.lim.maxTotal }

// reserveLocked counts room for one object of sp that is about to be made.
func (p *Pool[K, V]) reserveLocked(sp *subPool[K, V]) {
	sp.count++
	sp.making++
	p.total++
	p.making++
}

// unreserveLocked frees the room of one object of sp (destroyed, or never
// made) and serves the waiters it lets in.
func (p *Pool[K, V]) unreserveLocked(sp *subPool[K, V]) {
	sp.count--
	p.total--
	p.roomFreedLocked(sp)
}

// roomFreedLocked serves the waiters that room freed in sp lets in, and
// does what else a key losing an object calls for.
func (p *Pool[K, V]) roomFreedLocked(sp *subPool[K, V]) {
	if p.waiters.Len() > 0 {
		p.dispatchLocked()
	}
	p.wantUpkeepLocked(sp) // its room may be what upkeep lacked
	p.dropIfEmptyLocked(sp)
	p.checkDrainedLocked()
}

func (p *Pool[K, V]) checkDrainedLocked() {
	if p.closed && p.total == 0 && p.runs == 0 && !p.isDrained {
		p.isDrained = true
		close(p.drained)
	}
}

// putLocked takes back an object nobody holds, passivated: it goes to a
// waiter of its key, or to the idle set, or is to be destroyed (surplus
// over MaxIdlePerKey, or the pool is closed), which the caller does after
// unlocking. unused says the object was taken from the idle set and not
// used (its borrower gave up, or its room was not needed after all): it
// keeps its idle time and goes back to its place in both idle lists, so
// that the order FIFO promises holds. Otherwise it was returned or made,
// and goes in as the most recently returned.
func (p *Pool[K, V]) putLocked(obj *object[K, V], unused bool) (r reason, destroy bool) {
	sp := obj.sub
	if p.closed {
		obj.state = stDestroy
		return byClose, true
	}
	if (sp.waiters.Len() == 0 && sp.idle.Len() >= p.lim.maxIdle) ||
		sp.count-sp.retiring > p.lim.maxPerKey || p.total-p.victims-p.retiring > p.lim.maxTotal {
		// Beyond MaxIdlePerKey, or over limits SetConfig lowered.
		obj.state = stDestroy
		return bySurplus, true
	}
	obj.state = stIdle
	fifo := p.cfg.Load().FIFO
	switch {
	case unused:
		// Back to its place by its sequence number, as if never taken;
		// the idle span its lend counted is taken back.
		insertBySeq(&sp.idle, obj, !fifo)
		insertBySeq(&p.idle, obj, false)
		if obj.idleCounted {
			obj.idleCounted = false
			p.countIdleLocked(sp, -(obj.lastBorrowed - max(obj.lastReturned, p.clockStart)), -1)
		}
	case fifo:
		sp.idle.PushBack(obj)
		p.idle.PushBack(obj)
	default:
		sp.idle.PushFront(obj)
		p.idle.PushBack(obj)
	}
	if !unused {
		p.idleSeqs++
		obj.idleSeq = p.idleSeqs
		obj.lastReturned = p.stampLocked(obj)
		if p.clockRuns() && obj.borrows > 0 { // else new: never lent
			d := obj.lastReturned - max(obj.activeSince, p.clockStart)
			p.c.activeNanos += d
			p.c.actives++
			sp.c.activeNanos += d
			sp.c.actives++
		}
	}
	p.serveIdleLocked(sp)
	return 0, false
}

// countIdleLocked adds n idle spans of total d to the pool's and sp's
// counters (n -1 takes one back).
func (p *Pool[K, V]) countIdleLocked(sp *subPool[K, V], d int64, n int64) {
	p.c.idleNanos += d
	p.c.idles += n
	sp.c.idleNanos += d
	sp.c.idles += n
}

// serveIdleLocked serves waiters after an idle object of sp became
// lendable.
func (p *Pool[K, V]) serveIdleLocked(sp *subPool[K, V]) {
	if p.waiters.Len() > 0 {
		// Borrowers of other keys that have waited longer than this key's
		// first waiter get the object's room if they need it, so a busy key
		// cannot starve them; then this key's waiters get what is left.
		p.dispatchAheadLocked(sp)
		p.serveKeyLocked(sp)
	}
}

// insertBySeq puts obj into l, an idle list in the order objects went
// into the idle set (the latest first if latestFirst), at its place by its
// idleSeq, walking from both ends so that an object that belongs near
// either end is placed at once.
func insertBySeq[K comparable, V any](l *ilist.List[object[K, V]], obj *object[K, V], latestFirst bool) {
	after := func(a, b *object[K, V]) bool { // a belongs after b
		if latestFirst {
			return a.idleSeq < b.idleSeq
		}
		return a.idleSeq > b.idleSeq
	}
	for f, b := l.Front(), l.Back(); f != nil; f, b = l.Next(f), l.Prev(b) {
		if !after(obj, f) {
			l.InsertBefore(obj, f)
			return
		}
		if after(obj, b) {
			if n := l.Next(b); n != nil {
				l.InsertBefore(obj, n)
			} else {
				l.PushBack(obj)
			}
			return
		}
	}
	l.PushBack(obj)
}

// retired destroys the object of a lease just taken from the idle set if it
// has outlived MaxLifetime, and reports whether it did.
func (p *Pool[K, V]) retired(h *Pooled[K, V]) bool {
	cfg := p.cfg.Load()
	if cfg.MaxLifetime <= 0 || !p.expired(h.obj, cfg, p.floorNow(cfg)) {
		return false
	}
	obj := h.obj
	p.mu.Lock()
	p.unleaseLocked(h, false)
	if p.shared {
		obj.sub.activating--
	}
	obj.state = stDestroy
	p.mu.Unlock()
	p.destroyBackground(obj, byLifetime)
	return true
}

// ready activates an object just taken from the idle set or just made, and
// validates it with TestOnBorrow. On failure it destroys the object, unless
// the failure came from ctx ending: the borrower gave up, the object is not
// to blame, and it goes back to the pool where it was.
func (p *Pool[K, V]) ready(ctx context.Context, h *Pooled[K, V]) error {
	obj := h.obj
	sp := obj.sub
	err := p.f.Activate(ctx, sp.key, obj.value)
	if err == nil && p.cfg.Load().TestOnBorrow {
		err = p.f.Validate(ctx, sp.key, obj.value)
	}
	if err == nil {
		if p.shared {
			// Now that it is active, others may share it.
			p.mu.Lock()
			sp.activating--
			p.addLentLocked(obj)
			p.serveKeyLocked(sp)
			p.mu.Unlock()
		}
		return nil
	}
	gaveUp := ctx.Err() != nil
	why, destroy := byBorrowValidation, true
	var perr error
	if gaveUp {
		pctx, cancel := p.bounded(context.WithoutCancel(ctx))
		perr = p.f.Passivate(pctx, sp.key, obj.value)
		cancel()
		p.swallow(sp, OpPassivate, perr)
	}
	p.mu.Lock()
	p.unleaseLocked(h, false)
	if p.shared {
		sp.activating--
	}
	if gaveUp && perr == nil {
		why, destroy = p.putLocked(obj, true)
	} else {
		obj.state = stDestroy
	}
	p.mu.Unlock()
	if destroy {
		p.destroyBackground(obj, why)
	}
	if gaveUp {
		return ctx.Err()
	}
	return fmt.Errorf("%w: key %v: %w", ErrValidation, sp.key, err)
}

// makeRequest carries one make from the goroutine that runs it to the
// caller that asked for it. finished, place and background are protected
// by the pool's mu; lease and err are written before done is closed.
type makeRequest[K comparable, V any] struct {
	done     chan struct{}
	finished bool
	place    bool // put the object in the pool instead of lending it
	// background: nobody will read err (upkeep, or a caller that gave
	// up), so a failure is reported as swallowed.
	background bool
	lease      *Pooled[K, V]
	err        error
}

// makeObject makes an object of sp in room already reserved, first
// destroying victim, whose room it takes over, and lends it to the caller.
// If ctx ends, or deadline (if not zero) passes, first, the caller gets
// ctx.Err() or ErrExhausted and the object, when made, joins the pool.
func (p *Pool[K, V]) makeObject(ctx context.Context, sp *subPool[K, V], victim *object[K, V], deadline time.Time) (*Pooled[K, V], error) {
	if victim != nil {
		p.destroyVictim(victim)
	}
	r := &makeRequest[K, V]{done: make(chan struct{})}
	if ctx.Done() == nil && deadline.IsZero() {
		p.runMake(ctx, sp, r)
		return r.lease, r.err
	}
	go p.runMake(ctx, sp, r)
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case <-r.done:
		return r.lease, r.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = fmt.Errorf("%w: MaxWait passed while an object of key %v was being made (it joins the pool when made)", ErrExhausted, sp.key)
	}
	p.mu.Lock()
	if !r.finished {
		r.place, r.background = true, true
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	if r.lease != nil {
		// Made and lent to this caller, who no longer wants it: as a new
		// object, it is passivated before it joins the idle set.
		obj := r.lease.obj
		p.mu.Lock()
		p.unleaseLocked(r.lease, false)
		if p.shared {
			sp.activating--
		}
		obj.state = stBusy
		p.mu.Unlock()
		p.settleNew(obj, func() bool { return true })
	}
	return nil, err
}

// placeObject makes an object of sp in room already reserved and puts it
// in the pool, passivated: to a waiter of the key, or idle. background
// says nobody reads the error (upkeep). If ctx ends first, it returns
// ctx.Err() and the object, when made, joins the pool.
func (p *Pool[K, V]) placeObject(ctx context.Context, sp *subPool[K, V], background bool) error {
	r := &makeRequest[K, V]{done: make(chan struct{}), place: true, background: background}
	if ctx.Done() == nil {
		p.runMake(ctx, sp, r)
		return r.err
	}
	go p.runMake(ctx, sp, r)
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	r.background = true
	p.mu.Unlock()
	return ctx.Err()
}

// runMake calls the factory for r. Its context keeps the values of the
// caller's but not its cancellation, so that a borrower that gives up does
// not waste the make; it is bounded by FactoryTimeout and ended by Close.
// An object made after Close began is destroyed, not lent or kept.
func (p *Pool[K, V]) runMake(ctx context.Context, sp *subPool[K, V], r *makeRequest[K, V]) {
	mctx, cancel := p.bounded(context.WithoutCancel(ctx))
	stop := context.AfterFunc(p.closeCtx, cancel)
	v, err := p.f.Make(mctx, sp.key)
	cancelled := err != nil && p.closeCtx.Err() != nil
	invalid := false
	var derr error
	if err == nil && p.cfg.Load().TestOnCreate {
		if verr := p.f.Validate(mctx, sp.key, v); verr != nil {
			derr = p.f.Destroy(mctx, sp.key, v)
			invalid = true
			err = fmt.Errorf("%w: key %v: %w", ErrValidation, sp.key, verr)
		}
	}
	stop()
	cancel()
	p.swallow(sp, OpDestroy, derr) // nobody asked for that object

	var obj *object[K, V]
	if err == nil {
		now := p.since()
		obj = &object[K, V]{sub: sp, value: v, state: stBusy,
			created: now, lastBorrowed: now, lastReturned: now, activeSince: now, jitter: rand.Uint32()}
		obj.lease.obj = obj
		obj.free = &obj.lease
		obj.rctx.obj = obj
	}
	settle, doomed := false, false
	p.mu.Lock()
	sp.making--
	p.making--
	switch {
	case invalid:
		p.c.created++
		sp.c.created++
		p.countDestroyLocked(sp, byBorrowValidation)
		r.err = err
		p.makeFailedLocked(sp, err)
		p.unreserveLocked(sp)
	case cancelled:
		// Cancelled by Close: not counted as the factory's failure.
		sp.bo.endProbe()
		r.err = fmt.Errorf("%w: make key %v: %w", ErrClosed, sp.key, err)
		p.unreserveLocked(sp)
	case err != nil:
		p.c.makeErrors++
		sp.c.makeErrors++
		r.err = fmt.Errorf("keyedpool: make key %v: %w", sp.key, err)
		p.makeFailedLocked(sp, err)
		p.unreserveLocked(sp)
	default:
		p.c.created++
		sp.c.created++
		p.makeOKLocked(sp)
		sp.objs.PushBack(obj)
		switch {
		case p.closed:
			obj.state, doomed = stDestroy, true
			r.err = fmt.Errorf("%w: key %v: closed while its object was being made", ErrClosed, sp.key)
		case r.place:
			settle = true // stays stBusy until passivated
		default:
			if p.shared {
				sp.activating++ // until ready
			} else {
				obj.state = stLent
			}
			r.lease = p.leaseLocked(obj)
			p.wantUpkeepLocked(sp) // lent straight from the make: the key may still have no idle object
		}
	}
	r.finished = true
	bg := r.background && !p.closed
	if !settle {
		close(r.done)
	}
	p.mu.Unlock()
	switch {
	case bg && r.err != nil && invalid:
		p.swallow(sp, OpValidate, r.err)
	case bg && r.err != nil && !cancelled:
		p.swallow(sp, OpMake, r.err)
	}
	switch {
	case settle:
		background := func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return r.background
		}
		if perr := p.settleNew(obj, background); perr != nil {
			r.err = fmt.Errorf("keyedpool: passivate new object of key %v: %w", sp.key, perr)
		}
		close(r.done)
	case doomed:
		p.destroyBackground(obj, byClose)
	}
}

// settleNew passivates obj, just made and held by the caller alone (stBusy,
// counted in its key), and puts it in the pool, so that a new idle object
// is in the state a returned one is in (as commons-pool2's addObject). A
// failed Passivate destroys the object (counted with the return-validation
// failures) and is returned, and reported as swallowed first if background
// says nobody waits for it.
func (p *Pool[K, V]) settleNew(obj *object[K, V], background func() bool) error {
	sp := obj.sub
	ctx, cancel := p.bounded(context.Background())
	err := p.f.Passivate(ctx, sp.key, obj.value)
	cancel()
	if err != nil && background() {
		p.swallow(sp, OpPassivate, err)
	}
	why, destroy := byReturnValidation, true
	p.mu.Lock()
	if err != nil {
		obj.state = stDestroy
	} else {
		why, destroy = p.putLocked(obj, false)
	}
	p.mu.Unlock()
	if destroy {
		p.destroyBackground(obj, why)
	}
	return err
}

func (p *Pool[K, V]) countDestroyLocked(sp *subPool[K, V], why reason) {
	p.c.destroyed[why]++
	sp.c.destroyed[why]++
}

// check validates a handle given back to p and clears its leased flag.
func (p *Pool[K, V]) check(h *Pooled[K, V]) error {
	if h == nil || h.obj == nil {
		return ErrNotBorrowed
	}
	if h.obj.sub.pool != p {
		return ErrForeignObject
	}
	if !h.leased.CompareAndSwap(true, false) {
		return ErrNotBorrowed
	}
	return nil
}

// Return gives back a borrowed object. When its last lease comes back the
// object is passivated (and validated with TestOnReturn) and goes to a
// waiter of its key, or to the idle set, or is destroyed: beyond
// MaxIdlePerKey, after a failed passivation or validation, or after Close.
// It fails with ErrNotBorrowed for a handle that is not lent (returned
// twice) and ErrForeignObject for one from another pool. Other errors come
// from the factory (a panic in it wraps ErrFactoryPanic); the object is
// dealt with either way. Return does not block on other borrowers; the
// factory calls it makes are bounded by Config.FactoryTimeout (Passivate
// and Validate get a context that ends FactoryTimeout after they first look
// at it, Destroy one that ends FactoryTimeout after it starts). Safe for
// concurrent use.
func (p *Pool[K, V]) Return(h *Pooled[K, V]) error {
	if err := p.check(h); err != nil {
		return err
	}
	return p.giveBack(h, true, false)
}

// giveBack returns a lease whose leased flag is already cleared; returned
// as for unleaseLocked. Its errors go to the caller, or with background
// (nobody gave the lease back) are reported as swallowed.
func (p *Pool[K, V]) giveBack(h *Pooled[K, V], returned, background bool) error {
	obj := h.obj
	sp := obj.sub
	if p.shared {
		p.mu.Lock()
		if !p.unleaseLocked(h, returned) {
			if obj.state == stLent {
				p.serveKeyLocked(sp) // a share came free
			}
			p.mu.Unlock()
			return nil
		}
		if obj.state == stLent {
			p.removeLentLocked(obj)
		}
		if obj.state == stBroken {
			p.unretireLocked(obj)
			p.mu.Unlock()
			if background {
				return p.destroyBackground(obj, obj.brokenWhy)
			}
			return p.destroy(obj, obj.brokenWhy)
		}
		obj.state = stBusy
		p.mu.Unlock()
	}
	// Only this goroutine holds obj now.
	cfg := p.cfg.Load()
	expired := cfg.MaxLifetime > 0 && p.expired(obj, cfg, p.floorNow(cfg))
	why, destroy := byReturnValidation, false
	var err error
	if !expired {
		op := OpPassivate
		err = p.f.Passivate(&obj.rctx, sp.key, obj.value)
		if err == nil && cfg.TestOnReturn {
			op = OpValidate
			err = p.f.Validate(&obj.rctx, sp.key, obj.value)
		}
		if err != nil {
			err = fmt.Errorf("keyedpool: %v of returned object of key %v (it is destroyed): %w", op, sp.key, err)
		}
		if background {
			p.swallow(sp, op, err)
		}
	}
	p.mu.Lock()
	if !p.shared {
		p.unleaseLocked(h, returned)
	}
	switch {
	case expired:
		obj.state = stDestroy
		why, destroy = byLifetime, true
	case err != nil:
		obj.state = stDestroy
		destroy = true
	default:
		why, destroy = p.putLocked(obj, false)
	}
	p.mu.Unlock()
	if destroy && background {
		return errors.Join(err, p.destroyBackground(obj, why))
	}
	if destroy {
		return errors.Join(err, p.destroy(obj, why))
	}
	return nil
}

// Invalidate gives back a borrowed object that must not be used again, and
// destroys it. With shared leases the object stops being lent at once and is
// destroyed when its last lease comes back, so other borrowers' work on it is
// not cut. Errors as for Return; a destroy error is returned wrapped. The
// Destroy call gets a context that ends after Config.FactoryTimeout. Safe
// for concurrent use.
func (p *Pool[K, V]) Invalidate(h *Pooled[K, V]) error {
	if err := p.check(h); err != nil {
		return err
	}
	return p.invalidate(h, byInvalidate)
}

// invalidate is Invalidate for a lease whose leased flag is already
// cleared.
func (p *Pool[K, V]) invalidate(h *Pooled[K, V], why reason) error {
	obj := h.obj
	p.mu.Lock()
	last := p.unleaseLocked(h, true)
	if !last { // shared mode: others hold leases
		if obj.state == stLent { // else broken already: the first cause counts
			p.retireLocked(obj, why)
		}
		p.mu.Unlock()
		return nil
	}
	if p.shared && obj.state == stLent {
		p.removeLentLocked(obj)
	}
	if obj.state == stBroken {
		why = obj.brokenWhy // the first cause counts
		p.unretireLocked(obj)
	}
	obj.state = stDestroy
	p.mu.Unlock()
	return p.destroy(obj, why)
}

// destroy destroys obj, which nobody holds any more, and frees its room,
// for a caller that gets the error. The call is bounded by FactoryTimeout.
func (p *Pool[K, V]) destroy(obj *object[K, V], why reason) error {
	ctx, cancel := p.bounded(context.Background())
	defer cancel()
	return p.destroyCtx(ctx, obj, why)
}

// destroyCtx is destroy with the caller's context.
func (p *Pool[K, V]) destroyCtx(ctx context.Context, obj *object[K, V], why reason) error {
	sp := obj.sub
	err := p.f.Destroy(ctx, sp.key, obj.value)
	p.mu.Lock()
	sp.objs.Remove(obj)
	p.countDestroyLocked(sp, why)
	p.unreserveLocked(sp)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("keyedpool: destroy key %v: %w", sp.key, err)
	}
	return nil
}

// destroyBackground is destroy in work no caller waits for: its error is
// reported as swallowed, and returned for eviction runs to join.
func (p *Pool[K, V]) destroyBackground(obj *object[K, V], why reason) error {
	err := p.destroy(obj, why)
	p.swallow(obj.sub, OpDestroy, err)
	return err
}

// destroyVictim destroys an idle object whose room was handed to a borrower
// of another key. Its error has nobody to go to (the borrower did not ask
// for it) and is reported as swallowed.
func (p *Pool[K, V]) destroyVictim(obj *object[K, V]) {
	sp := obj.sub
	ctx, cancel := p.bounded(context.Background())
	err := p.f.Destroy(ctx, sp.key, obj.value)
	cancel()
	p.mu.Lock()
	sp.objs.Remove(obj)
	p.victims--
	p.countDestroyLocked(sp, byClear)
	p.unreserveLocked(sp)
	p.mu.Unlock()
	if err != nil {
		p.swallow(sp, OpDestroy, fmt.Errorf("keyedpool: destroy key %v: %w", sp.key, err))
	}
}

// destroyAll destroys objects already taken out of the pool, each call
// bounded by ctx and FactoryTimeout.
func (p *Pool[K, V]) destroyAll(ctx context.Context, objs []*object[K, V], why reason) error {
	var errs []error
	for _, o := range objs {
		cctx, cancel := p.bounded(ctx)
		if err := p.destroyCtx(cctx, o, why); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// takeIdleLocked removes an idle object from the pool for destruction. An
// object under an eviction test is left to the test, which learns of it
// (see the clears counters) and destroys it.
func (p *Pool[K, V]) takeIdleLocked(obj *object[K, V], doomed []*object[K, V]) []*object[K, V] {
	if obj.state == stTesting {
		return doomed
	}
	p.unidleLocked(obj)
	obj.state = stDestroy
	return append(doomed, obj)
}

// Close closes the pool: Borrow fails with ErrClosed from now on, waiting
// borrowers get ErrClosed, makes in flight are cancelled, and idle objects
// are destroyed, and the pool leaves the evictor's schedule (an eviction
// run in flight is cancelled). Then it waits, bounded by ctx, until every
// lent object has been returned (and destroyed) and no eviction run is in
// flight. It returns the destroy errors and, if ctx ended first, ctx.Err(),
// joined. Close may be called more than once; later calls only wait.
func (p *Pool[K, V]) Close(ctx context.Context) error {
	var doomed []*object[K, V]
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.isClosed.Store(true)
		p.closeMakes()
		p.scheduleLocked(0)
		for w := p.waiters.Front(); w != nil; w = p.waiters.Front() {
			sp := w.sub
			p.grantLocked(w, grant[K, V]{err: ErrClosed})
			p.dropIfEmptyLocked(sp)
		}
		doomed = p.takeIdleListLocked(&p.idle, -1, doomed)
		p.forgetAllFailuresLocked() // a closed pool makes nothing
		p.checkDrainedLocked()
	}
	p.mu.Unlock()
	err := p.destroyAll(ctx, doomed, byClose)
	select {
	case <-p.drained: // first, so that an ended ctx does not hide success
		return err
	default:
	}
	select {
	case <-p.drained:
		return err
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
}

// AddObject makes one object of key and puts it in the pool: to a waiter of
// the key, or idle. It fails with ErrExhausted when the limits leave no room
// (it never destroys other keys' objects to make room), with ErrClosed on a
// closed pool, with ErrBackoff while the key's make backoff runs, and with
// the factory's error, wrapped. If ctx ends before the
// make does, it returns ctx.Err() and the object still joins the pool.
func (p *Pool[K, V]) AddObject(ctx context.Context, key K) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	sp := p.useLocked(key)
	if sp.count >= p.lim.maxPerKey || p.fullLocked() {
		p.dropIfEmptyLocked(sp)
		p.mu.Unlock()
		return ErrExhausted
	}
	if sp.bo != nil {
		if err := p.backoffLocked(sp); err != nil {
			p.countRejectedLocked(sp)
			p.mu.Unlock()
			return err
		}
	}
	p.reserveLocked(sp)
	p.mu.Unlock()
	return p.placeObject(ctx, sp, false)
}

// Prepare makes idle objects of key until it has MinIdlePerKey spare ones
// (as commons-pool2's preparePool): idle, or with shared leases lent under
// the share cap. It stops at the first error, which it returns: AddObject's.
func (p *Pool[K, V]) Prepare(ctx context.Context, key K) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	need := p.lim.minIdle
	if sp := p.keys[key]; sp != nil {
		sp.forgotten = false
		need -= p.spareLocked(sp, need)
	}
	p.mu.Unlock()
	for ; need > 0; need-- {
		if err := p.AddObject(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

// Clear destroys the idle objects of key, and forgets the key: it leaves
// the pool as soon as it holds nothing, even when MinIdlePerKey would keep
// it, unless it is used again (Borrow, AddObject, Prepare). Lent objects
// are not touched; when they come back they go idle as usual (to be
// destroyed by eviction, or by Clear again), so a key cleared while some
// of its objects are lent stays until those are gone. It returns the destroy
// errors, joined, each bounded by ctx and FactoryTimeout; an error wrapping
// ErrInvalidKey for a key the pool cannot hold.
func (p *Pool[K, V]) Clear(ctx context.Context, key K) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	var doomed []*object[K, V]
	p.mu.Lock()
	if sp := p.keys[key]; sp != nil {
		sp.clears++ // for objects under an eviction test
		sp.forgotten = true
		doomed = p.takeIdleListLocked(&sp.idle, -1, doomed)
		p.dropIfEmptyLocked(sp)
	}
	p.mu.Unlock()
	return p.destroyAll(ctx, doomed, byClear)
}

// ClearAll destroys the idle objects of every key and forgets every key,
// as Clear does for one. Lent objects are not touched. It returns the
// destroy errors, joined.
func (p *Pool[K, V]) ClearAll(ctx context.Context) error {
	p.mu.Lock()
	p.clears++ // for objects under an eviction test
	for _, sp := range p.keys {
		sp.forgotten = true
		p.dropIfEmptyLocked(sp)
	}
	p.mu.Unlock()
	return p.clearOldest(ctx, -1)
}

// ClearOldest destroys the oldest 15% (at least one) of the idle objects of
// all keys together, as commons-pool2's clearOldest. It returns the destroy
// errors, joined.
func (p *Pool[K, V]) ClearOldest(ctx context.Context) error {
	p.mu.Lock()
	n := p.idle.Len()*15/100 + 1
	p.mu.Unlock()
	return p.clearOldest(ctx, n)
}

// clearOldest destroys up to n of the oldest idle objects; n < 0: all.
func (p *Pool[K, V]) clearOldest(ctx context.Context, n int) error {
	p.mu.Lock()
	doomed := p.takeIdleListLocked(&p.idle, n, nil)
	p.mu.Unlock()
	return p.destroyAll(ctx, doomed, byClear)
}

// takeIdleListLocked takes up to n (n < 0: all) idle objects from the
// front of l, one of the idle lists, for destruction, skipping those under
// an eviction test.
func (p *Pool[K, V]) takeIdleListLocked(l *ilist.List[object[K, V]], n int, doomed []*object[K, V]) []*object[K, V] {
	for o := l.Front(); o != nil && n != 0; {
		next := l.Next(o)
		if o.state != stTesting {
			doomed = p.takeIdleLocked(o, doomed)
			n--
		}
		o = next
	}
	return doomed
}

// Keys returns the keys that have a sub-pool (see Stats.Keys), in no
// particular order.
func (p *Pool[K, V]) Keys() []K {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]K, 0, len(p.keys))
	for k := range p.keys {
		keys = append(keys, k)
	}
	return keys
}

// Stats returns a snapshot of the whole pool.
func (p *Pool[K, V]) Stats() Stats {
	p.mu.Lock()
	s := Stats{
		Closed:        p.closed,
		Keys:          len(p.keys),
		KeysInBackoff: p.backoffKeys,
		Gauges: Gauges{
			Active:      p.total - p.victims - p.idle.Len() - p.making,
			Idle:        p.idle.Len(),
			Making:      p.making,
			Waiters:     p.waiters.Len(),
			SharesInUse: p.shares,
		},
	}
	s.Counters = p.c.snapshot()
	p.mu.Unlock()
	return s
}

// KeyStats returns a snapshot of key's sub-pool; all zero for a key that has
// none (never used, or dropped when it emptied, or one the pool cannot hold:
// see ErrInvalidKey).
func (p *Pool[K, V]) KeyStats(key K) KeyStats {
	if p.checkKey(key) != nil {
		return KeyStats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sp := p.keys[key]
	if sp == nil {
		return KeyStats{}
	}
	return sp.statsLocked()
}

// AllKeyStats returns a snapshot of every key's sub-pool, taken at one
// instant: the keys Keys would return, each with what KeyStats would. It
// holds the pool's lock while it copies, so it costs one map entry per key;
// metrics collectors call it once per scrape.
func (p *Pool[K, V]) AllKeyStats() map[K]KeyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := make(map[K]KeyStats, len(p.keys))
	for k, sp := range p.keys {
		all[k] = sp.statsLocked()
	}
	return all
}

func (sp *subPool[K, V]) statsLocked() KeyStats {
	ks := KeyStats{
		Gauges: Gauges{
			Active:      sp.count - sp.idle.Len() - sp.making,
			Idle:        sp.idle.Len(),
			Making:      sp.making,
			Waiters:     sp.waiters.Len(),
			SharesInUse: sp.shares,
		},
		Counters: sp.c.snapshot(),
	}
	if b := sp.bo; b != nil {
		ks.MakeFailures, ks.BackoffUntil = b.fails, b.until
	}
	return ks
}
