package keyedpool_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/keyedpool"
)

type conn struct{ addr string }

func Example() {
	f := factory.Funcs[string, *conn]{
		MakeFunc: func(ctx context.Context, addr string) (*conn, error) {
			return &conn{addr: addr}, nil // dial addr here
		},
	}
	p, err := keyedpool.New(f, keyedpool.Config{MaxTotal: 64, MaxTotalPerKey: 4})
	if err != nil {
		panic(err)
	}
	defer p.Close(context.Background())

	h, err := p.Borrow(context.Background(), "10.0.0.1:443")
	if err != nil {
		panic(err)
	}
	fmt.Println("using", h.Value().addr)
	if err := p.Return(h); err != nil {
		panic(err)
	}
	fmt.Println("idle:", p.KeyStats("10.0.0.1:443").Idle)
	// Output:
	// using 10.0.0.1:443
	// idle: 1
}

func ExamplePool_Borrow_failFast() {
	f := factory.Funcs[string, *conn]{
		MakeFunc: func(_ context.Context, addr string) (*conn, error) { return &conn{addr}, nil },
	}
	p, _ := keyedpool.New(f, keyedpool.Config{MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	defer p.Close(context.Background())

	h, _ := p.Borrow(context.Background(), "a")
	_, err := p.Borrow(context.Background(), "a")
	fmt.Println(errors.Is(err, keyedpool.ErrExhausted))
	p.Return(h)
	// Output: true
}

func ExamplePool_Borrow_shared() {
	f := factory.Funcs[string, *conn]{
		MakeFunc: func(_ context.Context, addr string) (*conn, error) { return &conn{addr}, nil },
	}
	// Up to 100 borrowers share one connection, as HTTP/2 streams do; a
	// second connection is made only when the first is full.
	p, _ := keyedpool.New(f, keyedpool.Config{MaxSharesPerObject: 100})
	defer p.Close(context.Background())

	h1, _ := p.Borrow(context.Background(), "a")
	h2, _ := p.Borrow(context.Background(), "a")
	fmt.Println(h1.Value() == h2.Value(), p.Stats().SharesInUse)
	p.Return(h1)
	p.Return(h2)
	// Output: true 2
}

func ExamplePool_RunEviction() {
	type conn struct {
		addr   string
		broken bool // the server dropped it while idle
	}
	f := factory.Funcs[string, *conn]{
		MakeFunc: func(_ context.Context, addr string) (*conn, error) { return &conn{addr: addr}, nil },
		ValidateFunc: func(_ context.Context, _ string, c *conn) error {
			if c.broken {
				return errors.New("connection reset")
			}
			return nil
		},
	}
	// In production set TimeBetweenEvictionRuns and let the evictor call
	// RunEviction; here it is called by hand.
	p, _ := keyedpool.New(f, keyedpool.Config{
		TestWhileIdle:          true,
		NumTestsPerEvictionRun: -1, // every idle object
		MinIdlePerKey:          2,
	})
	defer p.Close(context.Background())

	a, _ := p.Borrow(context.Background(), "a")
	b, _ := p.Borrow(context.Background(), "a")
	a.Value().broken = true
	p.Return(a)
	p.Return(b)

	p.RunEviction(context.Background()) // destroys the broken one, makes one to keep 2 idle
	s := p.Stats()
	fmt.Println("evicted:", s.DestroyedByEvictor, "idle:", s.Idle, "created:", s.Created)
	// Output: evicted: 1 idle: 2 created: 3
}
