package keyedpool

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/keyedpool/internal/evictsched"
	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
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

	// The fast paths' state; see lane.go.
	lanes atomic.Pointer[laneView]             // nil: lanes off
	index atomic.Pointer[map[K]*subPool[K, V]] // a copy of keys, for borrowFast; see indexLocked

	// idleSeqs is written by every Return, from every core: it has cache
	// lines of its own (128 bytes, for CPUs that fetch lines in pairs),
	// so that the fields above, which every Borrow and Return reads, and
	// the lock below stay in every core's cache. Without the padding a
	// parallel Borrow+Return over many keys costs 2.5 times as much on two
	// cores whenever the pool is laid out so that they share a line.
	_        [128]byte
	idleSeqs atomic.Uint64 // objects put in the idle set so far: their order there
	_        [120]byte

	dirtyMu sync.Mutex                // protects dirty; taken after a lane's mutex, never before one
	dirty   ilist.List[subPool[K, V]] // keys whose lanes hold objects or counts, through lane.links

	mu         sync.Mutex // protects the fields below. Nothing slow runs under it: no factory call, no I/O, no blocking send.
	lim        limits
	closed     bool
	isDrained  bool
	c          counters // pool-wide totals
	keys       map[K]*subPool[K, V]
	last       *subPool[K, V]           // in keys: the latest useLocked's, so that a run of calls on one key compares keys instead of hashing
	total      int                      // objects of all keys: idle, lent, being made or destroyed
	victims    int                      // of total: idle objects being destroyed whose room a reservation took
	retiring   int                      // of total: shared objects destroyed when their last lease comes back
	dying      int                      // of total: objects being destroyed (victims too): see doomLocked
	making     int                      // objects being made, all keys
	shares     int                      // leases out, all keys
	idle       ilist.List[object[K, V]] // idle objects of all keys, oldest first
	lent       ilist.List[object[K, V]] // shared mode with MaxLifetime: the objects in sub.lents, for the eviction run's lifetime sweep
	wq         waitQueue[K, V]          // blocked borrowers of all keys
	redispatch bool                     // a make or activation ended: unlock dispatches

	reg         *evictsched.Registration     // the evictor's schedule of this pool, or nil
	handClock   bool                         // no evictor, and RunEviction was called: stamp from the real clock
	clears      uint32                       // ClearAlls, so that an object under test learns of them
	clockStart  int64                        // when the pool's clock started to run; see clockRuns
	runs        int                          // eviction runs in flight
	evictNext   *object[K, V]                // in idle: where the next eviction run goes on; nil: the front
	lentNext    *object[K, V]                // in lent: where the next lifetime sweep goes on; nil: the front
	upkeep      []*subPool[K, V]             // keys with fewer than MinIdlePerKey spare objects, first queued first; may hold dropped ones
	lentLeases  ilist.List[leaseTrack[K, V]] // leases out, while abandoned objects are tracked
	backoffKeys int                          // keys in make backoff
	failing     []*subPool[K, V]             // the keys that have a makeBackoff, each at its makeBackoff's at
	laneCfg     *laneView                    // what lanes holds while on; nil: to be made afresh
	indexMisses int                          // keys used the slow way that index missed since it was made
	flushBuf    []*object[K, V]              // for flushes; empty between them
	flushKeys   []*subPool[K, V]             // for flushes; empty between them
}

