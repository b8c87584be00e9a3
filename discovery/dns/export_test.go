package dns

// Jittered exposes jittered to the external tests.
var Jittered = jittered

// SetResolvConf makes New read path instead of /etc/resolv.conf until the
// returned restore is called. Not for parallel tests.
func SetResolvConf(path string) (restore func()) {
	old := resolvConf
	resolvConf = path
	return func() { resolvConf = old }
}

// Servers returns the servers r asks, in order.
func (r *Resolver) Servers() []string { return r.servers }
