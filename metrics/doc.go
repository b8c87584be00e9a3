// Package metrics exports kpool's pools, gRPC traffic, health checks and
// service discovery to Prometheus, and serves the /metrics, /health and
// /stats endpoints an operator reads to see whether a pool is healthy,
// saturated or leaking.
//
// A Metrics is a set of named pools and service sources. Its collector
// reads each pool's Stats (and, with Options.PerKey, AllKeyStats) once per
// scrape: pools keep no bookkeeping of their own for it, so a pool pays
// nothing on its hot path for being watched. gRPC traffic is counted by the
// Observer it hands to grpcfactory.Config.Observer.
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, metrics.Options{Namespace: "myapp"})
//	f, err := grpcfactory.New(grpcfactory.Config[string, pb.FooClient]{..., Observer: m.Observer()})
//	p, err := keyedpool.New(f, keyedpool.Config{...})
//	err = metrics.AddPool(m, "foo", p, f) // f: health-check counters
//	go metrics.ListenAndServe(ctx, "", m.Handler(reg))
//
// Every name below takes the Options.Namespace prefix; README lists them
// all with their types and labels.
package metrics
