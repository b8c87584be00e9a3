// Package grpcmetrics exports kpool's gRPC layer through a metrics.Metrics:
// the RPCs of pooled connections (Observer, the grpcpool.Observer that
// counts them), the health checks of a grpcpool.Factory
// (FactoryHealth) and the services of a discovery.Router
// (RouterServices).
//
// It imports metrics, and metrics does not import it (nor gRPC): a plain
// keyed pool's metrics do not link gRPC, and a gRPC pool's get these
// families by importing this package too.
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, metrics.Options{Namespace: "myapp"})
//	obs, err := grpcmetrics.NewObserver(m) // grpc_requests_total, grpc_request_duration_seconds
//	f, err := grpcpool.New(grpcpool.Config[string, pb.FooClient]{..., Observer: obs})
//	p, err := keyedpool.New(f, keyedpool.Config{...})
//	err = metrics.AddPool(m, "foo", p, grpcmetrics.FactoryHealth(f))
//	m.AddServices(grpcmetrics.RouterServices(router))
package grpcmetrics
