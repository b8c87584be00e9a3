package dns_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// dnsServer is a real DNS server on 127.0.0.1, UDP and TCP on one port,
// that answers from records a test sets and changes while it runs. Over
// UDP it truncates answers bigger than the query offers, as a real server
// does, so that a client must ask again over TCP. Its methods are safe for
// concurrent use.
type dnsServer struct {
	// Addr is the server's host:port, for Config.Servers.
	Addr string

	udp, tcp *mdns.Server
	served   sync.WaitGroup // the two serve loops
	stopOnce sync.Once

	mu      sync.Mutex // protects the fields below
	records map[string][]mdns.RR
	rcode   int  // nonzero: every answer has this code and no records
	silent  bool // no answer at all
	noGlue  bool // SRV answers leave their targets' addresses out
	queries []query
}

// query is what the server was asked.
type query struct {
	name, qtype, network string
}

// startDNS starts a dnsServer, stopped when the test ends.
func startDNS(tb testing.TB) *dnsServer {
	tb.Helper()
	s, err := listenDNS()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// listenDNS starts a dnsServer outside a test; the caller stops it.
func listenDNS() (*dnsServer, error) {
	var (
		pc  net.PacketConn
		lis net.Listener
		err error
	)
	// The UDP port may be taken for TCP: then try another, a bounded
	// number of times.
	for attempt := 1; ; attempt++ {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		lis, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if attempt == 10 {
			return nil, fmt.Errorf("dnsServer: no port free for both UDP and TCP after %d tries: %v", attempt, err)
		}
	}
	s := &dnsServer{Addr: pc.LocalAddr().String(), records: make(map[string][]mdns.RR)}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &mdns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify}
	s.tcp = &mdns.Server{Listener: lis, Handler: s, NotifyStartedFunc: notify}
	for _, srv := range []*mdns.Server{s.udp, s.tcp} {
		s.served.Go(func() { _ = srv.ActivateAndServe() })
	}
	timeout := time.After(10 * time.Second)
	for range 2 {
		select {
		case <-started:
		case <-timeout:
			s.Stop()
			return nil, fmt.Errorf("dnsServer: not serving after 10s")
		}
	}
	return s, nil
}

// Stop stops the server and waits for its loops to end. Stopping a stopped
// server does nothing.
func (s *dnsServer) Stop() {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.udp.ShutdownContext(ctx)
		_ = s.tcp.ShutdownContext(ctx)
		s.served.Wait()
	})
}

// Set makes rdata (such as "A 10.0.0.1", "SRV 0 10 8080 b1.web.test.") the
// records of name, replacing those it had; with none, name does not exist
// (NXDOMAIN).
func (s *dnsServer) Set(name string, rdata ...string) {
	var rrs []mdns.RR
	for _, d := range rdata {
		rr, err := mdns.NewRR(mdns.Fqdn(name) + " 5 IN " + d)
		if err != nil {
			panic(fmt.Sprintf("dnsServer.Set(%q, %q): %v", name, d, err))
		}
		rrs = append(rrs, rr)
	}
	key := strings.ToLower(mdns.Fqdn(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(rrs) == 0 {
		delete(s.records, key)
		return
	}
	s.records[key] = rrs
}

// Silent makes the server stop answering (true) or answer again (false).
func (s *dnsServer) Silent(on bool) {
	s.mu.Lock()
	s.silent = on
	s.mu.Unlock()
}

// Rcode makes every answer carry code and no records (such as
// mdns.RcodeServerFailure); 0 answers from the records again.
func (s *dnsServer) Rcode(code int) {
	s.mu.Lock()
	s.rcode = code
	s.mu.Unlock()
}

// NoGlue makes SRV answers leave out (true) or carry (false, the default)
// the addresses of their targets in the additional section.
func (s *dnsServer) NoGlue(on bool) {
	s.mu.Lock()
	s.noGlue = on
	s.mu.Unlock()
}

// Queries returns what the server was asked so far, in order.
func (s *dnsServer) Queries() []query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]query(nil), s.queries...)
}

// Count returns how many queries of type qtype ("A", "SRV"...) for name
// (any case, final dot or not) the server was asked, over network ("udp",
// "tcp", or "" for both).
func (s *dnsServer) Count(name, qtype, network string) int {
	n := 0
	for _, q := range s.Queries() {
		if strings.EqualFold(q.name, mdns.Fqdn(name)) && q.qtype == qtype && (network == "" || q.network == network) {
			n++
		}
	}
	return n
}

// ServeDNS answers one query.
func (s *dnsServer) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	network := w.RemoteAddr().Network()
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true

	s.mu.Lock()
	s.queries = append(s.queries, query{name: q.Name, qtype: mdns.TypeToString[q.Qtype], network: network})
	silent, rcode, glue := s.silent, s.rcode, !s.noGlue
	recs, exists := s.records[strings.ToLower(q.Name)]
	for _, rr := range recs {
		if rr.Header().Rrtype != q.Qtype {
			continue
		}
		m.Answer = append(m.Answer, mdns.Copy(rr))
		if srv, ok := rr.(*mdns.SRV); ok && glue {
			for _, t := range s.records[strings.ToLower(srv.Target)] {
				if t.Header().Rrtype == mdns.TypeA || t.Header().Rrtype == mdns.TypeAAAA {
					m.Extra = append(m.Extra, mdns.Copy(t))
				}
			}
		}
	}
	s.mu.Unlock()

	if silent {
		return
	}
	switch {
	case rcode != 0:
		m.Rcode, m.Answer, m.Extra = rcode, nil, nil
	case !exists:
		m.Rcode = mdns.RcodeNameError
	}
	if network == "udp" {
		size := mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// port returns the port of a host:port address.
func port(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		panic(err)
	}
	return n
}
