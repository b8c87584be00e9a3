package keyedpool

import (
	"math"
	"sync/atomic"
)

// ShareCap is how many leases one pooled object can carry at once, as the
// object itself learns it while it lives: for a gRPC connection, the
// concurrent streams its server allows, which the server may change. A
// value that implements ShareCapper hands the pool its ShareCap, and the
// pool then lends that object at most min(MaxSharesPerObject, cap) shares,
// making another object (within MaxTotalPerKey and MaxTotal) when every
// object of the key is at its cap. A cap that rises lets waiting borrowers
// take the new room at once; one that falls lets the shares already lent
// run to their end and lends no more until they are under it.
//
// A ShareCap is in one of three states: not known, the zero value (the
// object has not learned yet: it takes the latest cap or absence of one
// that its key's objects learned, and MaxSharesPerObject if none did); no
// cap (Set with 0 or less: MaxSharesPerObject alone bounds the object); or
// a cap of n (Set with n). Set and Load are safe for concurrent use, cost
// an atomic operation, and may be called from any goroutine at any time:
// before the pool has the object, while it lends it, and after it is
// destroyed (then they change nothing in the pool). A ShareCap belongs to
// one object in one pool.
type ShareCap struct {
	// v is the cap: 0 not known, noCap for none, or n > 0.
	v      atomic.Int32
	change atomic.Pointer[func()] // set by the pool while it holds the object
}

// noCap is ShareCap.v for an object that has learned it has no cap.
const noCap = -1

// Set sets the cap to n leases; n of 0 or less means the object has no cap
// of its own, and n above math.MaxInt32 counts as math.MaxInt32.
func (c *ShareCap) Set(n int) {
	v := int32(noCap)
	if n > 0 {
		v = int32(min(n, math.MaxInt32))
	}
	if c.v.Swap(v) == v {
		return
	}
	if f := c.change.Load(); f != nil {
		(*f)()
	}
}

// Load returns the cap: 0 if the object has none or has not learned it.
func (c *ShareCap) Load() int { return int(max(c.v.Load(), 0)) }

// ShareCapper is implemented by pooled values that learn their own share
// cap (grpcpool.Client is one). The pool calls ShareCap once, after Make
// succeeds and before the object is lent; nil means the value has none. A
// panic in it is contained like one in a factory method: the object is
// then destroyed and its room freed. Only pools with shared leases
// (MaxSharesPerObject above 1) use it.
type ShareCapper interface {
	ShareCap() *ShareCap
}

// MaxShares is the largest MaxSharesPerObject: no bound of the pool's own on
// an object's shares, so that the cap each object learns (ShareCap) alone
// bounds them, and an object with no cap (nor one learned from its key)
// takes every borrower of its key.
const MaxShares = math.MaxInt32

// shareCapOf returns v's ShareCap, if v has one and the pool lends shares.
// It calls user code: never under the lock.
func (p *Pool[K, V]) shareCapOf(v V) (c *ShareCap, err error) {
	if !p.shared {
		return nil, nil
	}
	sc, ok := any(v).(ShareCapper)
	if !ok {
		return nil, nil
	}
	returned := false
	defer func() {
		if !returned {
			err = caught("ShareCap", recover(), err)
		}
	}()
	c = sc.ShareCap()
	returned = true
	return c, nil
}

// adoptShareCapLocked makes obj's cap the pool's to follow.
func (p *Pool[K, V]) adoptShareCapLocked(obj *object[K, V], c *ShareCap) {
	obj.cap = c
	f := func() { p.shareCapChanged(obj) }
	c.change.Store(&f)
	// Read after the hook is in place: a Set before it is seen here, one
	// after it calls the hook, which waits for mu.
	if v := c.v.Load(); v != 0 {
		p.keyCapLocked(obj.sub, v)
	}
}

// keyCapLocked makes v (a ShareCap.v other than 0) sp's latest cap. With
// WhenExhausted Fail, the borrowers waiting for sp's objects on their way
// were let wait for as many shares as the cap known then promised: those
// the new one leaves without a share fail now, as they would have at once.
func (p *Pool[K, V]) keyCapLocked(sp *subPool[K, V], v int32) {
	old := p.keySharesLocked(sp)
	sp.shareCap = v
	if p.keySharesLocked(sp) < old && p.cfg.Load().WhenExhausted == Fail {
		p.serveKeyLocked(sp)
		p.failBeyondSoonLocked(sp)
	}
}

// dropShareCap stops the pool following obj's cap: obj is being destroyed.
func dropShareCap[K comparable, V any](obj *object[K, V]) {
	if obj.cap != nil {
		obj.cap.change.Store(nil)
	}
}

// shareCapChanged follows a change of obj's cap. The key's latest cap,
// which sizes the shares its objects on their way will take and bounds
// those that have learned none, is now obj's. A cap that rose frees shares
// for the key's waiters, served here as by any event that frees a share;
// one that fell may leave the key short of spares (upkeep) and, with
// WhenExhausted Fail, waiters more than the objects on their way will take
// (keyCapLocked fails them).
func (p *Pool[K, V]) shareCapChanged(obj *object[K, V]) {
	p.mu.Lock()
	if obj.state == stDestroy {
		p.unlock() // on its way out: it speaks for its key no more
		return
	}
	sp := obj.sub
	if v := obj.cap.v.Load(); v != 0 {
		p.keyCapLocked(sp, v)
	}
	if !p.closed {
		p.wantUpkeepLocked(sp)
		p.wq.unpark(sp)
		p.redispatch = true
		p.serveKeyLocked(sp)
	}
	p.unlock()
}

// shareLimit is how many leases obj may carry now: its own cap, or while
// it has learned none the latest its key's objects learned, within
// MaxSharesPerObject.
func (p *Pool[K, V]) shareLimit(obj *object[K, V]) int32 {
	lim := int32(p.lim.maxShares)
	if obj.cap == nil {
		return lim
	}
	v := obj.cap.v.Load()
	if v == 0 {
		v = obj.sub.shareCap // a new connection, say, not yet told by its server
	}
	if v > 0 && v < lim {
		lim = v
	}
	return lim
}

// keySharesLocked is how many leases each object of sp on its way is
// expected to carry: MaxSharesPerObject, or less if the key's objects have
// learned a lower cap.
func (p *Pool[K, V]) keySharesLocked(sp *subPool[K, V]) int {
	if sp.shareCap > 0 && int(sp.shareCap) < p.lim.maxShares {
		return int(sp.shareCap)
	}
	return p.lim.maxShares
}
