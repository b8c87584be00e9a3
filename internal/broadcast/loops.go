package broadcast

import (
	"context"
	"sync"
)

// Loops runs one lookup loop per name for as long as anyone serves that
// name, and fans the loop's states and errors out, through a Hub, to every
// caller serving it: the watch a resolver shares among the watchers of one
// service, when each lookup costs something (a Consul blocking query, a
// DNS query). The zero Loops is ready to use; its methods are safe for
// concurrent use.
type Loops[S any] struct {
	mu    sync.Mutex // protects loops
	loops map[string]*loop[S]
}

// loop is the lookup loop of one name and the callers it serves.
type loop[S any] struct {
	hub    Hub[S]
	refs   int // callers serving it; under Loops.mu
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
}

// Serve serves name's states and errors to update and fail as Hub.Serve
// does, until ctx ends, and returns ctx.Err() then. If nobody serves name
// yet, it first starts run in a goroutine of its own, with a context of
// its own and the Hub to publish to; run must return once that context
// ends. When the last caller serving name leaves, Serve cancels run and
// waits for it to return before it returns, with last true, so that the
// caller can release what the loops held (idle HTTP connections).
func (l *Loops[S]) Serve(ctx context.Context, name string, run func(context.Context, *Hub[S]), update func(S), fail func(error)) (last bool, err error) {
	l.mu.Lock()
	lp := l.loops[name]
	if lp == nil {
		lctx, cancel := context.WithCancel(context.Background())
		lp = &loop[S]{cancel: cancel, done: make(chan struct{})}
		if l.loops == nil {
			l.loops = make(map[string]*loop[S])
		}
		l.loops[name] = lp
		go func() {
			defer close(lp.done)
			run(lctx, &lp.hub)
		}()
	}
	lp.refs++
	l.mu.Unlock()

	err = lp.hub.Serve(ctx, update, fail)

	l.mu.Lock()
	lp.refs--
	last = lp.refs == 0
	if last {
		delete(l.loops, name)
	}
	l.mu.Unlock()
	if last {
		lp.cancel()
		<-lp.done
	}
	return last, err
}
