package commonspool

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pool "github.com/jolestar/go-commons-pool/v2"

	"github.com/kpool-go/kpool/factory"
)

// ErrValidationFailed is returned, wrapped with the key, by Factory.Validate
// when the go-commons-pool factory's ValidateObject reports false.
var ErrValidationFailed = errors.New("commonspool: validation failed")

// errNewFactoryPanicked is what waiters on a key see when the call to the
// constructor they were waiting for panicked; the panic itself goes to the
// goroutine that made the call.
var errNewFactoryPanicked = errors.New("commonspool: factory constructor panicked")

// Factory is a factory.KeyedFactory[K, any] built from go-commons-pool
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
// Build one with New (one go-commons-pool factory per key) or
// NewShared (one for every key); the zero value is not usable, and a
// Factory must not be copied after first use. All methods are safe for
// concurrent use.
type Factory[K comparable] struct {
	// newFactory builds the factory for a key on its first use. Nil when
	// shared is set.
	newFactory func(key K) (pool.PooledObjectFactory, error)
	// shared serves every key. Nil when newFactory is set.
	shared pool.PooledObjectFactory

	// factories maps K to *entry. A sync.Map because after warm-up
	// it is read on every pool operation and written once per key, the
	// case sync.Map is built for; lookups take no lock.
	factories sync.Map
}

// entry holds the factory for one key. once runs the constructor
// outside any map-wide lock, so a slow constructor holds up only the callers
// that need the same key.
type entry struct {
	once sync.Once
	f    pool.PooledObjectFactory // set by once; nil if err is set
	err  error                    // set by once
}

// New returns a Factory that calls newFactory the first time a key
// is used, and then uses the factory it returns for every object of that
// key. newFactory is called at most once per key even when many goroutines
// use a new key at once; callers for that key wait for it, so it should only
// build the factory and leave slow work (dials) to MakeObject. If newFactory
// returns an error, the call that needed the factory returns it wrapped and
// the next use of the key calls newFactory again.
//
// The per-key factories are kept until Forget is called for the key, so
// memory grows with the number of distinct keys. New panics if
// newFactory is nil. The result is safe for concurrent use.
func New[K comparable](newFactory func(key K) (pool.PooledObjectFactory, error)) *Factory[K] {
	if newFactory == nil {
		panic("commonspool: New called with a nil newFactory")
	}
	return &Factory[K]{newFactory: newFactory}
}

// NewShared returns a Factory that uses f for every key. f cannot
// tell keys apart, so use it when objects of all keys are made the same way,
// or use New. It keeps no per-key state, so memory does not grow
// with keys. NewShared panics if f is nil. The result is safe for
// concurrent use, provided f is.
func NewShared[K comparable](f pool.PooledObjectFactory) *Factory[K] {
	if f == nil {
		panic("commonspool: NewShared called with a nil factory")
	}
	return &Factory[K]{shared: f}
}

// Forget drops the factory New made for key, so that its memory can
// be reclaimed; the next use of key calls newFactory again. Call it once the
// pool holds no objects for key: an object made before Forget and destroyed
// after it is destroyed by a new factory for the key. Forget does nothing for
// a Factory built by NewShared or for a key never used. It is cheap
// (one map delete) and safe for concurrent use.
func (c *Factory[K]) Forget(key K) {
	c.factories.Delete(key)
}

// factoryFor returns the factory for key, building it on first use.
func (c *Factory[K]) factoryFor(key K) (pool.PooledObjectFactory, error) {
	if c.shared != nil {
		return c.shared, nil
	}
	if c.newFactory == nil {
		panic("commonspool: zero Factory used; build it with New or NewShared")
	}
	v, ok := c.factories.Load(key)
	if !ok {
		v, _ = c.factories.LoadOrStore(key, new(entry))
	}
	e := v.(*entry)
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
		return nil, fmt.Errorf("commonspool: factory for key %v: %w", key, e.err)
	}
	return e.f, nil
}

// Make calls MakeObject on the key's go-commons-pool factory and returns the
// wrapped object. It is bounded only by ctx as far as MakeObject honours it,
// and by newFactory on the key's first use.
func (c *Factory[K]) Make(ctx context.Context, key K) (any, error) {
	f, err := c.factoryFor(key)
	if err != nil {
		return nil, err
	}
	po, err := f.MakeObject(ctx)
	if err != nil {
		return nil, fmt.Errorf("commonspool: MakeObject for key %v: %w", key, err)
	}
	if po == nil {
		return nil, fmt.Errorf("commonspool: MakeObject for key %v returned a nil object", key)
	}
	return po.Object, nil
}

// Destroy calls DestroyObject on the key's go-commons-pool factory.
func (c *Factory[K]) Destroy(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if err := f.DestroyObject(ctx, pool.NewPooledObject(v)); err != nil {
		return fmt.Errorf("commonspool: DestroyObject for key %v: %w", key, err)
	}
	return nil
}

// Validate calls ValidateObject on the key's go-commons-pool factory and
// returns an error wrapping ErrValidationFailed if it reports false.
func (c *Factory[K]) Validate(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if !f.ValidateObject(ctx, pool.NewPooledObject(v)) {
		return fmt.Errorf("commonspool: ValidateObject for key %v: %w", key, ErrValidationFailed)
	}
	return nil
}

// Activate calls ActivateObject on the key's go-commons-pool factory.
func (c *Factory[K]) Activate(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if err := f.ActivateObject(ctx, pool.NewPooledObject(v)); err != nil {
		return fmt.Errorf("commonspool: ActivateObject for key %v: %w", key, err)
	}
	return nil
}

// Passivate calls PassivateObject on the key's go-commons-pool factory.
func (c *Factory[K]) Passivate(ctx context.Context, key K, v any) error {
	f, err := c.factoryFor(key)
	if err != nil {
		return err
	}
	if err := f.PassivateObject(ctx, pool.NewPooledObject(v)); err != nil {
		return fmt.Errorf("commonspool: PassivateObject for key %v: %w", key, err)
	}
	return nil
}

var _ factory.KeyedFactory[string, any] = (*Factory[string])(nil)
