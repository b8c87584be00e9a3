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
// The zero value is a cap not known (yet): the object then takes the latest
// cap another object of its key learned, if one did, or else
// MaxSharesPerObject alone bounds it. Set and Load are safe for concurrent use, cost an atomic
// operation, and may be called from any goroutine at any time: before the
// pool has the object, while it lends it, and after it is destroyed (then
// they change nothing in the pool). A ShareCap belongs to one object in one
// pool.
type ShareCap struct {
	n      atomic.Int32                  // the cap; 0: not known
	change atomic.Pointer[func(up bool)] // set by the pool while it holds the object
}

// Set sets the cap to n leases. n of 0 or less means not known (see
// ShareCap); n above math.MaxInt32 counts as math.MaxInt32.
func (c *ShareCap) Set(n int) {
	n = min(max(n, 0), math.MaxInt32)
	old := int(c.n.Swap(int32(n)))
	if old == n {
		return
	}
	if f := c.change.Load(); f != nil {
		(*f)(n == 0 || (old != 0 && n > old))
	}
}

// Load returns the cap: 0 if not known.
func (c *ShareCap) Load() int { return int(c.n.Load()) }

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
// bounds them, and an object that has not learned one takes every borrower
// of its key.
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
	if n := c.n.Load(); n > 0 {
		obj.sub.shareCap = n
	}
	f := func(up bool) { p.shareCapChanged(obj, up) }
	c.change.Store(&f)
}

// dropShareCap stops the pool following obj's cap: obj is being destroyed.
func dropShareCap[K comparable, V any](obj *object[K, V]) {
	if obj.cap != nil {
		obj.cap.change.Store(nil)
	}
}

// shareCapChanged follows a change of obj's cap: the key's latest known
// cap, which sizes the shares its objects on their way will take, is now
// obj's, and a cap that rose may serve waiters.
func (p *Pool[K, V]) shareCapChanged(obj *object[K, V], up bool) {
	p.mu.Lock()
	sp := obj.sub
	if n := obj.cap.n.Load(); n > 0 {
		sp.shareCap = n
	}
	if up && !p.closed {
		p.wq.unpark(sp)
		p.redispatch = true
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
	n := obj.cap.n.Load()
	if n == 0 {
		n = obj.sub.shareCap // a new connection, say, not yet told by its server
	}
	if n > 0 && n < lim {
		lim = n
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
