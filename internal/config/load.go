package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
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
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// Load reads and checks the configuration file at path. A file it cannot
// read is an error wrapping the os error; every problem of a file it read
// is an *Error (see Parse). Relative file names in the file (TLS files) are
// taken from path's directory.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and checks data, the contents of a file called name (used
// in errors and to find relative TLS files). It returns every problem it
// finds, each an *Error naming the line and the field, joined with
// errors.Join; a file with problems gives no File.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Path: name}
	d := &decoder{file: name, lines: map[string]int{}}
	d.parse(data, f)
	if err := joined(d.errs); err != nil {
		return nil, err
	}
	f.setDefaults()
	f.check(d)
	if err := joined(d.errs); err != nil {
		return nil, err
	}
	return f, nil
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

// promName is a Prometheus metric name prefix.
var promName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// check finds the problems decoding cannot: missing and contradictory
// fields, addresses, files, and whatever keyedpool and grpcfactory refuse.
func (f *File) check(d *decoder) {
	bad := func(path, format string, args ...any) {
		d.errs = append(d.errs, &Error{File: d.file, Line: d.at(path), Path: path, Msg: fmt.Sprintf(format, args...)})
	}

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
		st, co := s.Discovery.Static, s.Discovery.Consul
		switch {
		case st == nil && co == nil:
			bad(disc, "set one of static and consul")
		case st != nil && co != nil:
			bad(disc, "set only one of static and consul")
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
			f.checkConsul(join(disc, "consul"), co, bad)
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

	f.checkPool(d)
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
// consul.New check what it builds from it: the file accepts what the
// resolver accepts.
func (f *File) checkConsul(cp string, co *Consul, bad func(path, format string, args ...any)) {
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
	if _, err := consul.New(f.ConsulConfig(co)); err != nil {
		bad(cp, "%v", strings.TrimPrefix(err.Error(), consul.ErrInvalidConfig.Error()+": "))
	}
}

// ConsulConfig returns a service's consul section as a consul.Config, with
// TLS file names resolved against the file's directory. Its Service is not
// part of it: a Resolver serves any service.
func (f *File) ConsulConfig(c *Consul) consul.Config {
	cc := consul.Config{
		Address:       c.Address,
		Datacenter:    c.Datacenter,
		Token:         c.Token,
		Tags:          slices.Clone(c.Tags),
		FallbackToAll: c.FallbackToAll,
		AllowStale:    c.AllowStale,
		WaitTime:      c.WaitTime.D(),
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

// checkPool builds the pool's configuration and has keyedpool check it:
// the file accepts exactly what New accepts.
func (f *File) checkPool(d *decoder) {
	p, err := keyedpool.New(factory.Funcs[string, struct{}]{}, f.KeyedPool())
	if err != nil {
		d.libraryError("pool", reflect.TypeFor[Pool](), keyedpool.ErrInvalidConfig, err)
		return
	}
	// Nothing was made: Close only takes the pool off the evictor's
	// schedule.
	p.Close(context.Background())
}

// checkGRPC reads the TLS files and has grpcfactory check the rest.
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
	if _, err := grpcfactory.New(FactoryConfig(f, func(cc grpc.ClientConnInterface) grpc.ClientConnInterface { return cc })); err != nil {
		d.libraryError("grpc", reflect.TypeFor[GRPC](), grpcfactory.ErrInvalidConfig, err)
	}
}

// rel resolves a file named in the file against the file's directory.
func (f *File) rel(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(f.Path), name)
}

// goFieldName matches Go field names, possibly nested (Abandoned.Timeout),
// in the library's error messages.
var goFieldName = regexp.MustCompile(`\b[A-Z][A-Za-z]*(?:\.[A-Z][A-Za-z]*)*\b`)

// libraryError reports err, refused by keyedpool or grpcfactory for the
// section whose fields are of type t: the Go field names it mentions become
// the names of the file, and the first one says where the error is.
func (d *decoder) libraryError(section string, t reflect.Type, sentinel, err error) {
	names := yamlNames(t, "", "")
	msg := strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
	if !errors.Is(err, sentinel) {
		msg = err.Error()
	}
	path := section
	msg = goFieldName.ReplaceAllStringFunc(msg, func(goName string) string {
		y, ok := names[goName]
		if !ok {
			return goName
		}
		if path == section {
			path = join(section, y)
		}
		return y
	})
	d.errs = append(d.errs, &Error{File: d.file, Line: d.at(path), Path: path, Msg: msg})
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
		MaxSharesPerObject:      p.MaxSharesPerObject,
		TimeBetweenEvictionRuns: p.TimeBetweenEvictionRuns.D(),
		NumTestsPerEvictionRun:  p.NumTestsPerEvictionRun,
		MinEvictableIdle:        p.MinEvictableIdle.D(),
		SoftMinEvictableIdle:    p.SoftMinEvictableIdle.D(),
		MaxLifetime:             p.MaxLifetime.D(),
		MaxLifetimeJitter:       p.MaxLifetimeJitter.D(),
		MakeFailureThreshold:    p.MakeFailureThreshold,
		MakeBackoffBase:         p.MakeBackoffBase.D(),
		MakeBackoffMax:          p.MakeBackoffMax.D(),
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

// FactoryConfig returns f's gRPC section as a grpcfactory configuration
// for connections keyed by address, with stubs made by newStub. Use it on a
// File from Load or Parse: the TLS files have been read then.
func FactoryConfig[T any](f *File, newStub func(grpc.ClientConnInterface) T) grpcfactory.Config[string, T] {
	g := f.GRPC
	c := grpcfactory.Config[string, T]{
		NewStub:  newStub,
		Insecure: g.Insecure,
		Keepalive: grpcfactory.Keepalive{
			Time:            g.Keepalive.Time.D(),
			Timeout:         g.Keepalive.Timeout.D(),
			OnlyWithStreams: g.Keepalive.OnlyWithStreams,
			Disable:         g.Keepalive.Disable,
		},
		IdleTimeout:    g.IdleTimeout.D(),
		ConnectTimeout: g.ConnectTimeout.D(),
		Retry: grpcfactory.RetryPolicy{
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
		c.HealthCheck = &grpcfactory.HealthCheck{Service: h.Service, Timeout: h.Timeout.D(), Interval: h.Interval.D()}
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
