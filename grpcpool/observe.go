package grpcpool

import (
	"context"
	"errors"
	"io"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/keyedpool"
)

// Observer is told about every RPC of the user's that a factory's
// connections carry (not the factory's own health Checks), for metrics:
// a grpcmetrics.Observer is one. ObserveRPC is called exactly once
// per RPC when it ends, retries included in the one call: for a unary RPC
// when its answer or error arrives (also when it fails before it is sent,
// as with an expired deadline), for a stream when the caller reads its end
// or an error, or when its context ends first. It is called concurrently
// from the RPCs' goroutines and must return quickly. A panic in it is
// recovered, and added to the RPC's error as an error wrapping
// keyedpool.ErrFactoryPanic where the RPC ends in an error; at a
// stream's clean end (io.EOF, or the response of a stream that has one)
// or its context's, which callers do not read as errors, it is dropped.
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
		return joinPanic(err, observe(obs, target, method, status.Code(err), time.Since(start)))
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		start := time.Now()
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, joinPanic(err, observe(obs, target, method, status.Code(err), time.Since(start)))
		}
		s := &observedStream{ClientStream: cs, target: target, method: method, start: start, obs: obs, oneResponse: !desc.ServerStreams}
		// A stream the caller abandons by ending its context is never read
		// to its end: report it when the context ends. AfterFunc starts no
		// goroutine until then. (A panic of the Observer's there has no
		// caller to go to, and ends with the callback.)
		s.stop = context.AfterFunc(ctx, func() { _ = s.end(status.FromContextError(ctx.Err()).Code()) })
		return s, nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

// observe reports one RPC to obs, and returns a panic of obs's as an error
// wrapping keyedpool.ErrFactoryPanic, so that it neither unwinds through
// the RPC's bookkeeping nor goes unseen.
func observe(obs Observer, target, method string, code codes.Code, d time.Duration) (perr error) {
	defer func() {
		if v := recover(); v != nil {
			perr = &keyedpool.PanicError{Method: "ObserveRPC", Value: v, Stack: debug.Stack()}
		}
	}()
	obs.ObserveRPC(target, method, code, d)
	return nil
}

// observedStream reports its stream's end once.
type observedStream struct {
	grpc.ClientStream
	target, method string
	start          time.Time
	obs            Observer
	oneResponse    bool // the stream ends with its first response (no server streaming)
	stop           func() bool
	once           sync.Once
}

func (s *observedStream) end(code codes.Code) (perr error) {
	s.once.Do(func() { perr = observe(s.obs, s.target, s.method, code, time.Since(s.start)) })
	return perr
}

// RecvMsg reports the stream's end when it reads one: io.EOF is the server's
// OK, any other error its status, and the response of a stream that has
// one (gRPC ends it then) OK. A panic of the Observer's is added to an
// error RecvMsg returns; with io.EOF or a response, which callers compare
// and use as they are, it is dropped.
func (s *observedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	switch {
	case err == io.EOF, err == nil && s.oneResponse:
		s.stop()
		_ = s.end(codes.OK)
	case err != nil:
		s.stop()
		err = joinPanic(err, s.end(status.Code(err)))
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