// subPool is the part of a pool that belongs to one key. Its fields below
// pool are protected by the pool's mu.
type subPool[K comparable, V any] struct {
	key  K
	pool *Pool[K, V]

	c counters

	count   int // objects of this key: idle, lent, being made or destroyed
	making  int // objects being made
	placing int // of making: objects that join the pool when made (AddObject, Prepare, upkeep, a make its borrower gave up), which upkeep counts as spare
	// activating counts shared-mode objects being activated for their
	// first borrower, after which they take more.
	activating int
	retiring   int                        // shared mode: objects that take no lease and go when their last comes back
	dying      int                        // objects being destroyed, still counted: see doomLocked
	shares     int                        // leases out
	testing    int                        // idle objects under an eviction test, which stay in idle
	idle       ilist.List[object[K, V]]   // idle objects; the front is lent first
	lent       ilist.List[object[K, V]]   // shared mode: lent objects that may take more leases
	objs       ilist.List[object[K, V]]   // every object of the key, made and not yet destroyed
	waiters    ilist.List[waiter[K, V]]   // blocked borrowers of this key, by ticket; see waitQueue
	lineLinks  ilist.Links[subPool[K, V]] // in pool.wq.keys while waiters is not empty
	readyAt    int                        // 1 + its index in pool.wq.ready; 0: not there
	queued     atomic.Bool                // in pool.upkeep; written under mu, read by borrowFast without it
	clears     uint32                     // Clears of the key, so that an object under test learns of them
	// forgotten: Clear or ClearAll was called and no Borrow, AddObject or
	// Prepare since, so the key is dropped once it holds nothing even when
	// MinIdlePerKey would keep it.
	forgotten bool

	bo *makeBackoff // make failures in a row (Config.MakeFailureThreshold), or nil; see backoff.go

	// shareCap: the latest cap an object of the key learned, as ShareCap.v
	// (0: none learned; noCap: no cap). It sizes the shares objects on
	// their way will carry, and bounds objects that have learned none.
	shareCap int32

	idleN  atomic.Int32 // idle.Len(), for the fast paths: stored when it changes
	countN atomic.Int32 // count, likewise
	lane   lane[K, V]   // see lane.go
}

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
		wq:         newWaitQueue[K, V](),
		lentLeases: ilist.New(trackLinks[K, V]),
		dirty:      ilist.New(laneLinks[K, V]),
	}
	p.cfg.Store(&cfg)
	p.index.Store(new(map[K]*subPool[K, V]))
	p.closeCtx, p.closeMakes = context.WithCancel(context.Background())
	p.mu.Lock()
	p.advanceClockLocked(0)
	p.scheduleLocked(lim.every)
	p.unlock()
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
		p.reg = evictsched.Default.Schedule(every, evictRunner[K, V]{p})
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
			waiters: ilist.New(waiterLinks[K, V]),
		}
		sp.lane.objs = ilist.New(keyLinks[K, V])
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
	if sp.count != 0 || sp.waiters.Len() != 0 || p.keys[sp.key] != sp {
		return
	}
	if sp.bo != nil || (p.lim.minIdle > 0 && !sp.forgotten && !p.closed) {
		// Kept: with MinIdlePerKey, eviction runs make up its objects,
		// so it is queued for them (a Borrow that found no room, for
		// one, left it with none).
		p.wantUpkeepLocked(sp)
		return
	}
	p.dropLaneLocked(sp)
	delete(p.keys, sp.key) // if queued for upkeep, the run skips it
	if (*p.index.Load())[sp.key] == sp {
		p.indexStaleLocked() // so that the index lets go of it in time
	}
	if p.last == sp {
		p.last = nil
	}
}

// useLocked returns key's sub-pool for a caller that wants objects of it:
// a key Clear forgot is wanted again.
func (p *Pool[K, V]) useLocked(key K) *subPool[K, V] {
	sp := p.last
	if sp == nil || sp.key != key {
		sp = p.subLocked(key)
		p.last = sp
	}
	if sp.forgotten {
		sp.setForgotten(false)
	}
	return sp
}

// setForgotten sets sp.forgotten, which borrowFast reads under the lane's
// mutex. Called with the pool's mu held.
func (sp *subPool[K, V]) setForgotten(v bool) {
	sp.lane.mu.Lock()
	sp.forgotten = v
	sp.lane.mu.Unlock()
}

// fullLocked reports whether MaxTotal leaves no room for another object.
func (p *Pool[K, V]) fullLocked() bool { return p.total-p.victims >= p.lim.maxTotal }

// reserveLocked counts room for one object of sp that is about to be made.
func (p *Pool[K, V]) reserveLocked(sp *subPool[K, V]) {
	sp.count++
	sp.countN.Store(int32(sp.count))
	sp.making++
	p.total++
	p.making++
}

