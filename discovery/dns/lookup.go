package dns

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/kpool-go/kpool/discovery"
)

// udpSize is the EDNS0 UDP payload size a query offers: the size DNS Flag
// Day 2020 settled on, which passes any path without fragmenting. Bigger
// answers come truncated and are asked again over TCP.
const udpSize = 1232

// target is what a watch's name asks for.
type target struct {
	fqdn string // the name to query, with the final dot
	port int    // endpoints' port for an address lookup; 0 for SRV
	srv  bool
}

// parseName parses a watch's name (see the package comment); port is
// Config.Port.
func parseName(name string, port int) (target, error) {
	invalid := func(why string, args ...any) (target, error) {
		return target{}, fmt.Errorf("%w %q: %s", ErrInvalidName, name, fmt.Sprintf(why, args...))
	}
	if name == "" {
		return invalid("empty")
	}
	host, srv := name, strings.HasPrefix(name, "_")
	if h, p, err := net.SplitHostPort(name); err == nil {
		if srv {
			return invalid("an SRV name takes its ports from its records; drop %q", ":"+p)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return invalid("port %q, want 1 to 65535", p)
		}
		host, port = h, n
	} else if !srv && port == 0 {
		return invalid("no port: write name:port, or set Config.Port")
	}
	if net.ParseIP(host) != nil {
		return invalid("an IP address, not a name to look up (discovery/static serves fixed addresses)")
	}
	if why := checkHost(host); why != "" {
		return invalid("%s", why)
	}
	if srv {
		port = 0
	}
	return target{fqdn: mdns.Fqdn(host), port: port, srv: srv}, nil
}

// checkHost returns why host is no DNS name a lookup can ask, or "": at most
// 253 characters (a final dot aside) in labels of 1 to 63 letters, digits,
// hyphens and underscores.
func checkHost(host string) string {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "the root, not a name"
	}
	if len(host) > 253 {
		return fmt.Sprintf("%d characters, want at most 253", len(host))
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Sprintf("label %q, want 1 to 63 characters", label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("label %q holds %q, want letters, digits, '-' and '_'", label, c)
			}
		}
	}
	return ""
}

