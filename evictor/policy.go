package evictor

import (
	"fmt"
	"time"
)

// Candidate is what a Policy knows of one idle object.
type Candidate struct {
	// Key is the object's key in its pool, of the pool's key type: for a
	// keyedpool.Pool[K, V], c.Key.(K) holds. Write the policy as a
	// KeyedPolicyFunc[K] to be handed the key as a K.
	Key any
	// Created is when the object was made.
	Created time.Time
	// LastBorrowed and LastReturned are when the object was last lent and
	// last given back (Created if never). A pool stamps them from a clock
	// it advances at each eviction run, rounded up to the next run, so they
	// may be later than the real moment by up to one run interval, never
	// earlier.
	LastBorrowed, LastReturned time.Time
	// IdleTime is how long the object has been idle: the run's time minus
	// LastReturned, never negative.
	IdleTime time.Duration
	// IdleCount is the number of spare objects of the key, this one
	// included: its idle objects and, in a pool with shared leases, its lent
	// objects that can take another borrower.
	IdleCount int
}

// Settings are the pool's eviction settings a Policy reads.
type Settings struct {
	// MinEvictableIdle: an object idle longer is evicted. Zero or negative:
	// never on idle time alone.
	MinEvictableIdle time.Duration
	// SoftMinEvictableIdle: an object idle longer is evicted while its key
	// has more than MinIdle spare objects (IdleCount). Zero or negative: off.
	SoftMinEvictableIdle time.Duration
	// MinIdle is the number of spare objects (as IdleCount counts them) a
	// pool keeps for each key.
	MinIdle int
}

// Policy decides whether an idle object is evicted. A pool calls it from its
// eviction run, without holding any lock, one object at a time; a Policy
// used by several pools must be safe for concurrent use.
type Policy interface {
	Evict(s Settings, c Candidate) bool
}

// PolicyFunc adapts a function to a Policy.
type PolicyFunc func(s Settings, c Candidate) bool

// Evict returns f(s, c).
func (f PolicyFunc) Evict(s Settings, c Candidate) bool { return f(s, c) }

// KeyedPolicyFunc adapts a function that reads the candidate's key with its
// type to a Policy, for a pool whose keys are of type K:
//
//	EvictionPolicy: evictor.KeyedPolicyFunc[string](func(s evictor.Settings, addr string, c evictor.Candidate) bool {
//		return strings.HasPrefix(addr, "canary.") && c.IdleTime > time.Minute
//	}),
//
// The key's type is checked when the policy runs, not when the pool is
// made (keyedpool.Config is not generic): Evict panics when handed a key
// that is not a K, which a pool of other keys reports as a swallowed error
// of the policy, keeping the object.
type KeyedPolicyFunc[K comparable] func(s Settings, key K, c Candidate) bool

// Evict returns f(s, c.Key.(K), c). A nil c.Key is the zero K, so that a
// pool whose key type is an interface can have a nil key.
func (f KeyedPolicyFunc[K]) Evict(s Settings, c Candidate) bool {
	key, ok := c.Key.(K)
	if !ok && c.Key != nil {
		panic(fmt.Sprintf("evictor: KeyedPolicyFunc[%s] handed key %v of type %T", fmt.Sprintf("%T", (*K)(nil))[1:], c.Key, c.Key))
	}
	return f(s, key, c)
}

// DefaultPolicy is commons-pool2's DefaultEvictionPolicy: an object is
// evicted when it has been idle longer than MinEvictableIdle, or longer than
// SoftMinEvictableIdle while its key has more than MinIdle spare objects
// (Candidate.IdleCount).
type DefaultPolicy struct{}

// Evict applies the rule above.
func (DefaultPolicy) Evict(s Settings, c Candidate) bool {
	if s.MinEvictableIdle > 0 && c.IdleTime > s.MinEvictableIdle {
		return true
	}
	return s.SoftMinEvictableIdle > 0 && c.IdleTime > s.SoftMinEvictableIdle && c.IdleCount > s.MinIdle
}
