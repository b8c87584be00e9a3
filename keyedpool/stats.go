package keyedpool

import "time"

// Stats is a snapshot of a whole pool, gauges and counters read together.
type Stats struct {
	// Closed reports whether Close has been called; a closed pool lends
	// nothing.
	Closed bool
	// Keys is the number of keys that have a sub-pool: ones that hold
	// objects or have waiters, whose makes are failing, or that
	// MinIdlePerKey keeps (see Config.MinIdlePerKey).
	Keys int
	// KeysInBackoff is the number of keys whose makes failed
	// MakeFailureThreshold times in a row and have not succeeded since.
	KeysInBackoff int
	Gauges
	Counters
}

// KeyStats is a snapshot of one key's sub-pool. A key's counters start when
// its sub-pool is made and are forgotten when the sub-pool is dropped
// (nothing held, nobody waiting, not kept by MinIdlePerKey); Stats keeps
// the pool-wide totals.
type KeyStats struct {
	// MakeFailures is the number of consecutive failed makes of the key
	// (counted only while Config.MakeFailureThreshold is set).
	MakeFailures int
	// BackoffUntil is when the key's current backoff period ends: zero when
	// the key is not in backoff. Past it, one borrower probes.
	BackoffUntil time.Time
	// ShareCap is the latest share cap an object of the key learned (see
	// ShareCap; for a gRPC connection, the streams its server allows): 0
	// if none has. With shared leases each object takes at most
	// min(MaxSharesPerObject, its own cap) leases.
	ShareCap int
	Gauges
	Counters
}

// Gauges are the current state of a pool or of one key.
type Gauges struct {
	// Active is the number of objects lent out, or being returned or
	// destroyed (counted against the limits until Destroy returns). An idle
	// object destroyed to make room for another key counts as Active in its
	// own key's KeyStats, but not in the pool's Stats, where the object being
	// made in its room counts as Making.
	Active int
	// Idle is the number of idle objects, including those an eviction run
	// is testing at the moment, which are not lent until it is done.
	Idle int
	// Making is the number of objects being made.
	Making int
	// Waiters is the number of borrowers blocked in Borrow.
	Waiters int
	// SharesInUse is the number of leases out: equal to the lent objects in
	// exclusive mode, up to MaxSharesPerObject per object with shared leases.
	SharesInUse int
}

// Counters are running totals since the pool (or the key's sub-pool) was
// made.
type Counters struct {
	Borrowed int64 // successful Borrows
	Returned int64 // Returns and Invalidates of lent handles
	Created  int64 // objects made
	// Destroyed counts every destroyed object; the DestroyedBy fields split
	// it by cause and add up to it.
	Destroyed int64
	// DestroyedByBorrowValidation: activation or validation failed at
	// Borrow, or validation of a new object failed (TestOnCreate).
	DestroyedByBorrowValidation int64
	// DestroyedByReturnValidation: passivation or validation failed at
	// Return.
	DestroyedByReturnValidation int64
	// DestroyedSurplus: returned beyond MaxIdlePerKey, or idle beyond limits
	// lowered by SetConfig.
	DestroyedSurplus int64
	// DestroyedByInvalidate: Invalidate.
	DestroyedByInvalidate int64
	// DestroyedByClear: Clear, ClearAll, ClearOldest, and idle objects of
	// other keys destroyed to make room when MaxTotal is reached.
	DestroyedByClear int64
	// DestroyedByClose: destroyed by Close or returned after it.
	DestroyedByClose int64
	// DestroyedByEvictor: evicted by the eviction policy, or failed the
	// eviction run's test (TestWhileIdle).
	DestroyedByEvictor int64
	// DestroyedByLifetime: older than MaxLifetime, found idle by an
	// eviction run, or when lent or returned.
	DestroyedByLifetime int64
	// DestroyedByAbandoned: taken back as leaked (Config.Abandoned).
	DestroyedByAbandoned int64
	// MakeErrors counts failed Makes.
	MakeErrors int64
	// BackoffRejected counts Borrows and AddObjects refused with ErrBackoff.
	BackoffRejected int64
	// EvictionTests counts the idle objects eviction runs looked at.
	EvictionTests int64
	// Waited counts Borrows that had to wait in line, whatever the outcome,
	// each once however often it waited (a failed hand-off sends a Borrow
	// back in line). Waits for a make are not counted here (MaxWait bounds
	// those too).
	Waited int64
	// WaitTime is the total time Borrows spent waiting.
	WaitTime time.Duration
	// MaxWaitTime is the longest a single Borrow has waited in line, all
	// its waits together.
	MaxWaitTime time.Duration
	// ActiveTime is the total time objects spent lent, from leaving the
	// idle set (or being made) to coming back to it, over ActiveCount such
	// spans; IdleTime the total time objects spent idle before being lent,
	// over IdleCount spans. Both are measured on the pool's clock (see
	// "Timestamps" in README.md: to within one TimeBetweenEvictionRuns),
	// which costs the hot path nothing, and are not measured at all (the
	// counts stay 0) while the clock does not run: no evictor and no
	// RunEviction call yet.
	ActiveTime, IdleTime   time.Duration
	ActiveCount, IdleCount int64
	// BackgroundErrors counts the errors of work no caller waited for, by
	// operation (see Config.SwallowedErrorListener).
	BackgroundErrors BackgroundErrors
}

