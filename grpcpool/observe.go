package grpcpool

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Observer is told about every RPC of the user's that a factory's
// connections carry (not the factory's own health Checks), for metrics:
// a grpcmetrics.Observer is one. ObserveRPC is called exactly once
// per RPC when it ends, retries included in the one call: for a unary RPC
// when its answer or error arrives (also when it fails before it is sent,
// as with an expired deadline), for a stream when the caller reads its end
// or an error, or when its context ends first. It is called concurrently
// from the RPCs' goroutines and must return quickly.
type Observer interface {
	// ObserveRPC reports one finished RPC: the target of the connection
	// that carried it, its full method name ("/pkg.Service/Method"), its
	// status code and how long it took from start to end.
	ObserveRPC(target, method string, code codes.Code, d time.Duration)
}

// ownRPC marks the context of the RPCs the factory makes itself (health
// Checks, connect probes), which are not the user's traffic.
type ownRPC struct{}

func withOwnRPC(ctx context.Context) context.Context { return context.WithValue(ctx, ownRPC{}, true) }

// observeOptions returns the dial options that report a connection's RPCs
// to obs: interceptors, which see a call once whatever gRPC does inside it
// (retries, failing before the first attempt).
func observeOptions(target string, obs Observer) []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if ctx.Value(ownRPC{}) != nil {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		obs.ObserveRPC(target, method, status.Code(err), time.Since(start))
		return err
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		start := time.Now()
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			obs.ObserveRPC(target, method, status.Code(err), time.Since(start))
			return nil, err
		}
		s := &observedStream{ClientStream: cs, target: target, method: method, start: start, obs: obs}
		// A stream the caller abandons by ending its context is never read
		// to its end: report it when the context ends. AfterFunc starts no
		// goroutine until then.
		s.stop = context.AfterFunc(ctx, func() { s.end(status.FromContextError(ctx.Err()).Code()) })
		return s, nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

// observedStream reports its stream's end once.
type observedStream struct {
	grpc.ClientStream
	target, method string
	start          time.Time
	obs            Observer
	stop           func() bool
	once           sync.Once
}

func (s *observedStream) end(code codes.Code) {
	s.once.Do(func() { s.obs.ObserveRPC(s.target, s.method, code, time.Since(s.start)) })
}

// RecvMsg reports the stream's end when it reads one: io.EOF is the server's
// OK, any other error its status.
func (s *observedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.stop()
		if err == io.EOF {
			s.end(codes.OK)
		} else {
			s.end(status.Code(err))
		}
	}
	return err
}

// HealthStats is a snapshot of a factory's health checks (Config.HealthCheck),
// for metrics and health endpoints. It is all zero without HealthCheck.
type HealthStats struct {
	// Serving, NotServing and Failed count health Checks since New by
	// answer: SERVING, another status, or no answer (HealthCheck.Timeout,
	// connection error). A caller's context never cuts a Check short;
	// Checks cut short because their client was destroyed are not counted.
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
