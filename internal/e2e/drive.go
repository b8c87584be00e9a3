package e2e

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpool-go/kpool/internal/backend"
)

// Load says how hard and how long Drive sends RPCs.
type Load struct {
	// Callers is the number of goroutines that send RPCs, each its next
	// one when the last has answered. Zero or negative: 1.
	Callers int
	// Requests stops the run after this many RPCs. Zero: no count limit.
	Requests int64
	// Duration stops the run this long after it started: no RPC starts
	// after it, the ones in flight finish. Zero: no time limit.
	Duration time.Duration
}

// Result is what one Drive measured.
type Result struct {
	// Requests is the number of RPCs sent, Errors the number that failed,
	// and FirstErr the first failure (nil: none).
	Requests, Errors int64
	FirstErr         error
	// Elapsed runs from the release of the callers until the last RPC
	// answered.
	Elapsed time.Duration
	// Latency holds the latency of every RPC, failed ones included.
	Latency *Histogram
}

// RPS returns the RPCs per second of the run.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Drive sends RPCs with call from load.Callers goroutines, released
// together, until load.Requests RPCs were sent, load.Duration passed, or
// ctx ended, whichever comes first; with neither limit set only ctx ends
// it. call gets ctx: RPCs in flight when ctx ends fail with its error.
// Drive returns when every caller has stopped.
func Drive(ctx context.Context, load Load, call func(context.Context) error) Result {
	var (
		next     atomic.Int64
		errCount atomic.Int64
		firstErr atomic.Pointer[error]
		stop     atomic.Bool
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		start    = make(chan struct{})
		h        = new(Histogram)
	)
	limit := load.Requests
	if limit <= 0 {
		limit = 1<<63 - 1
	}
	for range max(load.Callers, 1) {
		ready.Add(1)
		wg.Go(func() {
			ready.Done()
			<-start
			for !stop.Load() && ctx.Err() == nil {
				if next.Add(1) > limit {
					return
				}
				t0 := time.Now()
				err := call(ctx)
				h.Record(time.Since(t0))
				if err != nil {
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	ready.Wait()
	t0 := time.Now()
	if load.Duration > 0 {
		timer := time.AfterFunc(load.Duration, func() { stop.Store(true) })
		defer timer.Stop()
	}
	close(start)
	wg.Wait()
	r := Result{
		Requests: h.Count(),
		Errors:   errCount.Load(),
		Elapsed:  time.Since(t0),
		Latency:  h,
	}
	if p := firstErr.Load(); p != nil {
		r.FirstErr = *p
	}
	return r
}

// Bench is one measured run of the bench command: a fresh server, a client
// in one mode, a warm-up, then the measured load.
type Bench struct {
	// Server configures the backend, started on 127.0.0.1 for this run.
	Server backend.Options
	// Mode is the way of connecting.
	Mode Mode
	// Warmup RPCs run before the measurement, so that connections are made
	// and HTTP/2 windows have grown. Zero: none.
	Warmup int64
	// Load is the measured run.
	Load Load
	// CloseTimeout bounds the client's Close (a pool waits for RPCs in
	// flight). Zero: 10 s.
	CloseTimeout time.Duration
}

// Report is the outcome of a Bench.
type Report struct {
	// Mode is the mode's label: Mode.Name, or its Kind's name.
	Mode string
	// Result is the measured run's, without the warm-up.
	Result Result
	// Conns is the number of connections the server held at the end of
	// the measured run.
	Conns int64
}

// Measure runs b: it starts the server, connects, warms up, measures,
// closes the client and stops the server. It fails if the server or the
// client cannot start, or if the warm-up ends with ctx; failed RPCs are
// counted in the Report instead.
func Measure(ctx context.Context, b Bench) (rep Report, err error) {
	rep.Mode = b.Mode.label()
	srv, err := backend.Listen(b.Server)
	if err != nil {
		return rep, err
	}
	defer srv.Stop()
	c, err := NewClient(srv.Addr, b.Mode)
	if err != nil {
		return rep, err
	}
	defer func() {
		// The caller's ctx may have ended: the close still needs its time.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cmp.Or(b.CloseTimeout, 10*time.Second))
		defer cancel()
		if cerr := c.Close(cctx); cerr != nil && err == nil {
			err = fmt.Errorf("e2e: %s: close: %w", rep.Mode, cerr)
		}
	}()
	if b.Warmup > 0 {
		Drive(ctx, Load{Callers: b.Load.Callers, Requests: b.Warmup}, c.Call)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	rep.Result = Drive(ctx, b.Load, c.Call)
	rep.Conns = srv.Open()
	return rep, nil
}
