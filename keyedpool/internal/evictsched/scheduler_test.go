package evictsched_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/keyedpool/internal/evictsched"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runner counts its runs; with block set, each run waits for release or
// the end of its context.
type runner struct {
	mu        sync.Mutex
	runs      int
	cancelled int
	block     bool
	release   chan struct{}
}

func newRunner(block bool) *runner { return &runner{block: block, release: make(chan struct{})} }

func (r *runner) RunEviction(ctx context.Context) error {
	r.mu.Lock()
	r.runs++
	r.mu.Unlock()
	if r.block {
		select {
		case <-r.release:
		case <-ctx.Done():
			r.mu.Lock()
			r.cancelled++
			r.mu.Unlock()
		}
	}
	return nil
}

func (r *runner) counts() (runs, cancelled int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs, r.cancelled
}

func TestSameIntervalSharesOneGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &evictsched.Scheduler{}
		a, b, c := newRunner(false), newRunner(false), newRunner(false)
		ra := s.Schedule(time.Second, a)
		rb := s.Schedule(time.Second, b)
		rc := s.Schedule(time.Minute, c)
		if got := s.Groups(); got != 2 {
			t.Errorf("Groups() = %d, want 2 (one per interval)", got)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		for name, r := range map[string]*runner{"a": a, "b": b} {
			if runs, _ := r.counts(); runs != 10 {
				t.Errorf("runner %s ran %d times in 10 intervals, want 10", name, runs)
			}
		}
		if runs, _ := c.counts(); runs != 0 {
			t.Errorf("runner c (1m interval) ran %d times in 10s, want 0", runs)
		}
		<-ra.Stop()
		if got := s.Groups(); got != 2 {
			t.Errorf("Groups() after one of two stopped = %d, want 2", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if runs, _ := a.counts(); runs != 10 {
			t.Errorf("stopped runner ran again: %d runs, want 10", runs)
		}
		<-rb.Stop()
		<-rc.Stop()
		<-rc.Stop() // twice is fine
		if got := s.Groups(); got != 0 {
			t.Errorf("Groups() after all stopped = %d, want 0", got)
		}
		// synctest.Test fails if a goroutine of the bubble is left running.
	})
}

func TestSlowRunDoesNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &evictsched.Scheduler{}
		slow, fast := newRunner(true), newRunner(false)
		rs := s.Schedule(time.Second, slow)
		rf := s.Schedule(time.Second, fast)
		time.Sleep(5*time.Second + time.Millisecond)
		synctest.Wait()
		if runs, _ := slow.counts(); runs != 1 {
			t.Errorf("slow runner started %d runs while its first was in flight, want 1", runs)
		}
		if runs, _ := fast.counts(); runs != 5 {
			t.Errorf("fast runner ran %d times in 5 intervals beside a stuck one, want 5", runs)
		}
		slow.release <- struct{}{}
		time.Sleep(time.Second)
		synctest.Wait()
		if runs, _ := slow.counts(); runs != 2 {
			t.Errorf("slow runner ran %d times after its first run ended, want 2", runs)
		}
		// Stop cancels the run in flight and reports when it has ended.
		done := rs.Stop()
		<-done
		if _, cancelled := slow.counts(); cancelled != 1 {
			t.Errorf("runs cancelled by Stop = %d, want 1", cancelled)
		}
		<-rf.Stop()
	})
}

func TestScheduleRefusesNonPositiveInterval(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Schedule(0, r) did not panic")
		}
	}()
	(&evictsched.Scheduler{}).Schedule(0, newRunner(false))
}
