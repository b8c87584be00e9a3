// Package metrics exports kpool's pools to Prometheus, with the health
// checks and the services of discovery that sources report, and serves the
// /metrics, /health and /stats endpoints an operator reads to see whether a
// pool is healthy, saturated or leaking.
//
// A Metrics is a set of named pools and service sources. Its collector
// reads each pool's Stats (and, with Options.PerKey, AllKeyStats) once per
// scrape: pools keep no bookkeeping of their own for it, so a pool pays
// nothing on its hot path for being watched.
//
// The package imports keyedpool and no gRPC, so that a plain keyed pool's
// metrics do not link it. The gRPC layer's parts live in
// metrics/grpcmetrics, which imports this package: its Observer counts
// RPCs, and FactoryHealth and RouterServices adapt a *grpcpool.Factory
// and a *discovery.Router as a HealthSource and a ServiceSource.
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, metrics.Options{Namespace: "myapp"})
//	obs, err := grpcmetrics.NewObserver(m) // the RPC families
//	f, err := grpcpool.New(grpcpool.Config[string, pb.FooClient]{..., Observer: obs})
//	p, err := keyedpool.New(f, keyedpool.Config{...})
//	err = metrics.AddPool(m, "foo", p, grpcmetrics.FactoryHealth(f)) // health-check counters
//	m.AddServices(grpcmetrics.RouterServices(router))              // discovery families
//	go metrics.ListenAndServe(ctx, "", m.Handler(reg))
//
// Every name below takes the Options.Namespace prefix; README lists them
// all with their types and labels.
package metrics
