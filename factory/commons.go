package factory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pool "github.com/jolestar/go-commons-pool/v2"
)

// ErrValidationFailed is returned, wrapped with the key, by Commons.Validate
// when the go-commons-pool factory's ValidateObject reports false.
var ErrValidationFailed = errors.New("factory: validation failed")

// errNewFactoryPanicked is what waiters on a key see when the call to the
// constructor they were waiting for panicked; the panic itself goes to the
// goroutine that made the call.
var errNewFactoryPanicked = errors.New("factory: commons factory constructor panicked")

// Commons is a KeyedFactory[K, any] built from go-commons-pool
// (github.com/jolestar/go-commons-pool/v2) PooledObjectFactory values, so a
// factory written for go-commons-pool can be used by a kpool pool unchanged.
// go-commons-pool objects are interface{}, hence the value type any.
//
// Make returns the Object of the wrapper MakeObject returns. Destroy,
// Validate, Activate and Passivate hand the go-commons-pool factory a fresh
// wrapper made by pool.NewPooledObject(v), because kpool pools hold values,
// not wrappers: a factory that keeps wrapper identity or reads wrapper
// metadata (CreateTime, LastUseTime, state) sees a new wrapper on every call.
// Errors from the go-commons-pool factory are wrapped with %w and name the
// key; a false ValidateObject becomes ErrValidationFailed.
//
// Build one with FromCommons (one go-commons-pool factory per key) or
// FromCommonsShared (one for every key); the zero value is not usable, and a
// Commons must not be copied after first use. All methods are safe for
// concurrent use.
type Commons[K comparable] struct {
	// newFactory builds the factory for a key on its first use. Nil when
	// shared is set.
	newFactory func(key K) (pool.PooledObjectFactory, error)
	// shared serves every key. Nil when newFactory is set.
	shared pool.PooledObjectFactory

	// factories maps K to *commonsEntry. A sync.Map because after warm-up
	// it is read on every pool operation and written once per key, the
	// case sync.Map is built for; lookups take no lock.
	factories sync.Map
}

// commonsEntry holds the factory for one key. once runs the constructor
// outside any map-wide lock, so a slow constructor holds up only the callers
// that need the same key.
type commonsEntry struct {
	once sync.Once
	f    pool.PooledObjectFactory // set by once; nil if err is set
	err  error                    // set by once
}

// FromCommons returns a Commons that calls newFactory the first time a key
// is used, and then uses the factory it returns for every object of that
// key. newFactory is called at most once per key even when many goroutines
// use a new key at once; callers for that key wait for it, so it should only
// build the factory and leave slow work (dials) to MakeObject. If newFactory
// returns an error, the call that needed the factory returns it wrapped and
// the next use of the key calls newFactory again.
//
// The per-key factories are kept until Forget is called for the key, so
// memory grows with the number of distinct keys. FromCommons panics if
// newFactory is nil. The result is safe for concurrent use.
func FromCommons[K comparable](newFactory func(key K) (pool.PooledObjectFactory, error)) *Commons[K] {
	if newFactory == nil {
		panic("factory: FromCommons called with a nil newFactory")
	}
	return &Commons[K]{newFactory: newFactory}
}

// FromCommonsShared returns a Commons that uses f for every key. f cannot
// tell keys apart, so use it when objects of all keys are made the same way,
// or use FromCommons. It keeps no per-key state, so memory does not grow
// with keys. FromCommonsShared panics if f is nil. The result is safe for
// concurrent use, provided f is.
func FromCommonsShared[K comparable](f pool.PooledObjectFactory) *Commons[K] {
	if f == nil {
		panic("factory: FromCommonsShared called with a nil factory")
	}
	return &Commons[K]{shared: f}
}

// Forget drops the factory FromCommons made for key, so that its memory can
// be reclaimed; the next use of key calls newFactory again. Call it once the
// pool holds no objects for key: an object made before Forget and destroyed
// after it is destroyed by a new factory for the key. Forget does nothing for
// a Commons built by FromCommonsShared or for a key never used. It is cheap
// (one map delete) and safe for concurrent use.
func (c *Commons[K]) Forget(key K) {
	c.factories.Delete(key)
}

// factoryFor returns the factory for key, building it on first use.
func (c *Commons[K]) factoryFor(key K) (pool.PooledObjectFactory, error) {
	if c.shared != nil {
		return c.shared, nil
	}
	if c.newFactory == nil {
		panic("factory: zero Commons used; build it with FromCommons or FromCommonsShared")
	}
	v, ok := c.factories.Load(key)
	if !ok {
		v, _ = c.factories.LoadOrStore(key, new(commonsEntry))
	}
	e := v.(*commonsEntry)
	e.once.Do(func() {
		// Overwritten below unless newFactory panics; then the waiters
		// for this entry get an error instead of a nil factory.
		e.err = errNewFactoryPanicked
		defer func() {
			if e.err != nil {
				// Drop the failed entry so the next use retries; the
				// compare keeps a newer entry made after a Forget.
				c.factories.CompareAndDelete(key, e)
			}
		}()
		f, err := c.newFactory(key)
		if err == nil && f == nil {
			err = errors.New("constructor returned a nil factory")
		}
		e.f, e.err = f, err
	})
	if e.err != nil {
		return nil, fmt.Errorf("factory: commons factory for key %v: %w", key, e.err)
	}
	return e.f, nil
}

// Make calls MakeObject on the key's go-commons-pool factory and returns the
// wrapped object. It is bounded only by ctx as far as MakeObject honours it,
// and by newFactory on the key's first use.
func (c *Commons[K]) Make(ctx context.Context, key K) (any, error) {
	f, err := c.factoryFor(key)
	if err != nil {
		return nil, err
	}
	po, err := f.MakeObject(ctx)
	if err != nil {
		return nil, fmt.Errorf("factory: commons MakeObject for key %v: %w", key, err)
	}
	if po == nil {
		return nil, fmt.Errorf("factory: commons MakeObject for key %v returned a nil object", key)
	}
	return po.Object, nil
}

// Destroy calls DestroyObject on the key's go-commons-pool factory.
func (c *Commons[K]) Destroy(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if err := f.DestroyObject(ctx, pool.NewPooledObject(v)); err != nil {
		return fmt.Errorf("factory: commons DestroyObject for key %v: %w", key, err)
	}
	return nil
}

// Validate calls ValidateObject on the key's go-commons-pool factory and
// returns an error wrapping ErrValidationFailed if it reports false.
func (c *Commons[K]) Validate(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if !f.ValidateObject(ctx, pool.NewPooledObject(v)) {
		return fmt.Errorf("factory: commons ValidateObject for key %v: %w", key, ErrValidationFailed)
	}
	return nil
}

// Activate calls ActivateObject on the key's go-commons-pool factory.
func (c *Commons[K]) Activate(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if err := f.ActivateObject(ctx, pool.NewPooledObject(v)); err != nil {
		return fmt.Errorf("factory: commons ActivateObject for key %v: %w", key, err)
	}
	return nil
}

// Passivate calls PassivateObject on the key's go-commons-pool factory.
func (c *Commons[K]) Passivate(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if err := f.PassivateObject(ctx, pool.NewPooledObject(v)); err != nil {
		return fmt.Errorf("factory: commons PassivateObject for key %v: %w", key, err)
	}
	return nil
}

var _ KeyedFactory[string, any] = (*Commons[string])(nil)
