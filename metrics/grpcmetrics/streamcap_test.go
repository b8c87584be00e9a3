package grpcmetrics_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// The stream limit a real server sets (SETTINGS_MAX_CONCURRENT_STREAMS)
// reaches the operator: a pool of real connections learns it at the first
// Borrow, and grpc_pool_key_stream_cap and /stats's share_cap give it for
// the server's key, 0 for a server that sets none.
func TestServersStreamCapExported(t *testing.T) {
	capped := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 10})
	free := grpctest.Start(t, grpctest.Options{})
	_, p := grpcPool(t, grpcpool.Config[string, testpb.BenchmarkServiceClient]{ConnectTimeout: testTimeout},
		keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
	for _, addr := range []string{capped.Addr, free.Addr} {
		h, err := p.Borrow(grpctest.Context(t, testTimeout), addr)
		if err != nil {
			t.Fatalf("Borrow(%s) = %v", addr, err)
		}
		if err := grpcpool.Release(p, h, nil); err != nil {
			t.Fatal(err)
		}
	}
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	if err := metrics.AddPool(m, "backends", p, nil); err != nil {
		t.Fatal(err)
	}

	want := fmt.Sprintf(`
# HELP grpc_pool_key_stream_cap Streams the server of one key allows per connection, as its connections last learned (SETTINGS_MAX_CONCURRENT_STREAMS); 0: no limit or not known. For the __other__ series, the smallest nonzero cap of the keys it sums.
# TYPE grpc_pool_key_stream_cap gauge
grpc_pool_key_stream_cap{key=%q,pool="backends"} 10
grpc_pool_key_stream_cap{key=%q,pool="backends"} 0
`, capped.Addr, free.Addr)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_pool_key_stream_cap"); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}

	var rep metrics.StatsReport
	metricstest.GetJSON(t, metricstest.Serve(t, m, reg)+"/stats", http.StatusOK, &rep)
	got := make(map[string]int)
	for _, k := range rep.Pools[0].PerKey {
		got[k.Key] = k.ShareCap
	}
	if got[capped.Addr] != 10 || got[free.Addr] != 0 || len(got) != 2 {
		t.Errorf("/stats share_cap by key = %v, want %s: 10, %s: 0", got, capped.Addr, free.Addr)
	}
}