// lookup returns t's endpoints, in address order, from the first server
// that answers. If none does, the error names each server and what went
// wrong with it.
func (r *Resolver) lookup(ctx context.Context, t target) ([]discovery.Endpoint, error) {
	var errs []error
	for _, server := range r.servers {
		var (
			eps []discovery.Endpoint
			err error
		)
		if t.srv {
			eps, err = r.lookupSRV(ctx, server, t.fqdn)
		} else {
			var ips []string
			ips, err = r.lookupIP(ctx, server, t.fqdn)
			for _, ip := range ips {
				eps = append(eps, discovery.Endpoint{Address: ip, Port: t.port})
			}
		}
		if err == nil {
			return canonical(eps), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	// "%w; %w..." keeps every error for errors.Is and, unlike
	// errors.Join, keeps the message on one line for /health and logs.
	format := strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; ")
	args := make([]any, len(errs))
	for i, e := range errs {
		args[i] = e
	}
	return nil, fmt.Errorf(format, args...)
}

// lookupIP returns the addresses of the A and AAAA records of fqdn at
// server; none if the name does not exist or has no address.
func (r *Resolver) lookupIP(ctx context.Context, server, fqdn string) ([]string, error) {
	var ips []string
	for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		ans, _, err := r.query(ctx, server, fqdn, qtype)
		if err != nil {
			return nil, err
		}
		ips = append(ips, addresses(ans, "")...)
	}
	return ips, nil
}

// lookupSRV returns the endpoints of the SRV records of fqdn at server of
// the lowest priority: each address of each record's target, at the
// record's port, weighted by its weight.
func (r *Resolver) lookupSRV(ctx context.Context, server, fqdn string) ([]discovery.Endpoint, error) {
	ans, extra, err := r.query(ctx, server, fqdn, mdns.TypeSRV)
	if err != nil {
		return nil, err
	}
	var recs []*mdns.SRV
	for _, rr := range ans {
		// Target "." says the service is not offered there (RFC 2782).
		if s, ok := rr.(*mdns.SRV); ok && s.Target != "." {
			recs = append(recs, s)
		}
	}
	if len(recs) == 0 {
		return nil, nil
	}
	lowest := slices.MinFunc(recs, func(a, b *mdns.SRV) int { return cmp.Compare(a.Priority, b.Priority) }).Priority
	resolved := make(map[string][]string) // target (lower case) -> its addresses
	var eps []discovery.Endpoint
	for _, s := range recs {
		if s.Priority != lowest {
			continue
		}
		key := strings.ToLower(s.Target)
		ips, ok := resolved[key]
		if !ok {
			// The additional section, when the server filled it, saves
			// a query per target.
			if ips = addresses(extra, s.Target); len(ips) == 0 {
				if ips, err = r.lookupIP(ctx, server, s.Target); err != nil {
					return nil, fmt.Errorf("SRV target %s: %w", s.Target, err)
				}
			}
			resolved[key] = ips
		}
		for _, ip := range ips {
			eps = append(eps, discovery.Endpoint{Address: ip, Port: int(s.Port), Weight: int(s.Weight)})
		}
	}
	return eps, nil
}

// addresses returns the addresses of the A and AAAA records among rrs, of
// those owned by owner alone when owner is not "".
func addresses(rrs []mdns.RR, owner string) []string {
	var ips []string
	for _, rr := range rrs {
		if owner != "" && !strings.EqualFold(rr.Header().Name, owner) {
			continue
		}
		switch a := rr.(type) {
		case *mdns.A:
			ips = append(ips, a.A.String())
		case *mdns.AAAA:
			ips = append(ips, a.AAAA.String())
		}
	}
	return ips
}

// query asks server for the records of type qtype of fqdn, over UDP and,
// if the answer comes truncated, again over TCP, each try bounded by
// Config.Timeout. It returns the answer and additional sections; both are
// empty when the name does not exist (NXDOMAIN). Any other answer than
// success or NXDOMAIN is an error naming the server and the code.
func (r *Resolver) query(ctx context.Context, server, fqdn string, qtype uint16) (answer, extra []mdns.RR, err error) {
	m := new(mdns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.SetEdns0(udpSize, false)
	var resp *mdns.Msg
	for _, network := range []string{"udp", "tcp"} {
		c := &mdns.Client{Net: network, UDPSize: udpSize, Timeout: r.cfg.Timeout}
		qctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		resp, _, err = c.ExchangeContext(qctx, m, server)
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("%s query to %s over %s: %w", mdns.TypeToString[qtype], server, network, err)
		}
		if !resp.Truncated {
			break
		}
	}
	if resp.Truncated {
		return nil, nil, fmt.Errorf("%s query to %s: answer truncated over TCP too", mdns.TypeToString[qtype], server)
	}
	switch resp.Rcode {
	case mdns.RcodeSuccess:
		return resp.Answer, resp.Extra, nil
	case mdns.RcodeNameError:
		return nil, nil, nil
	}
	code := mdns.RcodeToString[resp.Rcode]
	if code == "" {
		code = "rcode " + strconv.Itoa(resp.Rcode)
	}
	return nil, nil, fmt.Errorf("%s query to %s: server answered %s", mdns.TypeToString[qtype], server, code)
}

// canonical sorts eps by address and drops repeats of an address (a
// target listed twice, an address under two targets), so that an answer
// listing the same endpoints in another order is no change.
func canonical(eps []discovery.Endpoint) []discovery.Endpoint {
	slices.SortStableFunc(eps, func(a, b discovery.Endpoint) int { return strings.Compare(a.Addr(), b.Addr()) })
	return slices.CompactFunc(eps, func(a, b discovery.Endpoint) bool { return a.Addr() == b.Addr() })
}

// equal reports whether two lists hold the same endpoints in the same order.
func equal(a, b []discovery.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y discovery.Endpoint) bool {
		return x.Address == y.Address && x.Port == y.Port && x.Weight == y.Weight
	})
}
