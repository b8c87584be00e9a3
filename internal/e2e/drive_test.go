package e2e_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/e2e"
	"github.com/kpool-go/kpool/internal/grpctest"
)

func TestDriveStopsAtRequests(t *testing.T) {
	var calls atomic.Int64
	boom := errors.New("boom")
	r := e2e.Drive(context.Background(), e2e.Load{Callers: 8, Requests: 1000}, func(context.Context) error {
		if calls.Add(1)%10 == 0 {
			return boom
		}
		return nil
	})
	if got, want := calls.Load(), int64(1000); got != want {
		t.Errorf("calls = %d, want %d", got, want)
	}
	if r.Requests != 1000 || r.Errors != 100 || !errors.Is(r.FirstErr, boom) {
		t.Errorf("Drive() = %d requests, %d errors, first %v; want 1000, 100, %v", r.Requests, r.Errors, r.FirstErr, boom)
	}
	if got := r.Latency.Count(); got != 1000 {
		t.Errorf("Latency.Count() = %d, want 1000", got)
	}
}

func TestDriveStopsAtDuration(t *testing.T) {
	start := time.Now()
	r := e2e.Drive(context.Background(), e2e.Load{Callers: 4, Duration: 50 * time.Millisecond}, func(context.Context) error {
		time.Sleep(time.Millisecond)
		return nil
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Drive(Duration 50ms) took %v", took)
	}
	if r.Requests == 0 || r.Errors != 0 || r.Elapsed < 50*time.Millisecond {
		t.Errorf("Drive() = %d requests, %d errors in %v; want some, none, at least 50ms", r.Requests, r.Errors, r.Elapsed)
	}
	if r.RPS() <= 0 {
		t.Errorf("RPS() = %v, want > 0", r.RPS())
	}
}

// TestDriveStopsWithContext cancels from call 100 on. Every call from then
// on cancels too, so a caller that was preempted before its cancel cannot
// let the others run on: each of the 4 callers makes at most one call past
// the 99th, and Drive must stop them all.
func TestDriveStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	r := e2e.Drive(ctx, e2e.Load{Callers: 4}, func(ctx context.Context) error {
		if calls.Add(1) >= 100 {
			cancel()
		}
		return ctx.Err()
	})
	if r.Requests < 100 || r.Requests > 103 {
		t.Errorf("Drive() cancelled from call 100 on = %d requests, want 100 to 103", r.Requests)
	}
}

func TestParseKind(t *testing.T) {
	for _, k := range e2e.Kinds {
		got, err := e2e.ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v, nil", k.String(), got, err, k)
		}
	}
	if _, err := e2e.ParseKind("pooled"); err == nil {
		t.Error(`ParseKind("pooled") = nil error, want one`)
	}
}

// TestMeasureEveryKind runs each mode briefly against a real server with a
// stream cap and checks the connections each one ends with.
func TestMeasureEveryKind(t *testing.T) {
	tests := []struct {
		mode      e2e.Mode
		wantConns func(int64) bool
		want      string
	}{
		{e2e.Mode{Kind: e2e.Single}, func(n int64) bool { return n == 1 }, "1"},
		{e2e.Mode{Kind: e2e.RoundRobin, Conns: 4}, func(n int64) bool { return n == 4 }, "4"},
		{e2e.Mode{Kind: e2e.Exclusive, Conns: 4}, func(n int64) bool { return n >= 1 && n <= 4 }, "1 to 4"},
		// 40 callers at 10 shares need 4 connections; the pool may make
		// them all, never more than Conns.
		{e2e.Mode{Kind: e2e.Shared, Conns: 6, Shares: 10, Payload: make([]byte, 1024)}, func(n int64) bool { return n >= 1 && n <= 6 }, "1 to 6"},
		// Told nothing, with room for 40: it learns the server's 10 streams
		// and settles on the 4 connections 40 callers need (1.5x at most).
		{e2e.Mode{Kind: e2e.SharedAuto, Conns: 40}, func(n int64) bool { return n >= 4 && n <= 6 }, "4 to 6"},
	}
	for _, tt := range tests {
		t.Run(tt.mode.Kind.String(), func(t *testing.T) {
			rep, err := e2e.Measure(context.Background(), e2e.Bench{
				Server: grpctest.Options{MaxConcurrentStreams: 10, Delay: time.Millisecond},
				Mode:   tt.mode,
				Warmup: 100,
				Load:   e2e.Load{Callers: 40, Duration: 100 * time.Millisecond},
			})
			if err != nil {
				t.Fatalf("Measure() = %v", err)
			}
			if rep.Mode != tt.mode.Kind.String() {
				t.Errorf("Mode = %q, want %q", rep.Mode, tt.mode.Kind.String())
			}
			r := rep.Result
			if r.Requests == 0 || r.Errors != 0 {
				t.Errorf("Measure() = %d requests, %d errors (first %v); want some, none", r.Requests, r.Errors, r.FirstErr)
			}
			if !tt.wantConns(rep.Conns) {
				t.Errorf("Conns = %d, want %s", rep.Conns, tt.want)
			}
			if p50, p99 := r.Latency.Quantile(0.5), r.Latency.Quantile(0.99); p50 < time.Millisecond || p99 < p50 {
				t.Errorf("p50, p99 = %v, %v; want p50 >= the 1ms handler delay and p99 >= p50", p50, p99)
			}
		})
	}
}

func TestMeasureCancelledDuringWarmup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e2e.Measure(ctx, e2e.Bench{Mode: e2e.Mode{Kind: e2e.Shared}, Warmup: 10, Load: e2e.Load{Requests: 10}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Measure(cancelled ctx) = %v, want context.Canceled", err)
	}
}