// MeanActiveTime is the mean time an object stayed lent before it came
// back idle (commons-pool2's meanActiveTime), or 0 if none was measured.
func (c Counters) MeanActiveTime() time.Duration {
	if c.ActiveCount == 0 {
		return 0
	}
	return c.ActiveTime / time.Duration(c.ActiveCount)
}

// MeanIdleTime is the mean time an object stayed idle before it was lent
// (commons-pool2's meanIdleTime), or 0 if none was measured.
func (c Counters) MeanIdleTime() time.Duration {
	if c.IdleCount == 0 {
		return 0
	}
	return c.IdleTime / time.Duration(c.IdleCount)
}

// MeanWaitTime is the mean wait of the Borrows that waited, or 0.
func (c Counters) MeanWaitTime() time.Duration {
	if c.Waited == 0 {
		return 0
	}
	return c.WaitTime / time.Duration(c.Waited)
}

// reason is why an object was destroyed.
type reason uint8

const (
	byBorrowValidation reason = iota
	byReturnValidation
	bySurplus
	byInvalidate
	byClear
	byClose
	byEvictor
	byLifetime
	byAbandoned
	numReasons
)

// counters are the numbers behind Counters, kept per pool and per key. They
// are plain integers updated under the pool's lock, which every path that
// counts holds anyway: cheaper than atomics, and a snapshot is consistent
// with the gauges.
type counters struct {
	borrowed, returned, created, makeErrors int64
	backoffRejected, evictionTests          int64
	waited, waitNanos, maxWaitNanos         int64
	activeNanos, actives, idleNanos, idles  int64
	destroyed                               [numReasons]int64
	background                              *[numOps]int64 // made at the first; most keys never have one
}

// backgroundError counts an error of background work of op.
func (c *counters) backgroundError(op Op) {
	if c.background == nil {
		c.background = new([numOps]int64)
	}
	c.background[op]++
}

// wait counts one wait of d by a Borrow that has now waited total over all
// its waits; first says it is the Borrow's first.
func (c *counters) wait(d, total time.Duration, first bool) {
	if first {
		c.waited++
	}
	c.waitNanos += int64(d)
	c.maxWaitNanos = max(c.maxWaitNanos, int64(total))
}

func (c *counters) snapshot() Counters {
	var bg [numOps]int64
	if c.background != nil {
		bg = *c.background
	}
	s := Counters{
		Borrowed:                    c.borrowed,
		Returned:                    c.returned,
		Created:                     c.created,
		MakeErrors:                  c.makeErrors,
		BackoffRejected:             c.backoffRejected,
		EvictionTests:               c.evictionTests,
		Waited:                      c.waited,
		WaitTime:                    time.Duration(c.waitNanos),
		MaxWaitTime:                 time.Duration(c.maxWaitNanos),
		DestroyedByBorrowValidation: c.destroyed[byBorrowValidation],
		DestroyedByReturnValidation: c.destroyed[byReturnValidation],
		DestroyedSurplus:            c.destroyed[bySurplus],
		DestroyedByInvalidate:       c.destroyed[byInvalidate],
		DestroyedByClear:            c.destroyed[byClear],
		DestroyedByClose:            c.destroyed[byClose],
		DestroyedByEvictor:          c.destroyed[byEvictor],
		DestroyedByLifetime:         c.destroyed[byLifetime],
		DestroyedByAbandoned:        c.destroyed[byAbandoned],
		ActiveTime:                  time.Duration(c.activeNanos),
		ActiveCount:                 c.actives,
		IdleTime:                    time.Duration(c.idleNanos),
		IdleCount:                   c.idles,
		BackgroundErrors: BackgroundErrors{
			Make:           bg[OpMake],
			Destroy:        bg[OpDestroy],
			Activate:       bg[OpActivate],
			Validate:       bg[OpValidate],
			Passivate:      bg[OpPassivate],
			EvictionPolicy: bg[OpEvictionPolicy],
		},
	}
	for _, n := range c.destroyed {
		s.Destroyed += n
	}
	return s
}
