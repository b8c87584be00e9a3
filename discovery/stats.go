package discovery

// ServiceStats is a snapshot of one service a Router follows: what its
// resolver last delivered and how the watch is going. The metrics package
// exports it.
type ServiceStats struct {
	Service   string
	Endpoints int    // endpoints in the service's latest snapshot
	Usable    int    // of those, how many the router would route to now
	Updates   int64  // snapshots received since the service was first used
	Errors    int64  // failed lookups (resolver errors) since then
	LastError string // "" when the latest lookup succeeded
}
