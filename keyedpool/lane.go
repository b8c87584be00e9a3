package keyedpool

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

// Lanes: Borrow and Return of one key without the pool's lock.
//
// In exclusive mode, while nobody waits and the pool is below MaxTotal, a
// Return puts the object on its key's lane, a short stack of idle objects
// under a mutex of the key's own, and a Borrow takes it from there. Neither
// touches the pool's mu, its lists or its counters, so borrowers of
// different keys do not contend: each key's lane is in the key's own
// sub-pool, under its own lock, and the only pool-wide word a Return
// writes is the sequence
// number that orders idle objects across keys (an atomic add; a Borrow
// writes none). Anything the lanes cannot decide alone goes the pool-wide
// way, under mu: a key with no object on its lane, waiters anywhere, a
// full pool, a key at MaxIdlePerKey, a failed passivation, FIFO order with
// older idle objects in the idle lists, shared leases, abandoned-object
// tracking, a closed pool.
//
// The invariants that make this safe:
//
//   - A lane's objects are idle (stIdle), counted in their key's count and
//     the pool's total as idle objects are, but are in neither idle list.
//     Every one went onto the lane after every object in its key's idle
//     list went into it, so the lane is the newest end of the key's idle
//     order, and LIFO takes from the lane's back.
//   - Lanes are on (pool.lanes holds the view fast paths read) only while
//     laneWantLocked holds; unlock turns them off at the end of the section
//     that adds the first waiter or fills the pool, and moves every lane's
//     objects into the idle lists in their order (flushLanesLocked) before
//     it releases mu, serving the waiters they let in. So whoever waits
//     sees every idle object, and no object is lent past a waiter.
//   - A fast path decides under its lane's mutex, reading pool.lanes there.
//     A Return registers its lane in pool.dirty before it reads pool.lanes
//     a second time, and writes nothing if lanes went off meanwhile; a
//     lane that holds objects is always registered. So the flush that
//     turns lanes off locks every lane a fast path may be in, waits for it,
//     and finds what it left: once lanes are off, no fast path runs, and
//     every object's fields are the locked sections' again.
//   - What the pool-wide code reads of a key goes through mu and the lane:
//     the code that reads idle lists or counters flushes the lanes first
//     (one key: a Borrow or Return that goes the slow way, KeyStats,
//     ListObjects, Clear; all: Stats, eviction runs, ClearOldest, SetConfig,
//     Close). Counts it needs without flushing (spare objects for upkeep,
//     the key's idle count for MaxIdlePerKey) read the atomic lengths.
//   - Lock order: mu, then a lane, then dirtyMu. A fast path never takes
//     mu while it holds its lane. A key dropped from the pool leaves
//     pool.dirty with it (dropLaneLocked), so one-off keys do not pile up
//     there.
//
// Scaling: with lanes on, a Borrow+Return pair costs two uncontended lane
// locks in the key's own sub-pool, a lookup in the shared key index and a
// read of pool.lanes (read-mostly lines, which every core keeps in its
// cache), and one atomic add on the shared sequence number, which has
// cache lines of its own. The add is the one write to a line all cores
// share: one instruction, not a lock held across list updates, so more
// cores add throughput until that line's transfer rate, some tens of
// millions of Returns a second, is reached.

// lane is a key's idle objects returned on the fast path, and the counts
// its fast paths kept, not yet added to the key's and the pool's.
type lane[K comparable, V any] struct {
	mu    sync.Mutex
	objs  ilist.List[object[K, V]]   // oldest first, through keyLinks
	n     atomic.Int32               // objs.Len(), for readers under the pool's mu alone
	dirty bool                       // in pool.dirty, or taken out by a flushLanesLocked that has yet to drain it
	links ilist.Links[subPool[K, V]] // in pool.dirty; protected by pool.dirtyMu
	c     laneCounts
}

func laneLinks[K comparable, V any](sp *subPool[K, V]) *ilist.Links[subPool[K, V]] {
	return &sp.lane.links
}

// laneCounts is what fast paths counted, to be added to the key's and the
// pool's counters when the lane is flushed.
type laneCounts struct {
	borrowed, returned                     int64
	idleNanos, idles, activeNanos, actives int64
	leases                                 int
}

