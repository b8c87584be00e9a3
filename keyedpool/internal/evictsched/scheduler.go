package evictsched

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Runner is what a Scheduler runs: one eviction run of a pool. Its error is
// dropped; a pool counts what went wrong in its own statistics.
type Runner interface {
	RunEviction(ctx context.Context) error
}

// Ticker is implemented by a Runner that wants to hear of every tick of its
// interval, even one whose run is skipped because the previous run is still
// going: a pool keeps its clock with it. EvictionTick must return quickly;
// the Scheduler calls it without holding its own lock.
type Ticker interface {
	EvictionTick()
}

// Scheduler runs registered Runners, each at its interval, like
// commons-pool2's EvictionTimer. Runners with the same interval share one
// ticking goroutine, which starts with the first of them and stops with the
// last. Each run goes in a goroutine of its own, so a slow run never delays
// other Runners; a Runner whose previous run has not finished skips the tick.
//
// The zero Scheduler is ready to use. Its methods are safe for concurrent
// use.
type Scheduler struct {
	mu     sync.Mutex // protects the fields below
	groups map[time.Duration]*group
}

// Default is the process-wide Scheduler that every keyedpool pool uses.
var Default = &Scheduler{}

// group is the Registrations of one interval and the goroutine that ticks
// for them. Its fields are protected by the Scheduler's mu.
type group struct {
	regs map[*Registration]struct{}
	stop chan struct{}
}

// Registration is one Runner scheduled on a Scheduler. Its fields are
// protected by the Scheduler's mu.
type Registration struct {
	s        *Scheduler
	interval time.Duration
	r        Runner
	ctx      context.Context // ends at Stop; the context of every run
	cancel   context.CancelFunc
	running  bool          // a run is in flight
	idle     chan struct{} // closed when stopped and no run is in flight
	stopped  bool
}

// Schedule runs r every interval until the returned Registration is stopped.
// It panics if interval is not positive: a pool without eviction does not
// register.
func (s *Scheduler) Schedule(interval time.Duration, r Runner) *Registration {
	if interval <= 0 {
		panic(fmt.Sprintf("evictsched: Schedule with interval %v, want more than 0", interval))
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := &Registration{s: s, interval: interval, r: r, ctx: ctx, cancel: cancel, idle: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups == nil {
		s.groups = make(map[time.Duration]*group)
	}
	g := s.groups[interval]
	if g == nil {
		g = &group{regs: make(map[*Registration]struct{}), stop: make(chan struct{})}
		s.groups[interval] = g
		go s.tick(interval, g)
	}
	g.regs[reg] = struct{}{}
	return reg
}

// tick starts the runs of g's Registrations every interval until g stops.
func (s *Scheduler) tick(interval time.Duration, g *group) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var regs []*Registration
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		regs = regs[:0]
		for reg := range g.regs {
			regs = append(regs, reg)
		}
		s.mu.Unlock()
		// Outside the lock: a Runner may call Schedule or Stop while
		// holding its own lock, which EvictionTick takes.
		for _, reg := range regs {
			if t, ok := reg.r.(Ticker); ok {
				t.EvictionTick()
			}
		}
		s.mu.Lock()
		for _, reg := range regs {
			if !reg.stopped && !reg.running {
				reg.running = true
				go reg.run()
			}
		}
		s.mu.Unlock()
	}
}

func (reg *Registration) run() {
	_ = reg.r.RunEviction(reg.ctx)
	reg.s.mu.Lock()
	reg.running = false
	if reg.stopped {
		close(reg.idle)
	}
	reg.s.mu.Unlock()
}

// Stop unschedules the Runner and cancels the context of its run in flight,
// if any. The returned channel is closed once no run is in flight. The
// interval's goroutine stops with its last Registration. Stop may be called
// more than once.
func (reg *Registration) Stop() <-chan struct{} {
	s := reg.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if reg.stopped {
		return reg.idle
	}
	reg.stopped = true
	reg.cancel()
	g := s.groups[reg.interval]
	delete(g.regs, reg)
	if len(g.regs) == 0 {
		close(g.stop)
		delete(s.groups, reg.interval)
	}
	if !reg.running {
		close(reg.idle)
	}
	return reg.idle
}

// Groups returns the number of ticking goroutines: one per interval that has
// Registrations.
func (s *Scheduler) Groups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.groups)
}
