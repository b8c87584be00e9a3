package grpcmetrics_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/kpool-go/kpool/metrics"
	"github.com/kpool-go/kpool/metrics/grpcmetrics"
)

// BenchmarkObserveRPC is what the gRPC observer adds to each RPC.
func BenchmarkObserveRPC(b *testing.B) {
	for _, perKey := range []bool{false, true} {
		b.Run(fmt.Sprintf("PerKey=%v", perKey), func(b *testing.B) {
			m, err := metrics.New(prometheus.NewRegistry(), metrics.Options{PerKey: perKey})
			if err != nil {
				b.Fatal(err)
			}
			obs, err := grpcmetrics.NewObserver(m)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					obs.ObserveRPC("10.0.0.1:443", "/pkg.Service/Method", codes.OK, 3*time.Millisecond)
				}
			})
		})
	}
}
