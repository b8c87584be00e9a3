// Package testfactory is a keyed factory for tests: it counts what it makes
// and destroys, tracks how many objects are alive per key and at most, finds
// double destroys, and lets a test make any call fail or block.
package testfactory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kpool-go/kpool/factory"
)

// Obj is an object the factory makes.
type Obj struct {
	ID  int64
	Key string

	destroyed atomic.Bool
	// Dead makes Validate fail for this object when set.
	Dead atomic.Bool
	// Active is true between Activate and Passivate.
	Active atomic.Bool
}

// Destroyed reports whether Destroy was called on o.
func (o *Obj) Destroyed() bool { return o.destroyed.Load() }

// Factory implements factory.KeyedFactory[string, *Obj]. Set the hooks
// before the pool uses it; each may return an error to fail the call or
// block to slow it. The zero value is ready to use.
type Factory struct {
	MakeHook      func(ctx context.Context, key string) error
	DestroyHook   func(ctx context.Context, o *Obj) error
	ValidateHook  func(ctx context.Context, o *Obj) error
	ActivateHook  func(ctx context.Context, o *Obj) error
	PassivateHook func(ctx context.Context, o *Obj) error

	nextID                           atomic.Int64
	Made, Destroyed                  atomic.Int64
	Validated, Activated, Passivated atomic.Int64

	mu       sync.Mutex // protects the fields below
	live     map[string]int
	maxLive  map[string]int
	liveAll  int
	maxAll   int
	problems []error
}

var _ factory.KeyedFactory[string, *Obj] = (*Factory)(nil)

// ErrDead is returned by Validate for an object marked Dead.
var ErrDead = errors.New("testfactory: object is dead")

// Make makes an object unless MakeHook fails.
func (f *Factory) Make(ctx context.Context, key string) (*Obj, error) {
	if f.MakeHook != nil {
		if err := f.MakeHook(ctx, key); err != nil {
			return nil, err
		}
	}
	o := &Obj{ID: f.nextID.Add(1), Key: key}
	f.Made.Add(1)
	f.mu.Lock()
	if f.live == nil {
		f.live, f.maxLive = map[string]int{}, map[string]int{}
	}
	f.live[key]++
	f.maxLive[key] = max(f.maxLive[key], f.live[key])
	f.liveAll++
	f.maxAll = max(f.maxAll, f.liveAll)
	f.mu.Unlock()
	return o, nil
}

// Destroy records the destroy (a second one of the same object is a
// problem) and calls DestroyHook.
func (f *Factory) Destroy(ctx context.Context, key string, o *Obj) error {
	if o.destroyed.Swap(true) {
		f.problem(fmt.Errorf("object %d of key %q destroyed twice", o.ID, key))
		return nil
	}
	f.Destroyed.Add(1)
	f.mu.Lock()
	f.live[key]--
	f.liveAll--
	f.mu.Unlock()
	if f.DestroyHook != nil {
		return f.DestroyHook(ctx, o)
	}
	return nil
}

// Validate fails for a Dead or destroyed object, else calls ValidateHook.
func (f *Factory) Validate(ctx context.Context, key string, o *Obj) error {
	f.Validated.Add(1)
	f.checkAlive("Validate", o)
	if o.Dead.Load() {
		return ErrDead
	}
	if f.ValidateHook != nil {
		return f.ValidateHook(ctx, o)
	}
	return nil
}

// Activate marks o active and calls ActivateHook.
func (f *Factory) Activate(ctx context.Context, key string, o *Obj) error {
	f.Activated.Add(1)
	f.checkAlive("Activate", o)
	if o.Active.Swap(true) {
		f.problem(fmt.Errorf("object %d activated twice without passivation", o.ID))
	}
	if f.ActivateHook != nil {
		return f.ActivateHook(ctx, o)
	}
	return nil
}

// Passivate marks o inactive and calls PassivateHook.
func (f *Factory) Passivate(ctx context.Context, key string, o *Obj) error {
	f.Passivated.Add(1)
	f.checkAlive("Passivate", o)
	o.Active.Store(false)
	if f.PassivateHook != nil {
		return f.PassivateHook(ctx, o)
	}
	return nil
}

func (f *Factory) checkAlive(call string, o *Obj) {
	if o.Destroyed() {
		f.problem(fmt.Errorf("%s on destroyed object %d", call, o.ID))
	}
}

func (f *Factory) problem(err error) {
	f.mu.Lock()
	f.problems = append(f.problems, err)
	f.mu.Unlock()
}

// Problems returns the misuse the factory saw: double destroys, calls on
// destroyed objects, activation twice.
func (f *Factory) Problems() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.problems...)
}

// Live returns the objects of key made and not yet destroyed.
func (f *Factory) Live(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[key]
}

// LiveAll returns the objects of all keys made and not yet destroyed.
func (f *Factory) LiveAll() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.liveAll
}

// MaxLive returns the most objects of key alive at once.
func (f *Factory) MaxLive(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxLive[key]
}

// MaxLiveAll returns the most objects of all keys alive at once.
func (f *Factory) MaxLiveAll() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxAll
}

// MaxLivePerKey returns the most objects any one key had alive at once.
func (f *Factory) MaxLivePerKey() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := 0
	for _, n := range f.maxLive {
		m = max(m, n)
	}
	return m
}
