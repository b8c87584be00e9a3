package reload

import "github.com/prometheus/client_golang/prometheus"

// collector exports a Watcher's Counts as one counter family with a result
// label, read at each scrape.
type collector struct {
	desc   *prometheus.Desc
	counts func() Counts
}

// NewCollector returns a Prometheus collector of counts (a Watcher's
// Counts method) as the counter <namespace>_config_reloads_total with the
// label result="ok" (versions applied) or "failed" (versions refused).
// Empty namespace: no prefix.
func NewCollector(namespace string, counts func() Counts) prometheus.Collector {
	return &collector{
		desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "config", "reloads_total"),
			"Reloads of the configuration file, by result: ok (applied) or failed (refused; the running configuration stayed).",
			[]string{"result"}, nil),
		counts: counts,
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.counts()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n.OK), "ok")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n.Failed), "failed")
}
