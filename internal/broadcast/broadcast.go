package broadcast

import (
	"context"
	"sync"
)

// Hub fans out states of type S and errors. The zero Hub is ready to use;
// its methods are safe for concurrent use.
type Hub[S any] struct {
	mu      sync.Mutex // protects the fields below; held only to queue, never to deliver
	last    S
	hasLast bool
	lastErr error // the last lookup's error; nil after a state
	subs    map[*sub[S]]struct{}
}

// event is one state or one error.
type event[S any] struct {
	state S
	err   error // non-nil: an error event
}

// sub is one subscriber's queue.
type sub[S any] struct {
	mu     sync.Mutex // protects queue
	queue  []event[S]
	notify chan struct{} // 1-buffered: the queue is not empty
}

func (s *sub[S]) push(e event[S]) {
	s.mu.Lock()
	// A state replaces a state queued last: only the newest snapshot
	// matters. Errors are each delivered, so they can be counted.
	if n := len(s.queue); n > 0 && e.err == nil && s.queue[n-1].err == nil {
		s.queue[n-1] = e
	} else {
		s.queue = append(s.queue, e)
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default: // already notified
	}
}

func (s *sub[S]) take() []event[S] {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	return q
}

// Publish makes state the latest and queues it for every subscriber.
func (h *Hub[S]) Publish(state S) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last, h.hasLast, h.lastErr = state, true, nil
	for s := range h.subs {
		s.push(event[S]{state: state})
	}
}

// Fail records a failed lookup and queues err for every subscriber. The
// latest state stays as it was.
func (h *Hub[S]) Fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
	for s := range h.subs {
		s.push(event[S]{err: err})
	}
}

// Last returns the latest state and whether there is one.
func (h *Hub[S]) Last() (S, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last, h.hasLast
}

// Subscribers returns the number of subscribers being served.
func (h *Hub[S]) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Serve delivers to the caller's goroutine, one at a time and in order,
// the latest state and the last error (if the last lookup failed) as they
// are when it starts, then every state and error published after, until
// ctx ends. A state is passed to update, an error to fail. Serve returns
// ctx.Err() when ctx ends; events not yet delivered are dropped.
func (h *Hub[S]) Serve(ctx context.Context, update func(S), fail func(error)) error {
	s := &sub[S]{notify: make(chan struct{}, 1)}
	h.mu.Lock()
	if h.hasLast {
		s.push(event[S]{state: h.last})
	}
	if h.lastErr != nil {
		s.push(event[S]{err: h.lastErr})
	}
	if h.subs == nil {
		h.subs = make(map[*sub[S]]struct{})
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.notify:
		}
		for _, e := range s.take() {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if e.err != nil {
				fail(e.err)
			} else {
				update(e.state)
			}
		}
	}
}
