package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// rpcMetrics counts RPCs; it is the Observer Metrics hands out.
type rpcMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	perKey   bool
	limit    int64

	keys  sync.Map     // target -> struct{}: targets with series of their own
	nkeys atomic.Int64 // entries in keys
}

func newRPCMetrics(o Options, limit int) *rpcMetrics {
	labels := []string{"method", "code"}
	if o.PerKey {
		labels = []string{"key", "method", "code"}
	}
	return &rpcMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: o.Namespace,
			Name:      "grpc_requests_total",
			Help:      "RPCs sent on pooled connections, by method and status code (and key, with PerKey).",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: o.Namespace,
			Name:      "grpc_request_duration_seconds",
			Help:      "Duration of RPCs sent on pooled connections, from start to end, by method (and key, with PerKey).",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels[:len(labels)-1]),
		perKey: o.PerKey,
		limit:  int64(limit),
	}
}

// ObserveRPC implements grpcfactory.Observer.
func (r *rpcMetrics) ObserveRPC(target, method string, code codes.Code, d time.Duration) {
	if !r.perKey {
		r.requests.WithLabelValues(method, code.String()).Inc()
		r.duration.WithLabelValues(method).Observe(d.Seconds())
		return
	}
	key := r.keyLabel(target)
	r.requests.WithLabelValues(key, method, code.String()).Inc()
	r.duration.WithLabelValues(key, method).Observe(d.Seconds())
}

// keyLabel returns target, or OtherKey once MaxKeySeries targets have
// series. A target keeps its series for the life of the Metrics: RPC
// counters cannot be dropped and summed elsewhere without breaking them.
func (r *rpcMetrics) keyLabel(target string) string {
	if _, ok := r.keys.Load(target); ok {
		return target
	}
	for {
		n := r.nkeys.Load()
		if n >= r.limit {
			return OtherKey
		}
		if r.nkeys.CompareAndSwap(n, n+1) {
			break
		}
	}
	if _, loaded := r.keys.LoadOrStore(target, struct{}{}); loaded {
		r.nkeys.Add(-1) // another RPC of the target got there first
	}
	return target
}
