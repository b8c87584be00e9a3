package benchmarks_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// backendNames returns n keys: backend-0, backend-1, ...
func backendNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint("backend-", i)
	}
	return names
}

// BenchmarkRunEviction times one eviction run testing 3 objects over 100,000
// idle objects spread over 100 or 10,000 keys: the cost must follow the
// objects tested, not the number of keys.
func BenchmarkRunEviction(b *testing.B) {
	const objects = 100_000
	for _, keys := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("Keys=%d/Objects=%d", keys, objects), func(b *testing.B) {
			names := backendNames(keys)
			per := objects / keys
			p, err := newKpool(keyedpool.Config{
				MaxTotalPerKey:         per,
				MaxIdlePerKey:          per,
				NumTestsPerEvictionRun: 3,
				TestWhileIdle:          true,
			}, names, per)
			if err != nil {
				b.Fatal(err)
			}
			defer closeKpool(b, p)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := p.RunEviction(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRunEvictionSharedLent times one eviction run over 100,000
// shared objects lent at their cap, with MaxLifetime on: the run looks at 3
// of them for expiry, so its cost must not follow the objects lent.
func BenchmarkRunEvictionSharedLent(b *testing.B) {
	const objects = 100_000
	for _, keys := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("Keys=%d/Lent=%d", keys, objects), func(b *testing.B) {
			names := backendNames(keys)
			per := objects / keys
			p, err := newKpool(keyedpool.Config{
				MaxTotalPerKey:         per,
				MaxIdlePerKey:          per,
				MaxSharesPerObject:     2,
				MaxLifetime:            time.Hour,
				NumTestsPerEvictionRun: 3,
			}, names, per)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var hs []*keyedpool.Pooled[string, *conn]
			for _, k := range names {
				for range 2 * per {
					h, err := p.Borrow(ctx, k)
					if err != nil {
						b.Fatal(err)
					}
					hs = append(hs, h)
				}
			}
			if s := p.Stats(); s.Active != objects {
				b.Fatalf("Active = %d, want %d", s.Active, objects)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := p.RunEviction(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			for _, h := range hs {
				if err := p.Return(h); err != nil {
					b.Fatal(err)
				}
			}
			closeKpool(b, p)
		})
	}
}

// BenchmarkParallelWithEvictor is BenchmarkParallel's kpool case, with 100
// more keys of 8 idle objects each, beside the same with an evictor testing
// 3 of them every millisecond (TestWhileIdle): the hot path must not slow by
// more than 10%.
func BenchmarkParallelWithEvictor(b *testing.B) {
	ctx := context.Background()
	n := 4 * runtime.GOMAXPROCS(0)
	keys := []string{"k"}
	for i := range 100 {
		keys = append(keys, fmt.Sprint("idle-", i))
	}
	for _, every := range []time.Duration{0, time.Millisecond} {
		name := "evictor=off"
		if every > 0 {
			name = "evictor=" + every.String()
		}
		b.Run(name, func(b *testing.B) {
			p, err := newKpool(keyedpool.Config{
				MaxTotalPerKey:          n,
				MaxIdlePerKey:           n,
				TimeBetweenEvictionRuns: every,
				TestWhileIdle:           true,
			}, keys, 8)
			if err != nil {
				b.Fatal(err)
			}
			defer closeKpool(b, p)
			b.ReportAllocs()
			parallelBorrows(b, nil,
				func(*rng) (*keyedpool.Pooled[string, *conn], error) { return p.Borrow(ctx, "k") },
				p.Return)
			b.StopTimer()
			if every > 0 && b.Elapsed() > 100*every && p.Stats().EvictionTests == 0 {
				b.Error("the evictor never ran")
			}
		})
	}
}
