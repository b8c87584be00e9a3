package keyedpool

import (
	"fmt"
	"math"
	"time"
)

// ExhaustedAction says what Borrow does when the limits leave no object to
// lend.
type ExhaustedAction int

const (
	// Block waits for an object, bounded by the context and MaxWait. It is
	// the zero value and commons-pool2's default.
	Block ExhaustedAction = iota
	// Fail returns ErrExhausted at once.
	Fail
)

// String returns "Block" or "Fail".
func (a ExhaustedAction) String() string {
	switch a {
	case Block:
		return "Block"
	case Fail:
		return "Fail"
	}
	return fmt.Sprintf("ExhaustedAction(%d)", int(a))
}

// Default limits, as in commons-pool2's GenericKeyedObjectPoolConfig.
const (
	DefaultMaxTotalPerKey = 8
	DefaultMaxIdlePerKey  = 8
)

// Config holds a pool's limits and behaviour. Every field's zero value is a
// safe documented default, so Config{} is valid; DefaultConfig returns the
// same settings spelled out. New and SetConfig refuse invalid values with an
// error that wraps ErrInvalidConfig and names the field.
type Config struct {
	// MaxTotal caps the objects of all keys together: idle, lent and being
	// made. Zero or negative: no limit (the default, as commons-pool2's -1).
	MaxTotal int

	// MaxTotalPerKey caps the objects of one key: idle, lent and being made.
	// Zero means the default, 8. Negative: no limit.
	MaxTotalPerKey int

	// MaxIdlePerKey caps the idle objects kept for one key; a returned object
	// beyond it is destroyed. Zero means the default, 8. Negative: no limit.
	MaxIdlePerKey int

	// MinIdlePerKey is the number of idle objects Prepare makes for a key
	// (and the evictor keeps). Default 0. It may not be negative nor exceed
	// MaxIdlePerKey or MaxTotalPerKey when those are limited.
	MinIdlePerKey int

	// WhenExhausted says whether Borrow blocks (Block, the zero value) or
	// fails at once with ErrExhausted (Fail) when no object can be lent.
	WhenExhausted ExhaustedAction

	// MaxWait bounds how long a blocked Borrow waits before it fails with
	// ErrExhausted. Zero: only the Borrow context bounds the wait (the
	// default). Negative is invalid.
	MaxWait time.Duration

	// FIFO lends idle objects in the order they were returned (oldest
	// first). False, the default, lends the most recently returned first
	// (LIFO, as commons-pool2), which keeps a small warm set busy and lets
	// the rest age out.
	FIFO bool

	// TestOnCreate validates every newly made object before it is lent or
	// kept; a failure destroys it and fails the Borrow with ErrValidation.
	TestOnCreate bool

	// TestOnBorrow validates an idle object before it is lent; a failure
	// destroys it and Borrow tries the next one.
	TestOnBorrow bool

	// TestOnReturn validates a returned object before it is kept idle; a
	// failure destroys it.
	TestOnReturn bool

	// TestWhileIdle validates idle objects from the evictor. Stored for the
	// evictor; no effect without one.
	TestWhileIdle bool

	// MaxSharesPerObject is how many borrowers may hold one object at once.
	// Zero means the default, 1: exclusive use, as commons-pool2. Above 1,
	// Borrow lends the least loaded object of a key that is under the cap,
	// and makes a new one only when all are at the cap (shared leases, for
	// multiplexed connections such as gRPC's). Negative is invalid. Fixed
	// when the pool is made: SetConfig refuses to change it.
	MaxSharesPerObject int
}

// DefaultConfig returns the default configuration: no total limit, 8 objects
// and 8 idle per key, none kept warm, Block without a MaxWait, LIFO, no
// tests, exclusive use.
func DefaultConfig() Config {
	return Config{
		MaxTotalPerKey:     DefaultMaxTotalPerKey,
		MaxIdlePerKey:      DefaultMaxIdlePerKey,
		MaxSharesPerObject: 1,
	}
}

// limits are a Config's caps as plain numbers: math.MaxInt means no limit.
type limits struct {
	maxTotal, maxPerKey, maxIdle, minIdle, maxShares int
}

// resolve fills in defaults and checks every field, returning the completed
// Config and its limits.
func (c Config) resolve() (Config, limits, error) {
	if c.MaxTotalPerKey == 0 {
		c.MaxTotalPerKey = DefaultMaxTotalPerKey
	}
	if c.MaxIdlePerKey == 0 {
		c.MaxIdlePerKey = DefaultMaxIdlePerKey
	}
	if c.MaxSharesPerObject == 0 {
		c.MaxSharesPerObject = 1
	}
	unlimited := func(n int) int {
		if n <= 0 {
			return math.MaxInt
		}
		return n
	}
	l := limits{
		maxTotal:  unlimited(c.MaxTotal),
		maxPerKey: unlimited(c.MaxTotalPerKey),
		maxIdle:   unlimited(c.MaxIdlePerKey),
		minIdle:   c.MinIdlePerKey,
		maxShares: c.MaxSharesPerObject,
	}
	switch {
	case c.MinIdlePerKey < 0:
		return c, l, fmt.Errorf("%w: MinIdlePerKey is %d, want 0 or more", ErrInvalidConfig, c.MinIdlePerKey)
	case c.MinIdlePerKey > l.maxIdle:
		return c, l, fmt.Errorf("%w: MinIdlePerKey %d exceeds MaxIdlePerKey %d", ErrInvalidConfig, c.MinIdlePerKey, c.MaxIdlePerKey)
	case c.MinIdlePerKey > l.maxPerKey:
		return c, l, fmt.Errorf("%w: MinIdlePerKey %d exceeds MaxTotalPerKey %d", ErrInvalidConfig, c.MinIdlePerKey, c.MaxTotalPerKey)
	case c.WhenExhausted != Block && c.WhenExhausted != Fail:
		return c, l, fmt.Errorf("%w: WhenExhausted is %v, want Block or Fail", ErrInvalidConfig, c.WhenExhausted)
	case c.MaxWait < 0:
		return c, l, fmt.Errorf("%w: MaxWait is %v, want 0 (bounded by the context only) or more", ErrInvalidConfig, c.MaxWait)
	case c.MaxSharesPerObject < 0:
		return c, l, fmt.Errorf("%w: MaxSharesPerObject is %d, want 1 or more (0 means 1)", ErrInvalidConfig, c.MaxSharesPerObject)
	}
	return c, l, nil
}
