// Package benchmarks compares kpool's keyedpool with its peers,
// github.com/jackc/puddle/v2 and github.com/jolestar/go-commons-pool/v2, and
// with plain baselines (a mutex-guarded slice, a buffered channel), so that
// one run of
//
//	go test -run '^$' -bench . -benchmem ./benchmarks/
//
// shows them side by side: each Benchmark is one scenario (Serial, Parallel,
// Keyed, Contended, ManyKeys) with a sub-benchmark per implementation, named
// impl=kpool, impl=puddle, impl=gocommonspool and so on.
//
// Every pool gets the same trivial factory (a new *struct{ id int64 }, no
// I/O) and a sensible configuration for the scenario; the peers are not
// tuned beyond that. The package holds no code besides its tests.
//
// BenchmarkE2E is of another kind: gRPC unary RPCs from 1000 concurrent
// callers to a real grpc.Server on loopback, through one ClientConn, 16
// ClientConns picked round-robin, and kpool's grpcfactory with exclusive
// and with shared leases, each reporting rps, p50/p99 latency and the
// connections used (see e2e_test.go).
package benchmarks