// addLane adds what a lane counted to c.
func (c *counters) addLane(l *laneCounts) {
	c.borrowed += l.borrowed
	c.returned += l.returned
	c.idleNanos += l.idleNanos
	c.idles += l.idles
	c.activeNanos += l.activeNanos
	c.actives += l.actives
}

// laneView is what the fast paths read of the pool's settings, made under
// mu and replaced (through pool.lanes) when they change.
type laneView struct {
	maxIdle, minIdle, maxPerKey int
	fifo                        bool
	every                       bool  // an evictor runs: stamp from the pool's clock
	hand                        bool  // RunEviction by hand: stamp from the real clock
	clockStart                  int64 // see Pool.clockStart
}

// laneStamp is stampLocked for a fast path, from v.
func (p *Pool[K, V]) laneStamp(v *laneView, obj *object[K, V]) int64 {
	switch {
	case v.hand:
		return max(p.since(), obj.created)
	case !v.every:
		return obj.created
	}
	return max(p.clock.Load(), obj.created)
}

// laneWantLocked reports whether the fast paths may run.
func (p *Pool[K, V]) laneWantLocked() bool {
	return !p.shared && !p.closed && !p.lim.abandoned && p.wq.Len() == 0 && !p.fullLocked()
}

// lanesLocked turns the lanes on or off as laneWantLocked says, at the end
// of a locked section (see unlock). Turning them off flushes them and
// serves the waiters of the keys whose objects they held.
func (p *Pool[K, V]) lanesLocked() {
	want := p.laneWantLocked()
	if on := p.lanes.Load() != nil; on == want {
		return
	}
	if !want {
		p.lanes.Store(nil)
		p.flushLanesLocked()
		return
	}
	if p.laneCfg == nil {
		cfg := p.cfg.Load()
		p.laneCfg = &laneView{
			maxIdle:    p.lim.maxIdle,
			minIdle:    p.lim.minIdle,
			maxPerKey:  p.lim.maxPerKey,
			fifo:       cfg.FIFO,
			every:      p.lim.every > 0,
			hand:       p.handClock,
			clockStart: p.clockStart,
		}
	}
	p.lanes.Store(p.laneCfg)
}

// quiesceLanesLocked turns the lanes off and flushes them, for a section
// that changes what they read (settings, the clock) or walks every object:
// once it returns, no fast path runs until unlock turns them on again,
// with a view made afresh.
func (p *Pool[K, V]) quiesceLanesLocked() {
	p.lanes.Store(nil)
	p.laneCfg = nil
	p.flushLanesLocked()
}

// borrowFast lends an object of key from its lane, or returns nil for the
// caller to go the pool-wide way. The object is fresh: its borrower
// activates it. A borrower it lends to without a place in line gets one in
// b (see waitQueue.laneTicket).
func (p *Pool[K, V]) borrowFast(key K, b *borrowState[K, V]) *Pooled[K, V] {
	if p.lanes.Load() == nil {
		return nil
	}
	sp := (*p.index.Load())[key]
	if sp == nil {
		return nil
	}
	l := &sp.lane
	l.mu.Lock()
	v := p.lanes.Load()
	if v == nil || sp.forgotten || (v.fifo && sp.idleN.Load() != 0) {
		// Off; or a key Clear forgot, which the slow way marks wanted; or
		// older idle objects come first.
		l.mu.Unlock()
		return nil
	}
	obj := l.objs.Back()
	if v.fifo {
		obj = l.objs.Front()
	}
	if obj == nil {
		l.mu.Unlock()
		return nil
	}
	if b.ticket == 0 {
		b.ticket = p.wq.laneTicket()
	}
	l.objs.Remove(obj)
	left := l.n.Add(-1)
	obj.state = stLent
	h := obj.take()
	l.c.leases++
	l.c.borrowed++
	obj.prevBorrowed, obj.lastBorrowed = obj.lastBorrowed, p.laneStamp(v, obj)
	obj.activeSince = obj.lastBorrowed
	if obj.idleCounted = v.every || v.hand; obj.idleCounted { // the clock runs: see clockRuns
		l.c.idleNanos += obj.lastBorrowed - max(obj.lastReturned, v.clockStart)
		l.c.idles++
	}
	// A key left short of MinIdlePerKey is queued for upkeep, under mu:
	// only the first time, until the next eviction run takes it.
	upkeep := v.minIdle > 0 && int(left)+int(sp.idleN.Load()) < v.minIdle && !sp.queued.Load()
	l.mu.Unlock()
	if upkeep {
		p.mu.Lock()
		p.wantUpkeepLocked(sp)
		p.unlock()
	}
	return h
}

