// Package benchmarks compares kpool's keyedpool with its peers,
// github.com/jackc/puddle/v2, github.com/jolestar/go-commons-pool/v2 and
// vitess's smartconnpool (vitess.io/vitess/go/pools/smartconnpool), and
// with plain baselines (a mutex-guarded slice, a buffered channel), so that
// one run of
//
//	cd benchmarks && go test -run '^$' -bench . -benchmem .
//
// shows them side by side: each Benchmark is one scenario (Serial, Parallel,
// Keyed, Contended, ManyKeys) with a sub-benchmark per implementation, named
// impl=kpool, impl=puddle, impl=gocommonspool, impl=vitess and so on; in
// Keyed, where each peer gets a map of one pool per key, impl=puddlemap and
// so on.
//
// The package is a module of its own, github.com/kpool-go/kpool/benchmarks,
// which uses kpool from the directory above (a replace directive): the
// peers, vitess above all with its many dependencies, are requirements of
// the benchmarks and not of kpool. So the root's go test ./... does not
// run them; run them from this directory, as above.
//
// Every pool gets the same trivial factory (a new *struct{ id int64 }, no
// I/O) and a sensible configuration for the scenario; the peers are not
// tuned beyond that. The package holds no code besides its tests.
//
// BenchmarkDispatch is kpool's alone: what one Return or Invalidate costs
// while 1000 or 10,000 borrowers wait (see dispatch_test.go).
//
// BenchmarkE2E is of another kind: gRPC unary RPCs from 1000 concurrent
// callers to a real grpc.Server on loopback, through one ClientConn, 16
// ClientConns picked round-robin, and kpool's grpcpool with exclusive
// and with shared leases, each reporting rps, p50/p99 latency and the
// connections used (see e2e_test.go).
package benchmarks