// madeLocked counts a make of sp as ended, made or not. Its key may take
// room now (see activatedLocked).
func (p *Pool[K, V]) madeLocked(sp *subPool[K, V]) {
	sp.making--
	p.making--
	p.wq.unpark(sp)
	p.redispatch = true
}

// activatedLocked counts a shared object of sp as no longer on its way to
// its first borrower: activated, given back or destroyed. sp's waiters may
// have waited for the objects on their way (tryLocked's soon) and may need
// room now: the key is unparked, and unlock dispatches before it releases
// the lock, whatever the rest of the locked section does.
func (p *Pool[K, V]) activatedLocked(sp *subPool[K, V]) {
	sp.activating--
	p.wq.unpark(sp)
	p.redispatch = true
}

// overLimitsLocked reports whether sp, or the pool, holds more objects
// than the limits allow, which only SetConfig lowering them leads to:
// objects that retire or are being destroyed already do not count.
func (p *Pool[K, V]) overLimitsLocked(sp *subPool[K, V]) bool {
	return sp.count-sp.retiring-sp.dying > p.lim.maxPerKey || p.total-p.dying-p.retiring > p.lim.maxTotal
}

// doomLocked marks obj, still counted in its key and the pool, as being
// destroyed, and counts it as dying until forgetLocked, so that limits
// lowered meanwhile count it as gone already.
func (p *Pool[K, V]) doomLocked(obj *object[K, V]) {
	if obj.state != stDestroy {
		obj.state = stDestroy
		obj.sub.dying++
		p.dying++
	}
}

// undoomLocked takes doomLocked back, for a victim whose room was not used
// after all: it is busy until put back.
func (p *Pool[K, V]) undoomLocked(obj *object[K, V]) {
	obj.state = stBusy
	obj.sub.dying--
	p.dying--
}

// unreserveLocked frees the room of one object of sp (destroyed, or never
// made) and serves the waiters it lets in.
func (p *Pool[K, V]) unreserveLocked(sp *subPool[K, V]) {
	sp.count--
	sp.countN.Store(int32(sp.count))
	p.total--
	p.roomFreedLocked(sp)
}

// roomFreedLocked serves the waiters that room freed in sp lets in, and
// does what else a key losing an object calls for.
func (p *Pool[K, V]) roomFreedLocked(sp *subPool[K, V]) {
	if p.wq.Len() > 0 {
		p.wq.unpark(sp) // it may be under MaxTotalPerKey now
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

// Keys returns the keys that have a sub-pool (see Stats.Keys), in no
// particular order.
func (p *Pool[K, V]) Keys() []K {
	p.mu.Lock()
	defer p.unlock()
	keys := make([]K, 0, len(p.keys))
	for k := range p.keys {
		keys = append(keys, k)
	}
	return keys
}

// Stats returns a snapshot of the whole pool.
func (p *Pool[K, V]) Stats() Stats {
	p.mu.Lock()
	p.flushLanesLocked()
	s := Stats{
		Closed:        p.closed,
		Keys:          len(p.keys),
		KeysInBackoff: p.backoffKeys,
		Gauges: Gauges{
			Active:      p.total - p.victims - p.idle.Len() - p.making,
			Idle:        p.idle.Len(),
			Making:      p.making,
			Waiters:     p.wq.Len(),
			SharesInUse: p.shares,
		},
	}
	s.Counters = p.c.snapshot()
	p.unlock()
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
	defer p.unlock()
	sp := p.keys[key]
	if sp == nil {
		return KeyStats{}
	}
	p.flushLaneLocked(sp)
	return sp.statsLocked()
}

// AllKeyStats returns a snapshot of every key's sub-pool, taken at one
// instant: the keys Keys would return, each with what KeyStats would. It
// holds the pool's lock while it copies, so it costs one map entry per key;
// metrics collectors call it once per scrape.
func (p *Pool[K, V]) AllKeyStats() map[K]KeyStats {
	p.mu.Lock()
	defer p.unlock()
	p.flushLanesLocked()
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
		ShareCap: int(max(sp.shareCap, 0)),
	}
	if b := sp.bo; b != nil {
		ks.MakeFailures, ks.BackoffUntil = b.fails, b.until
	}
	return ks
}
