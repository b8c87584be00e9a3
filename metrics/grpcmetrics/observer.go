package grpcmetrics

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/metrics"
)

// Observer counts RPCs in grpc_requests_total and
// grpc_request_duration_seconds: set it as grpcpool.Config.Observer. It
// is safe for concurrent use.
type Observer struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	perKey   bool
	limit    int64

	keys  sync.Map     // target -> struct{}: targets with series of their own
	nkeys atomic.Int64 // entries in keys
}

var _ grpcpool.Observer = (*Observer)(nil)

// NewObserver returns an Observer whose families follow m's Options (the
// Namespace prefix; with PerKey, a key label capped at MaxKeySeries
// targets) and registers them as m's (metrics.Metrics.Register), so that
// m.Unregister takes them off too. It returns the registry's error if the
// families are registered already, as by a second Observer over m; one
// Observer serves every factory of m.
func NewObserver(m *metrics.Metrics) (*Observer, error) {
	opts := m.Options()
	labels := []string{"method", "code"}
	if opts.PerKey {
		labels = []string{"key", "method", "code"}
	}
	obs := &Observer{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: opts.Namespace,
			Name:      "grpc_requests_total",
			Help:      "RPCs sent on pooled connections, by method and status code (and key, with PerKey).",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: opts.Namespace,
			Name:      "grpc_request_duration_seconds",
			Help:      "Duration of RPCs sent on pooled connections, from start to end, by method (and key, with PerKey).",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels[:len(labels)-1]),
		perKey: opts.PerKey,
		limit:  int64(opts.MaxKeySeries),
	}
	// One collector for both families: a registration that fails leaves
	// neither on the registry.
	if err := m.Register(families{obs.requests, obs.duration}); err != nil {
		return nil, fmt.Errorf("grpcmetrics: register: %w", err)
	}
	return obs, nil
}

// ObserveRPC implements grpcpool.Observer. A target or method that is not
// valid UTF-8 is shown with its invalid bytes replaced, as metrics shows
// keys.
func (o *Observer) ObserveRPC(target, method string, code codes.Code, d time.Duration) {
	method = validUTF8(method)
	if !o.perKey {
		o.requests.WithLabelValues(method, code.String()).Inc()
		o.duration.WithLabelValues(method).Observe(d.Seconds())
		return
	}
	key := o.keyLabel(validUTF8(target))
	o.requests.WithLabelValues(key, method, code.String()).Inc()
	o.duration.WithLabelValues(key, method).Observe(d.Seconds())
}

// validUTF8 returns s with its invalid bytes replaced: Prometheus refuses
// (with a panic) a label value that is not valid UTF-8. Valid text, all
// there is in practice, is returned as it is, without a copy.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// keyLabel returns target, or metrics.OtherKey once MaxKeySeries targets
// have series. A target keeps its series for the life of the Observer: RPC
// counters cannot be dropped and summed elsewhere without breaking them.
func (o *Observer) keyLabel(target string) string {
	if _, ok := o.keys.Load(target); ok {
		return target
	}
	for {
		n := o.nkeys.Load()
		if n >= o.limit {
			return metrics.OtherKey
		}
		if o.nkeys.CompareAndSwap(n, n+1) {
			break
		}
	}
	if _, loaded := o.keys.LoadOrStore(target, struct{}{}); loaded {
		o.nkeys.Add(-1) // another RPC of the target got there first
	}
	return target
}

// families is several collectors registered as one.
type families []prometheus.Collector

func (f families) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range f {
		c.Describe(ch)
	}
}

func (f families) Collect(ch chan<- prometheus.Metric) {
	for _, c := range f {
		c.Collect(ch)
	}
}
