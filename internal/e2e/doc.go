// Package e2e drives gRPC unary RPCs from many concurrent callers at real
// gRPC servers on loopback, through the ways of connecting that kpool is
// compared on: one ClientConn (single), n ClientConns picked in turn
// (roundrobin), kpool with exclusive checkout (exclusive) and kpool with
// shared leases behind a grpcpool.Conn (shared). It is the one mechanism
// behind both benchmarks.BenchmarkE2E and the kpool bench command.
//
// The driver is closed-loop: each caller sends its next RPC when the last
// one answers, so the load is set by the number of callers, not by a rate.
// Latencies go into a Histogram of fixed size, so a long run costs no more
// memory than a short one.
package e2e
