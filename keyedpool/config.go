package keyedpool

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/kpool-go/kpool/evictor"
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
	DefaultMaxTotalPerKey         = 8
	DefaultMaxIdlePerKey          = 8
	DefaultNumTestsPerEvictionRun = 3
	DefaultMinEvictableIdle       = 30 * time.Minute
	DefaultAbandonedTimeout       = 5 * time.Minute
	DefaultMakeBackoffBase        = time.Second
	DefaultMakeBackoffMax         = 30 * time.Second
	DefaultFactoryTimeout         = 30 * time.Second
)

// Config holds a pool's limits and behaviour. Every field's zero value is a
// safe documented default, so Config{} is valid; DefaultConfig returns the
// same settings spelled out. Validate, New and SetConfig refuse invalid
// values with an error that names every invalid field, each as a
// *FieldError matched by errors.Is(err, ErrInvalidConfig).
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

	// MinIdlePerKey is the number of spare objects Prepare makes for a key
	// (and the evictor keeps): objects that can take a borrower without a
	// make, which are the idle ones and, with shared leases, also lent ones
	// under MaxSharesPerObject. So a shared key whose objects still have
	// room does not grow. A key it covers stays in the pool when all its
	// objects are gone (evicted, invalidated), so that eviction runs make
	// them up, until Clear, ClearAll or ForgetFailures forgets it. Default
	// 0: a key leaves the pool as soon as it holds nothing. It may not be
	// negative nor exceed MaxIdlePerKey or MaxTotalPerKey when those are
	// limited.
	MinIdlePerKey int

	// WhenExhausted says whether Borrow blocks (Block, the zero value) or
	// fails at once with ErrExhausted (Fail) when no object can be lent.
	WhenExhausted ExhaustedAction

	// MaxWait bounds how long a Borrow waits before it fails with
	// ErrExhausted: one deadline for the whole Borrow, counted from the
	// moment it first has to wait, in line or for a make, and kept across
	// the tries a failed hand-off causes (see Borrow). A make still running
	// at the deadline goes on and its object joins the pool. Zero: only the
	// Borrow context bounds the wait (the default). Negative is invalid.
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

	// TestWhileIdle makes each eviction run activate, validate and
	// passivate the idle objects it looks at and the policy keeps; a failure
	// destroys the object. No effect without eviction runs.
	TestWhileIdle bool

	// MaxSharesPerObject is how many borrowers may hold one object at once.
	// Zero means the default, 1: exclusive use, as commons-pool2. Above 1
	// (shared leases, for multiplexed connections such as gRPC's), Borrow
	// lends a share of the busiest lent object of the key that is under its
	// cap, then an idle object, and makes a new one only when all are at
	// their cap: packing, so that when load falls whole objects go idle and
	// the evictor retires them. An object whose value learns a lower cap of
	// its own (ShareCapper) takes no more than that; MaxShares lets such
	// caps alone bound the objects. Negative is invalid. Fixed when the pool
	// is made: SetConfig refuses to change it.
	MaxSharesPerObject int

	// TimeBetweenEvictionRuns is how often the evictor runs RunEviction.
	// Zero or negative: never (the default, as commons-pool2); RunEviction
	// can still be called by hand. Pools with the same interval share one
	// goroutine, which runs while any of them is open.
	TimeBetweenEvictionRuns time.Duration

	// NumTestsPerEvictionRun is how many idle objects one eviction run looks
	// at. Zero means the default, 3. Negative n looks at ceil(idle/|n|) of
	// them, so -1 looks at all.
	NumTestsPerEvictionRun int

	// MinEvictableIdle: an idle object idle longer is evicted by the default
	// policy. Zero means the default, 30 minutes. Negative: never on idle
	// time alone.
	MinEvictableIdle time.Duration

	// SoftMinEvictableIdle: an idle object idle longer is evicted by the
	// default policy while its key has more than MinIdlePerKey spare
	// objects (see MinIdlePerKey). Zero (the default): off. Negative is
	// invalid.
	SoftMinEvictableIdle time.Duration

	// EvictionPolicy decides which idle objects an eviction run destroys.
	// Nil means evictor.DefaultPolicy. A policy sees the key as
	// evictor.Candidate.Key, an any holding a K; one written as an
	// evictor.KeyedPolicyFunc[K] is handed it as a K. A panic in the policy
	// keeps the object and is reported as swallowed (OpEvictionPolicy).
	EvictionPolicy evictor.Policy

	// MaxLifetime: an object older than this is destroyed when an eviction
	// run finds it idle, or when it is returned; never while borrowed. With
	// shared leases an object past it takes no new lease (found at lend or
	// by an eviction run) and is destroyed when its last lease comes back.
	// Zero (the default): no limit. Negative is invalid.
	MaxLifetime time.Duration

	// MaxLifetimeJitter adds to each object's MaxLifetime a random part of
	// up to this much, drawn when the object is made, so that objects made
	// together do not all expire together. Zero (the default): none.
	// Negative is invalid.
	MaxLifetimeJitter time.Duration

	// Abandoned, when not nil, treats objects borrowed and left unused for
	// too long as leaked and takes them back. Nil (the default): off.
	Abandoned *AbandonedConfig

	// MakeFailureThreshold is the number of consecutive failed makes of one
	// key after which Borrow on that key fails fast with ErrBackoff for a
	// backoff period, instead of sending every borrower to a dead backend.
	// After the period one borrower probes with a make; a success ends the
	// backoff, a failure starts a longer period. Other keys are unaffected.
	// A failing key is kept while it holds nothing, so that its backoff
	// holds; eviction runs forget it after MakeBackoffMax without failures.
	// Zero (the default): off. Negative is invalid.
	MakeFailureThreshold int

	// MakeBackoffBase is the first backoff period; each further failed probe
	// doubles it, up to MakeBackoffMax. Every period varies randomly by up
	// to 20% either way, so that keys that failed together do not probe
	// together. Zero means the default, 1 second. Negative is invalid.
	MakeBackoffBase time.Duration

	// MakeBackoffMax caps the backoff period. Zero means the default, 30
	// seconds. Negative or below MakeBackoffBase is invalid.
	MakeBackoffMax time.Duration

	// FactoryTimeout bounds each factory call that no caller's context
	// bounds on its own: every Make (whose context keeps the borrower's
	// values but not its cancellation, so that it can outlive a borrower
	// who gives up; Close cancels it too), Passivate and Validate at
	// Return, every Destroy (those of Clear, ClearAll, ClearOldest and
	// Close are bounded by that call's context as well), and each idle
	// object's eviction test, whose Activate, Validate and Passivate share
	// one context (which also ends at Close). The context such a call gets
	// ends FactoryTimeout after the call starts; at Return, where
	// Passivate and Validate share one context, FactoryTimeout after the
	// factory first asks it for its deadline, Done channel or Err, so that
	// Return costs nothing for factories that never look. A context is for
	// its call only. Activate and
	// Validate under a Borrow get the borrower's context. Zero means the
	// default, 30 seconds. Negative: no bound.
	FactoryTimeout time.Duration

	// SwallowedErrorListener, when not nil, receives every error of work no
	// caller waits for (commons-pool2's SwallowedExceptionListener): the
	// key, the operation that failed and the error. That is: failed
	// Destroys outside Return, Invalidate, Clear, ClearAll, ClearOldest,
	// SetConfig and Close; failed makes for MinIdlePerKey upkeep or whose
	// caller gave up; failed eviction-run tests (TestWhileIdle); a failed
	// Passivate of an object whose borrower gave up, or of a new object
	// nobody waits for; a panicking EvictionPolicy. Each is also counted in
	// Counters.BackgroundErrors whether or not a listener is set. Errors of
	// an eviction run are reported even when RunEviction, called by hand,
	// also returns them. The listener is called without any lock of the
	// pool held, from the goroutine that did the work (an eviction run, or
	// a Borrow or Return cleaning up), so it must be safe for concurrent
	// use and return quickly; a panic in it is recovered and dropped. Nil
	// (the default): errors are only counted.
	SwallowedErrorListener SwallowedErrorListener
}

