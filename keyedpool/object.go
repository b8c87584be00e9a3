package keyedpool

import (
	"sync/atomic"
	"time"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

// objState is where an object is in its life. Every change happens under
// the pool's mu, except those of an object on its key's lane (lane.go),
// which happen under the lane's mutex. The main cycle, and the side tracks:
//
//	make ──► busy ──► idle ──► lent ──► busy ──► idle ...
//	        (new,  (passivated)   (returned: last lease back)
//	        held by its maker)
//	idle ◄──► testing            an eviction run's test (it stays in idle)
//	lent ──► broken ──► destroy  shared: invalidated or retired with leases out
//	any ──► destroy ──► gone     failed, surplus, cleared, closed, victim
//
// Transition by transition:
//
//	from     to       when                                         where
//	(new)    busy     made, in room reserved for it                runMake
//	busy     lent     lent to its maker; shared: activated         runMake, ready
//	busy     idle     passivated: new, or its last lease is back    putLocked
//	idle     lent     lent (exclusive)                             lendLocked
//	idle     lent     lent from its key's lane (exclusive)         borrowFast
//	idle     busy     lent (shared), until its borrower activates  lendLocked
//	idle     testing  an eviction run tests it                     evictOne
//	testing  idle     passed (or the run was cut short)            evictOne
//	lent     busy     shared: its last lease is back               giveBack
//	lent     idle     exclusive: returned and passivated           putLocked
//	lent     idle     the same, onto its key's lane                returnFast
//	lent     broken   shared: invalidated, past MaxLifetime or     retireLocked
//	                  surplus while other leases are out
//	broken   destroy  its last lease is back                       unretireLocked
//	*        destroy  a factory call failed, surplus, cleared,     doomLocked
//	                  closed, or its room handed to another key
//	destroy  busy     a victim whose room went unused, on its way  undoomLocked
//	                  back to idle
//	destroy  (gone)   Destroy called; its room is freed            forgetLocked
//
// A destroyed object's room is freed by destroyCtx, destroyVictim, or, for
// one its borrower could not use, by that borrower's next try
// (settleDiscardLocked), once it is back in line.
//
// The goroutine that moves an object to busy or destroy, or lends it in
// exclusive mode, holds it alone until it moves it on. In exclusive mode a
// returned object keeps stLent while its returner passivates it. Only idle
// and testing objects are in the idle lists, and only idle ones on the
// lanes (never in both), only shared lent ones in the lent lists, and
// every object until gone is in its key's objs list.
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
// protected by the pool's mu, and while the object goes onto or off its
// key's lane by the lane's mutex (see lane.go).
type object[K comparable, V any] struct {
	// Hot: what every Borrow and Return reads or writes, together.
	sub       *subPool[K, V]
	value     V
	keyLinks  ilist.Links[object[K, V]] // in sub.idle or sub.lent
	allLinks  ilist.Links[object[K, V]] // in pool.idle or pool.lent
	state     objState
	brokenWhy reason // stBroken: why it will be destroyed
	// idleCounted: its lend from the idle set counted an idle span, to be
	// taken back if it goes back unused; cleared when it goes idle again.
	idleCounted bool
	// evictPending: it left the idle set as the eviction runs' next
	// object, not looked at: should it go back unused, the cursor moves
	// back to it (see putLocked). Cleared when it goes idle again.
	evictPending bool
	shares       int32
	cap          *ShareCap     // shared mode: the value's own share cap (ShareCapper), or nil
	free         *Pooled[K, V] // leases not in use, linked by next
	borrows      int64         // leases taken
	idleSeq      uint64        // when it last went into the idle set, in pool.idleSeqs: its place there
	// Stamps in nanoseconds since the pool's epoch. created reads the real
	// clock; the others the pool's clock (see clock.go). activeSince is
	// when the object last left the idle set (or was made) to be lent.
	lastBorrowed, lastReturned, activeSince int64
	lease                                   Pooled[K, V] // the first lease, so exclusive use allocates none

	// Cold: read at make, destroy, eviction or on request.
	created int64
	// prevBorrowed: lastBorrowed before the latest lend, which
	// unleaseLocked puts back if that lend is undone, keeping the undone
	// lend's stamp here instead.
	prevBorrowed int64
	jitter       uint32                    // this object's share of MaxLifetimeJitter, out of 1<<32
	objLinks     ilist.Links[object[K, V]] // in sub.objs
	rctx         returnCtx[K, V]           // the context of Passivate and Validate at Return
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
	next   *Pooled[K, V] // in obj.free; protected as obj's fields are
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

// take takes a lease of o's own: a handle from o.free, or a new one, and
// counts it in o. Called by whoever guards o's fields (see object).
func (o *object[K, V]) take() *Pooled[K, V] {
	h := o.free
	if h != nil {
		o.free = h.next
		h.next = nil
	} else {
		h = &Pooled[K, V]{obj: o}
	}
	o.shares++
	o.borrows++
	return h
}

// putBack puts h, a lease of o, back into o.free and uncounts it.
func (o *object[K, V]) putBack(h *Pooled[K, V]) {
	h.next = o.free
	o.free = h
	o.shares--
}

// leaseLocked takes a lease on obj.
func (p *Pool[K, V]) leaseLocked(obj *object[K, V]) *Pooled[K, V] {
	h := obj.take()
	obj.sub.shares++
	p.shares++
	p.c.borrowed++
	obj.sub.c.borrowed++
	obj.prevBorrowed, obj.lastBorrowed = obj.lastBorrowed, p.stampLocked(obj)
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
	obj.putBack(h)
	if t := h.track; t != nil && t.links.In() {
		p.lentLeases.Remove(t)
		t.stack = nil
	}
	obj.sub.shares--
	p.shares--
	if returned {
		p.c.returned++
		obj.sub.c.returned++
	} else {
		p.c.borrowed--
		obj.sub.c.borrowed--
		obj.borrows--
		// LastBorrowed goes back to what it was, as if never lent; the
		// lend's stamp stays in prevBorrowed, for putLocked.
		obj.lastBorrowed, obj.prevBorrowed = obj.prevBorrowed, obj.lastBorrowed
	}
	return obj.shares == 0
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
	p.doomLocked(obj)
	obj.sub.retiring--
	p.retiring--
}

// ObjectState is where a pooled object is in its life, as ListObjects
// reports it.
type ObjectState uint8

const (
	// ObjectIdle: in the idle set, ready to be lent.
	ObjectIdle ObjectState = iota
	// ObjectTesting: idle, under an eviction run's test; not lent until it
	// ends.
	ObjectTesting
	// ObjectLent: lent to Shares borrowers.
	ObjectLent
	// ObjectBusy: held for a factory call on its way between states:
	// activated for a borrower, passivated or validated after a return,
	// or passivated after being made.
	ObjectBusy
	// ObjectRetiring: with shared leases, invalidated or past MaxLifetime;
	// it takes no new lease and is destroyed when its last one comes back.
	ObjectRetiring
	// ObjectDestroying: being destroyed.
	ObjectDestroying
)

// String returns the state's name in lower case, as "idle".
func (s ObjectState) String() string {
	switch s {
	case ObjectIdle:
		return "idle"
	case ObjectTesting:
		return "testing"
	case ObjectLent:
		return "lent"
	case ObjectBusy:
		return "busy"
	case ObjectRetiring:
		return "retiring"
	case ObjectDestroying:
		return "destroying"
	}
	return "unknown"
}

// ObjectInfo describes one pooled object at one instant, as commons-pool2's
// listAllObjects does.
type ObjectInfo struct {
	State ObjectState
	// Created is when the object was made (the real clock).
	Created time.Time
	// LastBorrowed and LastReturned are when it was last lent and last
	// went idle (Created if never), on the pool's clock: later than the
	// real moment by up to one TimeBetweenEvictionRuns, and equal to
	// Created while the clock does not run (see Counters.ActiveTime).
	LastBorrowed, LastReturned time.Time
	// BorrowCount is the number of leases the object has given.
	BorrowCount int64
	// Shares is the number of leases held now.
	Shares int
	// ShareCap is the cap the object has learned on its shares (see
	// ShareCap): 0 if it has none or has not learned one.
	ShareCap int
}

// ListObjects returns a snapshot of every object of key that has been made
// and not yet destroyed, oldest first; nil for a key the pool does not hold
// (or cannot: see ErrInvalidKey). It takes the pool's lock for as long as it
// copies, and costs the Borrow and Return paths nothing; it is meant for
// operators and tests, not for every request. Safe for concurrent use.
func (p *Pool[K, V]) ListObjects(key K) []ObjectInfo {
	if p.checkKey(key) != nil {
		return nil
	}
	p.mu.Lock()
	defer p.unlock()
	sp := p.keys[key]
	if sp == nil || sp.objs.Len() == 0 {
		return nil
	}
	// The key's lane's mutex is held while the objects are read: a fast
	// Return writes a lent object's stamps under it alone.
	p.flushLaneLocked(sp)
	sp.lane.mu.Lock()
	defer sp.lane.mu.Unlock()
	out := make([]ObjectInfo, 0, sp.objs.Len())
	cfg := p.cfg.Load()
	now := p.floorNow(cfg)
	for o := sp.objs.Front(); o != nil; o = sp.objs.Next(o) {
		state := o.publicState()
		if p.shared && state == ObjectLent && cfg.MaxLifetime > 0 && p.expired(o, cfg, now) {
			// It takes no new lease (lendLocked retires it when one is
			// asked of it), as a retiring object.
			state = ObjectRetiring
		}
		out = append(out, ObjectInfo{
			State:        state,
			Created:      p.at(o.created),
			LastBorrowed: p.at(o.lastBorrowed),
			LastReturned: p.at(o.lastReturned),
			BorrowCount:  o.borrows,
			Shares:       int(o.shares),
			ShareCap:     o.shareCapNow(),
		})
	}
	return out
}

func (o *object[K, V]) shareCapNow() int {
	if o.cap == nil {
		return 0
	}
	return o.cap.Load()
}

func (o *object[K, V]) publicState() ObjectState {
	switch o.state {
	case stIdle:
		return ObjectIdle
	case stTesting:
		return ObjectTesting
	case stLent:
		return ObjectLent
	case stBroken:
		return ObjectRetiring
	case stDestroy:
		return ObjectDestroying
	}
	return ObjectBusy
}
