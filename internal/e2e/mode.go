package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// Kind is a way of sending RPCs to one backend.
type Kind int

const (
	// Single sends every RPC over one ClientConn, as most services use
	// gRPC.
	Single Kind = iota
	// RoundRobin picks one of Mode.Conns ClientConns in turn, no pool: the
	// hand-made way past a stream cap, every connection open all the time.
	RoundRobin
	// Exclusive borrows a pooled connection for each RPC, one RPC per
	// connection at a time, as commons-pool2 users know it; the pool holds
	// up to Mode.Conns connections.
	Exclusive
	// Shared sends RPCs through a grpcpool.Conn over a pool with shared
	// leases: up to Mode.Shares RPCs per connection, up to Mode.Conns
	// connections.
	Shared
	// SharedAuto is Shared with no share limit of the pool's own
	// (keyedpool.MaxShares): each connection takes as many RPCs as its
	// server allows, which it learns, and the pool opens another, up to
	// Mode.Conns, when all are full. Mode.Shares is ignored.
	SharedAuto
)

// Kinds lists every Kind in the order the bench command runs them.
var Kinds = []Kind{Single, RoundRobin, Exclusive, Shared, SharedAuto}

var kindNames = [...]string{Single: "single", RoundRobin: "roundrobin", Exclusive: "exclusive", Shared: "shared", SharedAuto: "shared-auto"}

// String returns the kind's name: single, roundrobin, exclusive, shared or
// shared-auto.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind returns the Kind named s, as String spells it.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if s == name {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q, want one of %s", s, strings.Join(kindNames[:], ", "))
}

// Mode is a Kind with its sizes.
type Mode struct {
	// Name labels the mode in reports. Empty: the Kind's name.
	Name string
	// Kind is the way of connecting.
	Kind Kind
	// Conns is the number of connections of RoundRobin, and the pool's
	// MaxTotalPerKey (and MaxIdlePerKey) for Exclusive, Shared and
	// SharedAuto. Zero or negative: 16. Single ignores it.
	Conns int
	// Shares is the pool's MaxSharesPerObject for Shared: set it to the
	// server's stream cap. Zero or negative: 100. The other kinds ignore it.
	Shares int
	// Payload is the request's payload. Nil: "ping".
	Payload []byte
}

// Mode defaults.
const (
	DefaultConns  = 16
	DefaultShares = 100
)

// ConnectTimeout bounds the pooled modes' connects (grpcpool's
// ConnectTimeout), so that a dead server fails an RPC instead of hanging it.
const ConnectTimeout = 10 * time.Second

func (m Mode) label() string {
	if m.Name != "" {
		return m.Name
	}
	return m.Kind.String()
}

// Client sends one kind of RPC to one backend the way its Mode says. Call
// is safe for concurrent use.
type Client struct {
	call   func(context.Context) error
	closes []func(context.Context) error
}

// Call sends one UnaryCall and returns its error.
func (c *Client) Call(ctx context.Context) error { return c.call(ctx) }

// Close closes the client's connections or pool. A pool's Close waits,
// bounded by ctx, for RPCs in flight.
func (c *Client) Close(ctx context.Context) error {
	var errs []error
	for _, f := range c.closes {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// NewClient connects to the plaintext gRPC BenchmarkService at addr in mode
// m. Connections are made lazily (single, roundrobin) or on first use
// (exclusive, shared); run a warm-up before measuring.
func NewClient(addr string, m Mode) (*Client, error) {
	conns := m.Conns
	if conns <= 0 {
		conns = DefaultConns
	}
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: m.Payload}}
	if m.Payload == nil {
		req.Payload.Body = []byte("ping")
	}
	c := &Client{}
	switch m.Kind {
	case Single, RoundRobin:
		n := 1
		if m.Kind == RoundRobin {
			n = conns
		}
		stubs := make([]testpb.BenchmarkServiceClient, n)
		for i := range stubs {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				c.Close(context.Background())
				return nil, fmt.Errorf("e2e: %v: %w", m.label(), err)
			}
			c.closes = append(c.closes, func(context.Context) error { return cc.Close() })
			stubs[i] = testpb.NewBenchmarkServiceClient(cc)
		}
		if n == 1 {
			c.call = func(ctx context.Context) error {
				_, err := stubs[0].UnaryCall(ctx, req)
				return err
			}
			return c, nil
		}
		var next atomic.Uint64
		c.call = func(ctx context.Context) error {
			_, err := stubs[next.Add(1)%uint64(n)].UnaryCall(ctx, req)
			return err
		}
		return c, nil
	case Exclusive, Shared, SharedAuto:
		shares := 1
		switch m.Kind {
		case Shared:
			shares = m.Shares
			if shares <= 0 {
				shares = DefaultShares
			}
		case SharedAuto:
			shares = keyedpool.MaxShares
		}
		p, err := newPool(conns, shares)
		if err != nil {
			return nil, fmt.Errorf("e2e: %v: %w", m.label(), err)
		}
		c.closes = append(c.closes, p.Close)
		if m.Kind != Exclusive {
			stub := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, addr))
			c.call = func(ctx context.Context) error {
				_, err := stub.UnaryCall(ctx, req)
				return err
			}
			return c, nil
		}
		c.call = func(ctx context.Context) error {
			h, err := p.Borrow(ctx, addr)
			if err != nil {
				return err
			}
			_, err = h.Value().Stub().UnaryCall(ctx, req)
			grpcpool.Release(p, h, err)
			return err
		}
		return c, nil
	}
	return nil, fmt.Errorf("e2e: unknown kind %v", m.Kind)
}

func newPool(conns, shares int) (*keyedpool.Pool[string, *grpcpool.Client[testpb.BenchmarkServiceClient]], error) {
	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:        testpb.NewBenchmarkServiceClient,
		Insecure:       true,
		ConnectTimeout: ConnectTimeout,
	})
	if err != nil {
		return nil, err
	}
	return keyedpool.New(f, keyedpool.Config{
		MaxTotalPerKey:     conns,
		MaxIdlePerKey:      conns,
		MaxSharesPerObject: shares,
	})
}
