package dns

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/internal/broadcast"
)

// Resolver finds services in DNS. Make one with New. Its methods are safe
// for concurrent use.
type Resolver struct {
	cfg     Config   // defaults applied; Servers unused (servers holds them)
	servers []string // host:port, in the order asked

	loops broadcast.Loops[[]discovery.Endpoint] // one lookup loop per name, shared by its watches
}

var _ discovery.Resolver = (*Resolver)(nil)

// New returns a Resolver for cfg. It refuses an invalid cfg with the error
// of cfg.Validate, which names every invalid field. With Config.Servers
// empty it reads /etc/resolv.conf, and fails with an error matching
// ErrInvalidConfig if that file cannot be read or lists no nameserver. It
// sends no query: watches do.
func New(cfg Config) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	servers := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		servers[i], _ = serverAddr(s) // valid: checked by Validate
	}
	if len(servers) == 0 {
		var err error
		if servers, err = systemServers(); err != nil {
			return nil, fmt.Errorf("%w: Servers is empty and %w", ErrInvalidConfig, err)
		}
	}
	return &Resolver{cfg: cfg, servers: servers}, nil
}

// systemServers returns the nameservers of resolvConf, as host:port.
func systemServers() ([]string, error) {
	cc, err := mdns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("reading the system's nameservers: %w", err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver", resolvConf)
	}
	out := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		out[i] = net.JoinHostPort(s, cc.Port)
	}
	return out, nil
}

// Watch delivers the endpoints that name stands for (see the package
// comment for its forms) to w: at once if another watch of the name
// already knows them, else after the first lookup; then every change, and
// every failed lookup as an error, until ctx ends. It returns ctx.Err()
// then, once the name's lookup loop has stopped if this was its last
// watch. A name no lookup can serve is refused at once with the error
// Config.CheckName gives, wrapping ErrInvalidName.
func (r *Resolver) Watch(ctx context.Context, name string, w discovery.Watcher) error {
	t, err := parseName(name, r.cfg.Port)
	if err != nil {
		return err
	}
	run := func(ctx context.Context, hub *broadcast.Hub[[]discovery.Endpoint]) { r.run(ctx, name, t, hub) }
	_, err = r.loops.Serve(ctx, name, run, w.Update, w.Error)
	return err
}

// run looks t up until ctx ends, publishing each new list of endpoints and
// each failure to hub.
func (r *Resolver) run(ctx context.Context, name string, t target, hub *broadcast.Hub[[]discovery.Endpoint]) {
	var (
		published, failed bool
		last              []discovery.Endpoint
	)
	for {
		eps, err := r.lookup(ctx, t)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			hub.Fail(fmt.Errorf("dns: %q: %w", name, err))
			failed = true
		case !published || failed || !equal(eps, last):
			// After a failure, the same list again too: it is what says
			// the lookups succeed again (LastError clears).
			hub.Publish(eps)
			published, failed, last = true, false, eps
		}
		if !sleep(ctx, jittered(r.cfg.Interval, r.cfg.Jitter, rand.Float64())) {
			return
		}
	}
}

// jittered returns d shortened by jitter·u of it: for 0 <= jitter < 1 and
// 0 <= u < 1, a wait in ((1-jitter)·d, d].
func jittered(d time.Duration, jitter, u float64) time.Duration {
	cut := jitter * u * float64(d)
	// float64(d) may round up past MaxInt64; the clamp keeps the
	// conversion in range and the result within (0, d].
	cut = min(max(cut, 0), math.Nextafter(float64(d), 0))
	return d - time.Duration(cut)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