// returnFast puts the object of h, passivated, on its key's lane, and
// reports whether it did; if not, the caller goes the pool-wide way, and
// nothing has changed.
func (p *Pool[K, V]) returnFast(h *Pooled[K, V]) bool {
	if p.lanes.Load() == nil {
		return false
	}
	if t := h.track; t != nil && t.links.In() {
		return false // lent while abandoned objects were tracked: unleaseLocked untracks it
	}
	obj := h.obj
	sp := obj.sub
	l := &sp.lane
	l.mu.Lock()
	v := p.lanes.Load()
	if v == nil || int(l.n.Load())+int(sp.idleN.Load()) >= v.maxIdle || int(sp.countN.Load()) > v.maxPerKey {
		// Lanes off, or the key at MaxIdlePerKey, or over a
		// MaxTotalPerKey SetConfig lowered: putLocked decides.
		l.mu.Unlock()
		return false
	}
	if !l.dirty {
		l.dirty = true
		p.dirtyMu.Lock()
		p.dirty.PushBack(sp)
		p.dirtyMu.Unlock()
		if p.lanes.Load() == nil {
			// Turned off since: the flush may have passed this lane.
			l.mu.Unlock()
			return false
		}
	}
	obj.putBack(h)
	l.c.leases--
	l.c.returned++
	obj.state = stIdle
	obj.idleSeq = p.idleSeqs.Add(1)
	obj.idleCounted, obj.evictPending = false, false // as putLocked: a new idle span
	obj.lastReturned = p.laneStamp(v, obj)
	if (v.every || v.hand) && obj.borrows > 0 {
		l.c.activeNanos += obj.lastReturned - max(obj.activeSince, v.clockStart)
		l.c.actives++
	}
	l.objs.PushBack(obj)
	l.n.Add(1)
	l.mu.Unlock()
	return true
}

// drainLaneLocked moves sp's lane into the idle lists, its objects as the
// newest of the key's, and adds its counts to the key's and the pool's.
// Called with mu and the lane's mu held. The objects are appended to
// p.flushBuf, for the caller to put into the pool's idle list.
func (p *Pool[K, V]) drainLaneLocked(sp *subPool[K, V]) (moved bool) {
	l := &sp.lane
	if c := &l.c; *c != (laneCounts{}) {
		p.c.addLane(c)
		sp.c.addLane(c)
		p.shares += c.leases
		sp.shares += c.leases
		*c = laneCounts{}
	}
	if l.objs.Len() == 0 {
		return false
	}
	fifo := p.cfg.Load().FIFO
	for o := l.objs.PopFront(); o != nil; o = l.objs.PopFront() {
		if fifo {
			sp.idle.PushBack(o)
		} else {
			sp.idle.PushFront(o)
		}
		p.flushBuf = append(p.flushBuf, o)
	}
	l.n.Store(0)
	sp.idleN.Store(int32(sp.idle.Len()))
	return true
}

// flushLaneLocked flushes sp's lane, for a section that reads the key's
// idle objects or counters. Called with mu held.
func (p *Pool[K, V]) flushLaneLocked(sp *subPool[K, V]) {
	sp.lane.mu.Lock()
	p.drainLaneLocked(sp)
	sp.lane.mu.Unlock()
	p.mergeIdleLocked()
}