// SwallowedErrorListener receives the errors of a pool's background work;
// see Config.SwallowedErrorListener.
type SwallowedErrorListener interface {
	OnSwallowedError(key any, op Op, err error)
}

// SwallowedErrorFunc adapts a function to a SwallowedErrorListener.
type SwallowedErrorFunc func(key any, op Op, err error)

// OnSwallowedError calls f(key, op, err).
func (f SwallowedErrorFunc) OnSwallowedError(key any, op Op, err error) { f(key, op, err) }

// AbandonedConfig says when a borrowed object counts as leaked, as
// commons-pool2's AbandonedConfig. A leaked object is taken back: its handle
// stops being valid (Return gives ErrNotBorrowed) and the object is
// invalidated, which frees its room. It is counted in
// Counters.DestroyedByAbandoned.
type AbandonedConfig struct {
	// RemoveOnBorrow looks for leaked objects when a Borrow finds nothing
	// to lend at once.
	RemoveOnBorrow bool
	// RemoveOnMaintenance looks for leaked objects in each eviction run.
	RemoveOnMaintenance bool
	// Timeout is how long a lease may go without use (Borrow, or
	// Pooled.MarkUsed) before it counts as leaked. Zero means the default,
	// 5 minutes, as commons-pool2. Negative is invalid.
	Timeout time.Duration
	// LogAbandoned logs each leaked lease with the stack of the Borrow that
	// took it. The stack is captured at every Borrow while this is on, which
	// costs an allocation; off, Borrow allocates nothing.
	LogAbandoned bool
	// Logger receives LogAbandoned's records. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the default configuration: no total limit, 8 objects
// and 8 idle per key, none kept warm, Block without a MaxWait, LIFO, no
// tests, exclusive use, no evictor, no lifetime limit, no abandoned-object
// tracking, no make backoff, factory calls bounded by 30 seconds, no
// listener for background errors.
func DefaultConfig() Config {
	return Config{
		MaxTotalPerKey:         DefaultMaxTotalPerKey,
		MaxIdlePerKey:          DefaultMaxIdlePerKey,
		MaxSharesPerObject:     1,
		NumTestsPerEvictionRun: DefaultNumTestsPerEvictionRun,
		MinEvictableIdle:       DefaultMinEvictableIdle,
		EvictionPolicy:         evictor.DefaultPolicy{},
		MakeBackoffBase:        DefaultMakeBackoffBase,
		MakeBackoffMax:         DefaultMakeBackoffMax,
		FactoryTimeout:         DefaultFactoryTimeout,
	}
}

// limits are a Config's caps as plain numbers: math.MaxInt means no limit.
type limits struct {
	maxTotal, maxPerKey, maxIdle, minIdle, maxShares int

	every     time.Duration // the eviction interval, 0 without an evictor
	abandoned bool          // Abandoned != nil
	lifetime  bool          // MaxLifetime > 0
}

// resolve fills in defaults and checks every field, returning the completed
// Config and its limits, and every problem as Validate does.
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
	if c.NumTestsPerEvictionRun == 0 {
		c.NumTestsPerEvictionRun = DefaultNumTestsPerEvictionRun
	}
	if c.MinEvictableIdle == 0 {
		c.MinEvictableIdle = DefaultMinEvictableIdle
	}
	if c.EvictionPolicy == nil {
		c.EvictionPolicy = evictor.DefaultPolicy{}
	}
	if c.MakeBackoffBase == 0 {
		c.MakeBackoffBase = DefaultMakeBackoffBase
	}
	if c.MakeBackoffMax == 0 {
		c.MakeBackoffMax = DefaultMakeBackoffMax
	}
	if c.FactoryTimeout == 0 {
		c.FactoryTimeout = DefaultFactoryTimeout
	}
	if c.Abandoned != nil {
		a := *c.Abandoned // the caller's copy stays theirs
		if a.Timeout == 0 {
			a.Timeout = DefaultAbandonedTimeout
		}
		c.Abandoned = &a
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
		maxShares: min(c.MaxSharesPerObject, math.MaxInt32), // an object's share count is an int32
		every:     max(c.TimeBetweenEvictionRuns, 0),
		abandoned: c.Abandoned != nil,
		lifetime:  c.MaxLifetime > 0,
	}
	return c, l, c.check(l)
}

