// Package procbackend runs a gRPC backend of internal/backend in a child
// process of the test binary, so that a test can kill it as a crash kills a
// server, with SIGKILL: no GOAWAY, no graceful close, the kernel closes its
// sockets. An in-process server's Stop cannot show what a client sees then.
//
// The child is the test binary itself, run again with an environment
// variable that Main looks for: call Main first in the package's TestMain.
// The child reports on its standard output the address it listens on and
// the TCP connections it holds open, so that a test can check that its
// clients closed theirs. It exits when its parent dies (its standard input
// ends), so that a killed test leaves no backend behind.
package procbackend