// dropLaneLocked flushes the lane of sp, a key being dropped, and takes it
// out of pool.dirty, so that nothing keeps the dropped sub-pool. Called
// with mu held.
func (p *Pool[K, V]) dropLaneLocked(sp *subPool[K, V]) {
	l := &sp.lane
	l.mu.Lock()
	p.drainLaneLocked(sp) // its counts; it holds no object
	if l.dirty {          // then it is in pool.dirty: only flushLanesLocked takes lanes out, under mu too
		p.dirtyMu.Lock()
		p.dirty.Remove(sp)
		p.dirtyMu.Unlock()
		l.dirty = false
	}
	l.mu.Unlock()
}

// flushLanesLocked flushes every lane that holds objects or counts, and
// serves the waiters of the keys whose objects it moved (there are some
// only when lanes were just turned off). Called with mu held.
func (p *Pool[K, V]) flushLanesLocked() {
	keys := p.flushKeys[:0]
	p.dirtyMu.Lock()
	for sp := p.dirty.PopFront(); sp != nil; sp = p.dirty.PopFront() {
		keys = append(keys, sp)
	}
	p.dirtyMu.Unlock()
	if len(keys) == 0 {
		return
	}
	moved := keys[:0]
	for _, sp := range keys {
		l := &sp.lane
		l.mu.Lock()
		l.dirty = false
		if p.drainLaneLocked(sp) {
			moved = append(moved, sp)
		}
		l.mu.Unlock()
	}
	clear(keys[len(moved):])
	slices.SortFunc(p.flushBuf, func(a, b *object[K, V]) int {
		switch {
		case a.idleSeq < b.idleSeq:
			return -1
		case a.idleSeq > b.idleSeq:
			return 1
		}
		return 0
	})
	p.mergeIdleLocked()
	if p.wq.Len() > 0 {
		for _, sp := range moved {
			p.serveIdleLocked(sp)
		}
	}
	clear(moved)
	p.flushKeys = moved[:0]
}

// mergeIdleLocked puts the objects in p.flushBuf, in ascending idleSeq,
// into the pool's idle list at their places by idleSeq, and empties it.
// They were returned lately, so it walks from the back.
//
// An object that lands behind the eviction runs' cursor was returned
// after the last run began (each run flushes the lanes first), so had it
// gone into the list when returned it would have been ahead of the
// cursor: the cursor moves back to the oldest such object, and the next
// run looks at it before going on. (A cursor about to pass the newest
// object in the idle list has the lanes flushed first: see unidleLocked.) The objects it passes again are those
// the last run looked at after it; a run looks at no more than
// NumTestsPerEvictionRun.
func (p *Pool[K, V]) mergeIdleLocked() {
	at := p.idle.Back() // the objects after it are later than those left to place
	var behind *object[K, V]
	for i := len(p.flushBuf) - 1; i >= 0; i-- {
		o := p.flushBuf[i]
		if p.evictNext != nil && o.idleSeq < p.evictNext.idleSeq {
			behind = o
		}
		for at != nil && at.idleSeq > o.idleSeq {
			at = p.idle.Prev(at)
		}
		switch next := (*object[K, V])(nil); {
		case at == nil:
			p.idle.PushFront(o)
		default:
			if next = p.idle.Next(at); next != nil {
				p.idle.InsertBefore(o, next)
			} else {
				p.idle.PushBack(o)
			}
		}
	}
	if behind != nil {
		p.evictNext = behind
	}
	clear(p.flushBuf)
	p.flushBuf = p.flushBuf[:0]
}

// indexLocked keeps the key index that borrowFast reads in step with
// p.keys, for sp, a key just used the pool-wide way. The index is a copy
// of p.keys, made again once the keys it misses or holds stale reach a
// quarter of p.keys, so that its cost per new key is O(1) amortised; until
// then a key it misses goes the pool-wide way.
func (p *Pool[K, V]) indexLocked(sp *subPool[K, V]) {
	if (*p.index.Load())[sp.key] != sp {
		p.indexStaleLocked()
	}
}

// indexStaleLocked counts a key the index misses or holds stale (dropped
// from p.keys), and makes the index again once they reach a quarter of
// p.keys.
func (p *Pool[K, V]) indexStaleLocked() {
	if p.indexMisses++; p.indexMisses < len(p.keys)/4+1 {
		return
	}
	p.indexMisses = 0
	m := maps.Clone(p.keys)
	p.index.Store(&m)
}
