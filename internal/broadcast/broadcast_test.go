package broadcast_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/internal/broadcast"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// events records what Serve delivers; block, when set, holds the first
// delivery until closed.
type events struct {
	mu    sync.Mutex
	got   []string
	block chan struct{}
}

func (e *events) add(s string) {
	if e.block != nil {
		<-e.block
		e.block = nil
	}
	e.mu.Lock()
	e.got = append(e.got, s)
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

func serve(h *broadcast.Hub[string], e *events) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- h.Serve(ctx, func(s string) { e.add("state " + s) }, func(err error) { e.add("error " + err.Error()) })
	}()
	return func() error {
		cancel()
		return <-done
	}
}

func TestServeDeliversInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h broadcast.Hub[string]
		var a, b events
		stopA, stopB := serve(&h, &a), serve(&h, &b)
		synctest.Wait()
		h.Publish("1")
		synctest.Wait()
		h.Fail(errors.New("x"))
		synctest.Wait()
		h.Publish("2")
		synctest.Wait()
		want := []string{"state 1", "error x", "state 2"}
		for name, e := range map[string]*events{"a": &a, "b": &b} {
			if got := e.list(); !slices.Equal(got, want) {
				t.Errorf("subscriber %s got %q, want %q", name, got, want)
			}
		}
		if err := stopA(); err != context.Canceled {
			t.Errorf("Serve() = %v after cancel, want context.Canceled", err)
		}
		stopB()
		if n := h.Subscribers(); n != 0 {
			t.Errorf("Subscribers() = %d after both stopped, want 0", n)
		}
	})
}

// A subscriber that falls behind gets only the newest of the states queued
// for it, but every error; the publisher never waits for it.
func TestServeCoalescesStatesNotErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h broadcast.Hub[string]
		e := &events{block: make(chan struct{})}
		stop := serve(&h, e)
		defer stop()
		synctest.Wait()
		h.Publish("1") // delivered, and held in the callback
		synctest.Wait()
		h.Publish("2")
		h.Publish("3")
		h.Fail(errors.New("a"))
		h.Fail(errors.New("b"))
		h.Publish("4")
		h.Publish("5")
		close(e.block)
		synctest.Wait()
		want := []string{"state 1", "state 3", "error a", "error b", "state 5"}
		if got := e.list(); !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}

// A late subscriber starts from the latest state and, if the last lookup
// failed, its error.
func TestServeLateSubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h broadcast.Hub[string]
		if _, ok := h.Last(); ok {
			t.Error("Last() of a new Hub reports a state")
		}
		h.Publish("1")
		h.Publish("2")
		var e events
		stop := serve(&h, &e)
		synctest.Wait()
		if got, want := e.list(), []string{"state 2"}; !slices.Equal(got, want) {
			t.Errorf("late subscriber got %q, want %q", got, want)
		}
		stop()

		h.Fail(errors.New("down"))
		var f events
		stop = serve(&h, &f)
		defer stop()
		synctest.Wait()
		if got, want := f.list(), []string{"state 2", "error down"}; !slices.Equal(got, want) {
			t.Errorf("subscriber joining after an error got %q, want %q", got, want)
		}
		if s, ok := h.Last(); !ok || s != "2" {
			t.Errorf("Last() = %q, %v, want \"2\", true", s, ok)
		}
	})
}
