package keyedpool_test

import (
	"context"
	"testing"
	"time"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/keyedpool"
)

// Borrow and Return of an idle object must not allocate, in exclusive and in
// shared mode: the hot path of every user.
func TestBorrowReturnAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; allocation budgets are checked without -race")
	}
	for _, tt := range []struct {
		name string
		cfg  keyedpool.Config
	}{
		{"Exclusive", keyedpool.Config{}},
		{"Shared", keyedpool.Config{MaxSharesPerObject: 4}},
		// The options that stamp objects and leases, without an evictor
		// (the real clock) and with one (the pool's clock).
		{"LifetimeAbandoned", keyedpool.Config{MaxLifetime: time.Hour, Abandoned: &keyedpool.AbandonedConfig{}}},
		{"Evictor", keyedpool.Config{
			TimeBetweenEvictionRuns: time.Hour, MaxLifetime: time.Hour, MinIdlePerKey: 1,
			Abandoned: &keyedpool.AbandonedConfig{RemoveOnMaintenance: true}, MakeFailureThreshold: 3,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPool(t, tt.cfg)
			ctx := context.Background()
			mustReturn(t, p, mustBorrow(t, p, "k"))
			allocs := testing.AllocsPerRun(1000, func() {
				h, err := p.Borrow(ctx, "k")
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Return(h); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Borrow+Return allocs = %v, want 0", allocs)
			}
		})
	}
	t.Run("SharedLeasesHeldTogether", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 1})
		ctx := context.Background()
		hs := make([]*handle, 4)
		borrowAll := func() {
			for i := range hs {
				h, err := p.Borrow(ctx, "k")
				if err != nil {
					t.Fatal(err)
				}
				hs[i] = h
			}
			for _, h := range hs {
				if err := p.Return(h); err != nil {
					t.Fatal(err)
				}
			}
		}
		borrowAll() // grows the object's leases to 4 once
		if allocs := testing.AllocsPerRun(500, borrowAll); allocs != 0 {
			t.Errorf("4 shared Borrows+Returns allocs = %v, want 0", allocs)
		}
	})
}

func BenchmarkBorrowReturn(b *testing.B) {
	f := factory.Funcs[string, *int]{MakeFunc: func(context.Context, string) (*int, error) { return new(int), nil }}
	p, err := keyedpool.New(f, keyedpool.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h, err := p.Borrow(ctx, "k")
		if err != nil {
			b.Fatal(err)
		}
		p.Return(h)
	}
}
