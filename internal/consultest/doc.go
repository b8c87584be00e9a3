// Package consultest runs a real Consul agent for kpool's tests: `consul
// agent -dev` on free loopback ports with a temporary data directory,
// stopped when the test ends.
//
// The consul binary comes from the KPOOL_CONSUL environment variable, else
// from PATH. Build it from the tools module at the repository root:
//
//	go build -C tools/consul -o /some/dir/consul github.com/hashicorp/consul
//	export KPOOL_CONSUL=/some/dir/consul
//
// Without it the tests that need an agent skip, saying so, except when CI is
// "true": there a missing binary fails them.
package consultest
