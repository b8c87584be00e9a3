package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/discovery/dns"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// Load reads and checks the configuration file at path. A file it cannot
// read is an error from ReadFile, "cannot read PATH: REASON"; every
// problem of a file it read is an *Error (see Parse). Relative file names
// in the file (TLS files) are taken from path's directory.
func Load(path string) (*File, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes and checks data, the contents of a file called name (used
// in errors and to find relative TLS files). It returns every problem it
// finds, each an *Error naming the line and the field, joined with
// errors.Join; a file with problems gives no File. A file beyond the
// bounds (MaxFileSize, MaxEntries, MaxDepth, and as many values through
// aliases) gives one error, at the line where it passes the bound.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Path: name}
	d := newDecoder(name)
	if !d.parse(data, f) {
		return nil, joined(d.errs)
	}
	f.setDefaults()
	f.check(d)
	if err := joined(d.errs); err != nil {
		return nil, err
	}
	f.lines = d.lines
	return f, nil
}

// ErrorAt returns a problem of the field at path ("pool.max_wait"), at the
// line where the file sets it, or where it sets the nearest section that
// holds it: for a File that Load or Parse accepted and a later step
// refused.
func (f *File) ErrorAt(path, format string, args ...any) *Error {
	d := decoder{file: f.Path, lines: f.lines}
	return &Error{File: f.Path, Line: d.at(path), Path: path, Msg: fmt.Sprintf(format, args...)}
}

func (f *File) setDefaults() {
	if f.Name == "" {
		f.Name = DefaultName
	}
	if f.Balancer == "" {
		f.Balancer = RoundRobin
	}
	if f.HTTP.Listen == "" {
		f.HTTP.Listen = DefaultListen
	}
	if f.Metrics.Namespace == "" {
		f.Metrics.Namespace = DefaultNamespace
	}
	if f.Metrics.MaxKeySeries == 0 {
		f.Metrics.MaxKeySeries = DefaultMaxKeySeries
	}
	for i := range f.Services {
		if c := f.Services[i].Discovery.Consul; c != nil {
			if c.Address == "" {
				c.Address = DefaultConsulAddress
			}
			if c.Service == "" {
				c.Service = f.Services[i].Name
			}
		}
	}
}

// bad reports a problem found after decoding, at the line of path, unless
// decoding failed there already.
func (d *decoder) bad(path, format string, args ...any) {
	if d.spoiled(path) {
		return
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: d.at(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// promName is a Prometheus metric name prefix.
var promName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// check finds the problems decoding cannot: missing and contradictory
// fields, addresses, files, and whatever keyedpool and grpcpool refuse.
func (f *File) check(d *decoder) {
	bad := d.bad

	if len(f.Services) == 0 {
		bad("services", "at least one service is required")
	}
	names := map[string]string{}
	for i, s := range f.Services {
		p := fmt.Sprintf("services[%d]", i)
		switch {
		case strings.TrimSpace(s.Name) == "":
			bad(join(p, "name"), "a service needs a name")
		case names[s.Name] != "":
			bad(join(p, "name"), "service %q is already defined at %s", s.Name, names[s.Name])
		default:
			names[s.Name] = p
		}
		disc := join(p, "discovery")
		st, co, dn := s.Discovery.Static, s.Discovery.Consul, s.Discovery.DNS
		set := 0
		for _, isSet := range []bool{st != nil, co != nil, dn != nil} {
			if isSet {
				set++
			}
		}
		switch {
		case set == 0:
			bad(disc, "set one of static, consul and dns")
		case set > 1:
			bad(disc, "set only one of static, consul and dns")
		case dn != nil:
			f.checkDNS(d, join(disc, "dns"), dn)
		case st != nil:
			ap := join(disc, "static.addresses")
			if len(st.Addresses) == 0 {
				bad(ap, "at least one address is required")
			}
			seen := map[string]int{}
			for j, a := range st.Addresses {
				jp := fmt.Sprintf("%s[%d]", ap, j)
				if err := checkHostPort(a); err != nil {
					bad(jp, "%v", err)
				} else if k, dup := seen[a]; dup {
					bad(jp, "%s is already listed at [%d]", a, k)
				}
				seen[a] = j
			}
		default:
			f.checkConsul(d, join(disc, "consul"), co)
		}
	}

	if strings.TrimSpace(f.Name) == "" {
		bad("name", "want a name, got %q", f.Name)
	}
	if err := checkListen(f.HTTP.Listen); err != nil {
		bad("http.listen", "%v", err)
	}
	if !promName.MatchString(f.Metrics.Namespace) {
		bad("metrics.namespace", "want letters, digits and underscores, not starting with a digit, got %q", f.Metrics.Namespace)
	}
	if f.Metrics.MaxKeySeries < 0 {
		bad("metrics.max_key_series", "is %d, want 0 (default %d) or more", f.Metrics.MaxKeySeries, DefaultMaxKeySeries)
	}

	d.libraryErrors("pool", reflect.TypeFor[Pool](), f.KeyedPool().Validate())
	f.checkGRPC(d, bad)
}

// checkHostPort accepts host:port with a non-empty host and a port from 1
// to 65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if host == "" {
		return fmt.Errorf("want host:port with a host, got %q", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want a port from 1 to 65535, got %q", port)
	}
	return nil
}

// checkListen accepts host:port with a port from 0 (any free port) to
// 65535.
func checkListen(addr string) error {
	if host, port, err := net.SplitHostPort(addr); err == nil && host != "" && port == "0" {
		return nil
	}
	return checkHostPort(addr)
}

// checkConsul checks a service's consul section, at path cp, and has
// consul check what it builds from it: the file accepts what the resolver
// accepts.
func (f *File) checkConsul(d *decoder, cp string, co *Consul) {
	bad := d.bad
	addrOK := true
	if scheme, rest, ok := strings.Cut(co.Address, "://"); ok {
		if scheme != "http" && scheme != "https" {
			bad(join(cp, "address"), "want host:port or an http:// or https:// URL, got %q", co.Address)
			addrOK = false
		} else if err := checkHostPort(strings.TrimSuffix(rest, "/")); err != nil {
			bad(join(cp, "address"), "%v", err)
			addrOK = false
		}
	} else if err := checkHostPort(co.Address); err != nil {
		bad(join(cp, "address"), "%v", err)
		addrOK = false
	}
	ok := addrOK
	for j, tag := range co.Tags {
		if tag == "" {
			bad(fmt.Sprintf("%s.tags[%d]", cp, j), "a tag may not be empty")
			ok = false
		}
	}
	if co.WaitTime < 0 {
		bad(join(cp, "wait_time"), "is %v, want 0 (default %v) or more", co.WaitTime.D(), consul.DefaultWaitTime)
		ok = false
	}
	if t := co.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			bad(join(cp, "tls"), "set both cert_file and key_file, or neither")
			ok = false
		}
		for _, file := range []struct{ key, name string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
			if file.name == "" {
				continue
			}
			if _, err := os.Stat(f.rel(file.name)); err != nil {
				bad(join(cp, "tls."+file.key), "%v", err)
				ok = false
			}
		}
	}
	if !ok {
		return
	}
	d.libraryErrors(cp, reflect.TypeFor[Consul](), f.ConsulConfig(co).Validate())
}

// ConsulConfig returns a service's consul section as a consul.Config, with
// TLS file names resolved against the file's directory. Its Service is not
// part of it: a Resolver serves any service.
func (f *File) ConsulConfig(c *Consul) consul.Config {
	cc := consul.Config{
		Address:       c.Address,
		Datacenter:    c.Datacenter,
		Token:         c.Token,
		FallbackToAll: c.FallbackToAll,
		AllowStale:    c.AllowStale,
		WaitTime:      c.WaitTime.D(),
	}
	if len(c.Tags) > 0 { // nil when empty, so that equal settings compare equal
		cc.Tags = slices.Clone(c.Tags)
	}
	if t := c.TLS; t != nil {
		cc.TLS = &api.TLSConfig{
			Address:            t.ServerName,
			InsecureSkipVerify: t.InsecureSkipVerify,
		}
		if t.CAFile != "" {
			cc.TLS.CAFile = f.rel(t.CAFile)
		}
		if t.CertFile != "" {
			cc.TLS.CertFile, cc.TLS.KeyFile = f.rel(t.CertFile), f.rel(t.KeyFile)
		}
	}
	return cc
}

// checkDNS checks a service's dns section, at path dp, by having dns check
// the configuration built from it and the name.
func (f *File) checkDNS(d *decoder, dp string, dn *DNS) {
	cfg := f.DNSConfig(dn)
	d.libraryErrors(dp, reflect.TypeFor[DNS](), cfg.Validate())
	switch {
	case dn.Name == "":
		d.bad(join(dp, "name"), "a name to look up is required: name:port, a name with port set, or an SRV name such as _grpc._tcp.name")
	case cfg.Port < 0 || cfg.Port > 65535:
		// Reported at port: whether the name needs one is moot.
	default:
		if err := cfg.CheckName(dn.Name); err != nil {
			// Said in the file's words: its key for dns.Config.Port is
			// port, and the line names the section.
			msg := strings.TrimPrefix(err.Error(), "dns: ")
			d.bad(join(dp, "name"), "%s", strings.Replace(msg, "Config.Port", "port", 1))
		}
	}
}

// DNSConfig returns a service's dns section as a dns.Config. Its Name is
// not part of it: a Resolver serves any name.
func (f *File) DNSConfig(c *DNS) dns.Config {
	cfg := dns.Config{
		Port:     c.Port,
		Interval: c.Interval.D(),
		Jitter:   c.Jitter,
		Timeout:  c.Timeout.D(),
	}
	if len(c.Servers) > 0 { // nil when empty, so that equal settings compare equal
		cfg.Servers = slices.Clone(c.Servers)
	}
	return cfg
}

// checkGRPC reads the TLS files and has grpcpool check the rest.
func (f *File) checkGRPC(d *decoder, bad func(path, format string, args ...any)) {
	g := f.GRPC
	switch {
	case g.Insecure && g.TLS != nil:
		bad("grpc", "set only one of insecure: true and tls")
		return
	case !g.Insecure && g.TLS == nil:
		bad("grpc", "set one of insecure: true (plaintext) and tls")
		return
	}
	if t := g.TLS; t != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if t.CAFile != "" {
			pem, err := os.ReadFile(f.rel(t.CAFile))
			if err != nil {
				bad("grpc.tls.ca_file", "%v", err)
				return
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				bad("grpc.tls.ca_file", "no PEM certificate in %s", t.CAFile)
				return
			}
		}
		switch {
		case (t.CertFile == "") != (t.KeyFile == ""):
			bad("grpc.tls", "set both cert_file and key_file, or neither")
			return
		case t.CertFile != "":
			cert, err := tls.LoadX509KeyPair(f.rel(t.CertFile), f.rel(t.KeyFile))
			if err != nil {
				bad("grpc.tls.cert_file", "%v", err)
				return
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		f.tls = cfg
	}
	for i, name := range g.Retry.RetryableStatusCodes {
		var c codes.Code
		if err := c.UnmarshalJSON([]byte(strconv.Quote(strings.ToUpper(name)))); err != nil {
			bad(fmt.Sprintf("grpc.retry.retryable_status_codes[%d]", i), "unknown status code %q, want a name such as UNAVAILABLE", name)
			return
		}
	}
	fc := FactoryConfig(f, func(cc grpc.ClientConnInterface) grpc.ClientConnInterface { return cc })
	d.libraryErrors("grpc", reflect.TypeFor[GRPC](), fc.Validate())
}

// rel resolves a file named in the file against the file's directory.
func (f *File) rel(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(f.Path), name)
}

// fieldProblem is what keyedpool's, grpcpool's, consul's and dns's
// FieldErrors say, each in its own type.
type fieldProblem struct {
	field, want, limit string
	value, limitValue  any
}

func asFieldProblem(err error) (fieldProblem, bool) {
	switch e := err.(type) {
	case *keyedpool.FieldError:
		return fieldProblem{field: e.Field, want: e.Want, limit: e.Limit, value: e.Value, limitValue: e.LimitValue}, true
	case *grpcpool.FieldError:
		return fieldProblem{field: e.Field, want: e.Want, value: e.Value}, true
	case *consul.FieldError:
		return fieldProblem{field: e.Field, want: e.Want, limit: e.Limit, value: e.Value, limitValue: e.LimitValue}, true
	case *dns.FieldError:
		return fieldProblem{field: e.Field, want: e.Want, value: e.Value}, true
	}
	return fieldProblem{}, false
}

// libraryErrors reports err, the problems keyedpool, grpcpool, consul
// or dns found in the configuration built from the section at path
// section (whose fields are of type t): each field error at its key's
// line, in the file's names, found from the error's field name.
func (d *decoder) libraryErrors(section string, t reflect.Type, err error) {
	if err == nil {
		return
	}
	names := yamlNames(t, "", "")
	name := func(goPath string) (string, bool) {
		base, index, _ := strings.Cut(goPath, "[") // Tags[1]
		y, ok := names[base]
		if ok && index != "" {
			y += "[" + index
		}
		return y, ok
	}
	for _, e := range leaves(err) {
		p, ok := asFieldProblem(e)
		y, known := name(p.field)
		if !ok || !known {
			// A field the file has no key for: said as the library says
			// it, at the section.
			d.bad(section, "%v", e)
			continue
		}
		msg := fmt.Sprintf("%s is %s, want %s", y, show(p.value), p.want)
		if p.limit != "" {
			yl, ok := name(p.limit)
			if !ok {
				yl = p.limit
			} else if d.spoiled(join(section, yl)) {
				continue
			}
			switch p.want {
			case "at most":
				msg = fmt.Sprintf("%s %s exceeds %s %s", y, show(p.value), yl, show(p.limitValue))
			case "at least":
				msg = fmt.Sprintf("%s %s is below %s %s", y, show(p.value), yl, show(p.limitValue))
			default:
				msg = fmt.Sprintf("%s is %s, want %s %s (%s)", y, show(p.value), p.want, yl, show(p.limitValue))
			}
		}
		d.bad(join(section, y), "%s", msg)
	}
}

// leaves returns the errors that err joins, and theirs, or err alone.
func leaves(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var all []error
	for _, e := range j.Unwrap() {
		all = append(all, leaves(e)...)
	}
	return all
}

// show prints a value of a field error as the file would write it.
func show(v any) string {
	switch v := v.(type) {
	case nil:
		return "nil"
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}

// yamlNames maps the Go field paths of t ("Abandoned.Timeout") to their
// YAML paths ("abandoned.timeout"), through nested and pointed-to structs.
func yamlNames(t reflect.Type, goPrefix, yamlPrefix string) map[string]string {
	m := map[string]string{}
	for i := range t.NumField() {
		sf := t.Field(i)
		y, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if y == "" || y == "-" {
			continue
		}
		g, yp := join(goPrefix, sf.Name), join(yamlPrefix, y)
		m[g] = yp
		ft := sf.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			for k, v := range yamlNames(ft, g, yp) {
				m[k] = v
			}
		}
	}
	return m
}

// KeyedPool returns the pool section as a keyedpool.Config.
func (f *File) KeyedPool() keyedpool.Config {
	p := f.Pool
	c := keyedpool.Config{
		MaxTotal:                p.MaxTotal,
		MaxTotalPerKey:          p.MaxTotalPerKey,
		MaxIdlePerKey:           p.MaxIdlePerKey,
		MinIdlePerKey:           p.MinIdlePerKey,
		MaxWait:                 p.MaxWait.D(),
		FIFO:                    p.FIFO,
		TestOnCreate:            p.TestOnCreate,
		TestOnBorrow:            p.TestOnBorrow,
		TestOnReturn:            p.TestOnReturn,
		TestWhileIdle:           p.TestWhileIdle,
		MaxSharesPerObject:      int(p.MaxSharesPerObject),
		TimeBetweenEvictionRuns: p.TimeBetweenEvictionRuns.D(),
		NumTestsPerEvictionRun:  p.NumTestsPerEvictionRun,
		MinEvictableIdle:        p.MinEvictableIdle.D(),
		SoftMinEvictableIdle:    p.SoftMinEvictableIdle.D(),
		MaxLifetime:             p.MaxLifetime.D(),
		MaxLifetimeJitter:       p.MaxLifetimeJitter.D(),
		MakeFailureThreshold:    p.MakeFailureThreshold,
		MakeBackoffBase:         p.MakeBackoffBase.D(),
		MakeBackoffMax:          p.MakeBackoffMax.D(),
		FactoryTimeout:          p.FactoryTimeout.D(),
	}
	if p.WhenExhausted == "fail" {
		c.WhenExhausted = keyedpool.Fail
	}
	if a := p.Abandoned; a != nil {
		c.Abandoned = &keyedpool.AbandonedConfig{
			RemoveOnBorrow:      a.RemoveOnBorrow,
			RemoveOnMaintenance: a.RemoveOnMaintenance,
			Timeout:             a.Timeout.D(),
			LogAbandoned:        a.LogAbandoned,
		}
	}
	return c
}

// FactoryConfig returns f's gRPC section as a grpcpool configuration
// for connections keyed by address, with stubs made by newStub. Use it on a
// File from Load or Parse: the TLS files have been read then.
func FactoryConfig[T any](f *File, newStub func(grpc.ClientConnInterface) T) grpcpool.Config[string, T] {
	g := f.GRPC
	c := grpcpool.Config[string, T]{
		NewStub:  newStub,
		Insecure: g.Insecure,
		Keepalive: grpcpool.Keepalive{
			Time:                g.Keepalive.Time.D(),
			Timeout:             g.Keepalive.Timeout.D(),
			PermitWithoutStream: g.Keepalive.PermitWithoutStream,
			Disable:             g.Keepalive.Disable,
		},
		IdleTimeout:    g.IdleTimeout.D(),
		ConnectTimeout: g.ConnectTimeout.D(),
		Retry: grpcpool.RetryPolicy{
			MaxAttempts:       g.Retry.MaxAttempts,
			InitialBackoff:    g.Retry.InitialBackoff.D(),
			MaxBackoff:        g.Retry.MaxBackoff.D(),
			BackoffMultiplier: g.Retry.BackoffMultiplier,
		},
	}
	if f.tls != nil {
		c.TLS = f.tls.Clone()
	}
	for _, name := range g.Retry.RetryableStatusCodes {
		var code codes.Code
		// Checked by Load; an unknown name cannot reach here.
		_ = code.UnmarshalJSON([]byte(strconv.Quote(strings.ToUpper(name))))
		c.Retry.RetryableStatusCodes = append(c.Retry.RetryableStatusCodes, code)
	}
	if h := g.HealthCheck; h != nil {
		c.HealthCheck = &grpcpool.HealthCheck{Service: h.Service, Timeout: h.Timeout.D(), Interval: h.Interval.D()}
	}
	return c
}

// StaticAddresses returns the addresses of the services with static
// discovery, each once, in the order of the file.
func (f *File) StaticAddresses() []string {
	var addrs []string
	seen := map[string]bool{}
	for _, s := range f.Services {
		if st := s.Discovery.Static; st != nil {
			for _, a := range st.Addresses {
				if !seen[a] {
					seen[a] = true
					addrs = append(addrs, a)
				}
			}
		}
	}
	return addrs
}
