package metrics_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// BenchmarkScrape is the cost of one scrape of a pool with idle objects
// under many keys: what the pool's lock is held for is AllKeyStats' copy.
func BenchmarkScrape(b *testing.B) {
	for _, keys := range []int{100, 10000} {
		for _, perKey := range []bool{false, true} {
			b.Run(fmt.Sprintf("Keys=%d/PerKey=%v", keys, perKey), func(b *testing.B) {
				reg := prometheus.NewRegistry()
				m, err := metrics.New(reg, metrics.Options{PerKey: perKey})
				if err != nil {
					b.Fatal(err)
				}
				p, err := keyedpool.New(&testfactory.Factory{}, keyedpool.Config{MaxTotal: keys})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close(context.Background())
				for i := range keys {
					if err := p.AddObject(context.Background(), fmt.Sprintf("k%05d", i)); err != nil {
						b.Fatal(err)
					}
				}
				if err := metrics.AddPool(m, "p", p, nil); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := reg.Gather(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