// Validate reports every invalid field of c, each as a *FieldError, joined
// with errors.Join; nil when New would accept c. It checks c as New does,
// defaults applied, without making a pool.
func (c Config) Validate() error {
	_, _, err := c.resolve()
	return err
}

// check returns the problems of c, whose defaults resolve has filled in,
// one *FieldError per field, joined; l are c's limits.
func (c Config) check(l limits) error {
	var errs []error
	bad := func(field string, value any, want string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Want: want})
	}
	beyond := func(field string, value any, want, limit string, limitValue any) {
		errs = append(errs, &FieldError{Field: field, Value: value, Want: want, Limit: limit, LimitValue: limitValue})
	}
	if c.MinIdlePerKey < 0 {
		bad("MinIdlePerKey", c.MinIdlePerKey, "0 or more")
	}
	if c.MinIdlePerKey > l.maxIdle {
		beyond("MinIdlePerKey", c.MinIdlePerKey, "at most", "MaxIdlePerKey", c.MaxIdlePerKey)
	}
	if c.MinIdlePerKey > l.maxPerKey {
		beyond("MinIdlePerKey", c.MinIdlePerKey, "at most", "MaxTotalPerKey", c.MaxTotalPerKey)
	}
	if c.WhenExhausted != Block && c.WhenExhausted != Fail {
		bad("WhenExhausted", c.WhenExhausted, "Block or Fail")
	}
	if c.MaxWait < 0 {
		bad("MaxWait", c.MaxWait, "0 (bounded by the context only) or more")
	}
	if c.MaxSharesPerObject < 0 {
		bad("MaxSharesPerObject", c.MaxSharesPerObject, "1 or more (0 means 1)")
	}
	if c.SoftMinEvictableIdle < 0 {
		bad("SoftMinEvictableIdle", c.SoftMinEvictableIdle, "0 (off) or more")
	}
	if c.MaxLifetime < 0 {
		bad("MaxLifetime", c.MaxLifetime, "0 (no limit) or more")
	}
	if c.MaxLifetimeJitter < 0 {
		bad("MaxLifetimeJitter", c.MaxLifetimeJitter, "0 (none) or more")
	}
	if c.Abandoned != nil && c.Abandoned.Timeout < 0 {
		bad("Abandoned.Timeout", c.Abandoned.Timeout, "0 (5m) or more")
	}
	if c.MakeFailureThreshold < 0 {
		bad("MakeFailureThreshold", c.MakeFailureThreshold, "0 (off) or more")
	}
	if c.MakeBackoffBase < 0 {
		bad("MakeBackoffBase", c.MakeBackoffBase, "0 (1s) or more")
	}
	switch {
	case c.MakeBackoffMax < 0:
		bad("MakeBackoffMax", c.MakeBackoffMax, "0 (30s) or more")
	case c.MakeBackoffMax < c.MakeBackoffBase:
		beyond("MakeBackoffMax", c.MakeBackoffMax, "at least", "MakeBackoffBase", c.MakeBackoffBase)
	}
	return errors.Join(errs...)
}
