package grpcfactory

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Observer is told about every RPC of the user's that a factory's
// connections carry (not the factory's own health Checks), for
// metrics (package metrics implements it over Prometheus). ObserveRPC is
// called once per RPC when it ends: for a unary RPC when its answer or
// error arrives, for a stream however it ends (status received, context
// ended, connection lost). It is called concurrently from the RPCs'
// goroutines and must return quickly.
type Observer interface {
	// ObserveRPC reports one finished RPC: the target of the connection
	// that carried it, its full method name ("/pkg.Service/Method"), its
	// status code and how long it took from start to end.
	ObserveRPC(target, method string, code codes.Code, d time.Duration)
}

// rpcStats is a connection's stats.Handler that feeds an Observer.
type rpcStats struct {
	target string
	obs    Observer
}

// rpcTag carries the method of one RPC from TagRPC to its End event.
type rpcTag struct{}

// ownRPC marks the context of the RPCs the factory makes itself (health
// Checks, connect probes), which are not the user's traffic.
type ownRPC struct{}

func withOwnRPC(ctx context.Context) context.Context { return context.WithValue(ctx, ownRPC{}, true) }

func (s *rpcStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if ctx.Value(ownRPC{}) != nil {
		return ctx
	}
	return context.WithValue(ctx, rpcTag{}, info.FullMethodName)
}

func (s *rpcStats) HandleRPC(ctx context.Context, st stats.RPCStats) {
	end, ok := st.(*stats.End)
	if !ok {
		return
	}
	if method, ok := ctx.Value(rpcTag{}).(string); ok {
		s.obs.ObserveRPC(s.target, method, status.Code(end.Error), end.EndTime.Sub(end.BeginTime))
	}
}

func (*rpcStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (*rpcStats) HandleConn(context.Context, stats.ConnStats)                       {}

// HealthStats is a snapshot of a factory's health checks (Config.HealthCheck),
// for metrics and health endpoints. It is all zero without HealthCheck.
type HealthStats struct {
	// Serving, NotServing and Failed count health Checks since New by
	// answer: SERVING, another status, or no answer (timeout, connection
	// error). Checks cut short by their caller's context are not counted.
	Serving, NotServing, Failed int64
	// Targets is the number of targets the factory has live clients for.
	Targets int
	// Unhealthy lists, sorted, the targets with live clients whose latest
	// health Check was not SERVING.
	Unhealthy []string
}

// targets tracks, per target, the live clients and the latest health answer.
type targets struct {
	mu                          sync.Mutex // protects the fields below
	m                           map[string]*targetState
	serving, notServing, failed int64
}

type targetState struct {
	clients int
	bad     bool // the latest health Check of any of its clients was not SERVING
}

func (t *targets) made(target string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*targetState)
	}
	ts := t.m[target]
	if ts == nil {
		ts = &targetState{}
		t.m[target] = ts
	}
	ts.clients++
}

func (t *targets) destroyed(target string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ts := t.m[target]; ts != nil {
		if ts.clients--; ts.clients <= 0 {
			delete(t.m, target)
		}
	}
}

func (t *targets) checked(target string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err == nil:
		t.serving++
	case errors.Is(err, ErrNotServing):
		t.notServing++
	default:
		t.failed++
	}
	if ts := t.m[target]; ts != nil {
		ts.bad = err != nil
	}
}

func (t *targets) stats() HealthStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := HealthStats{Serving: t.serving, NotServing: t.notServing, Failed: t.failed, Targets: len(t.m)}
	for name, ts := range t.m {
		if ts.bad {
			s.Unhealthy = append(s.Unhealthy, name)
		}
	}
	slices.Sort(s.Unhealthy)
	return s
}
