package keyedpool

import "time"

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
	defer p.mu.Unlock()
	sp := p.keys[key]
	if sp == nil || sp.objs.Len() == 0 {
		return nil
	}
	out := make([]ObjectInfo, 0, sp.objs.Len())
	for o := sp.objs.Front(); o != nil; o = sp.objs.Next(o) {
		out = append(out, ObjectInfo{
			State:        o.publicState(),
			Created:      p.at(o.created),
			LastBorrowed: p.at(o.lastBorrowed),
			LastReturned: p.at(o.lastReturned),
			BorrowCount:  o.borrows,
			Shares:       int(o.shares),
		})
	}
	return out
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
