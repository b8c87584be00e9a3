// Package consul is a discovery.Resolver that finds a service's instances
// in Consul, through the health API of a Consul agent
// (github.com/hashicorp/consul/api, Health().ServiceMultipleTags) with
// blocking queries: each watch waits in Consul for the service to change
// (WaitIndex, WaitTime) instead of polling.
//
// By default only instances whose checks all pass are endpoints; with
// FallbackToAll, every instance is when none passes. Instances must carry
// every one of Config.Tags. Datacenter, ACL token and TLS to Consul are
// set in Config.
//
// A watch keeps its last good endpoints while Consul is unreachable or
// answers with errors, reports each failed lookup to its watchers
// (discovery.Watcher.Error), and retries with jittered exponential backoff.
// It resets its index when Consul's goes backwards (a new leader's
// snapshot) or is zero, as Consul's documentation asks of blocking-query
// clients, and after every failed query, as Consul's own watch package
// does: an agent that restarts starts its index over, lower than the
// watch's, and would hold a query sent with the old index for the whole
// WaitTime; the query after a failure instead is answered at once, so a
// change made after the agent is back is seen within a retry's wait. All
// the watches of one service share one blocking query, however many there
// are.
package consul
