package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kpool-go/kpool/metrics"
)

const statsAbout = `Reads /stats from a running kpool (start or demo) and prints each pool,
its keys and the services it follows as tables, or the JSON as is with
--json. A key's stream cap is the streams its server allows per
connection, as the pool's connections learned it; "-" when they learned
none (no limit, or the pool lends no shared leases). It exits 1 when it
cannot reach the instance or the instance answers with an error (an
unknown key or service, say).`

const healthAbout = `Reads /health from a running kpool (start or demo) and prints whether it
is healthy and why not. It exits 0 when healthy, 1 when unhealthy or when
it cannot reach the instance.`

// inspectFlags are the flags stats and health share.
type inspectFlags struct {
	addr, service, key string
	json               bool
	timeout            time.Duration

	base url.URL // the instance, from addr: scheme, host and path prefix
}

func (f *inspectFlags) register(fs *flag.FlagSet, withKey bool) {
	fs.StringVar(&f.addr, "addr", metrics.DefaultAddr, "the instance's HTTP endpoints (its --http): `host:port`, or a URL such as http://host:port as demo prints it")
	fs.StringVar(&f.service, "service", "", "report this service only")
	if withKey {
		fs.StringVar(&f.key, "key", "", "report this pool key only (an endpoint's host:port)")
	}
	fs.BoolVar(&f.json, "json", false, "print the JSON the instance answered")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up on the instance after this long; more than 0")
}

// check checks the flags' values once parsed; a bad one is a usage error
// naming the flag, refused before anything is asked of the instance.
func (f *inspectFlags) check(fs *flag.FlagSet, stderr io.Writer) (code int, ok bool) {
	if f.timeout <= 0 {
		return usageError(fs, stderr, "--timeout is %v, want more than 0", f.timeout), false
	}
	base, err := instanceURL(f.addr)
	if err != nil {
		return usageError(fs, stderr, "--addr is %q, want host:port or http://host:port", f.addr), false
	}
	f.base = *base
	return 0, true
}

// instanceURL returns the base URL of the instance at addr: host:port, or
// an http or https URL. A URL may end in a slash or in the path of one of
// the endpoints (/metrics, /health, /stats: what demo prints), which is
// dropped; a path before it is kept, for an instance behind a proxy.
func instanceURL(addr string) (*url.URL, error) {
	if !strings.Contains(addr, "://") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("bad port %q", port)
		}
		return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
	}
	u, err := url.Parse(addr)
	switch {
	case err != nil:
		return nil, err
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("scheme %q", u.Scheme)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("not a base URL")
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		// A colon with no port after it would dial the scheme's port.
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("bad port %q", p)
		}
	}
	path := strings.TrimSuffix(u.Path, "/")
	for _, e := range []string{"/metrics", "/health", "/stats"} {
		if p, ok := strings.CutSuffix(path, e); ok {
			path = p
			break
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host, Path: path}, nil
}

// fetch GETs path from the instance with the filters; it returns the body
// and status, or an error that says what could not be reached.
func (f *inspectFlags) fetch(ctx context.Context, path string) ([]byte, int, error) {
	q := url.Values{}
	if f.service != "" {
		q.Set("service", f.service)
	}
	if f.key != "" {
		q.Set("key", f.key)
	}
	u := f.base
	u.Path += path
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("bad --addr %q: %w", f.addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot reach a kpool instance at %s: %w", f.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", u.String(), err)
	}
	return body, resp.StatusCode, nil
}

// answerError returns the error an instance answered with, if body is one.
func answerError(body []byte, code int) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Errorf("the instance answered %d: %s", code, e.Error)
	}
	return fmt.Errorf("the instance answered %d: %.200s", code, body)
}

func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("stats", "[flags]", statsAbout)
	var f inspectFlags
	f.register(fs, true)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if code, ok := f.check(fs, stderr); !ok {
		return code
	}
	body, code, err := f.fetch(ctx, "/stats")
	if err == nil && code != http.StatusOK {
		err = answerError(body, code)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kpool stats: %v\n", err)
		return 1
	}
	if f.json {
		stdout.Write(body)
		return 0
	}
	var rep metrics.StatsReport
	if err := json.Unmarshal(body, &rep); err != nil {
		fmt.Fprintf(stderr, "kpool stats: the answer from %s is not a stats report: %v\n", f.addr, err)
		return 1
	}
	printStats(stdout, rep)
	return 0
}

// printStats prints rep as tables. The stream cap column is each key's
// share cap (KeyReport.ShareCap): the streams its server allows per
// connection, as its connections learned it; "-" when they learned none (no
// limit, no shared leases, or no connection yet). A pool's own row leaves
// it blank: its keys' servers may differ.
func printStats(w io.Writer, rep metrics.StatsReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pool\tkey\tactive\tidle\tmaking\twaiters\tshares\tstream cap\tborrowed\tcreated\tdestroyed\tmake errors\t")
	for _, p := range rep.Pools {
		state := p.Name
		if p.Closed {
			state += " (closed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t\t%d\t%d\t%d\t%d\t\n", state, fmt.Sprintf("(%d keys)", p.Keys),
			p.Active, p.Idle, p.Making, p.Waiters, p.SharesInUse,
			p.Counters.Borrowed, p.Counters.Created, p.Counters.Destroyed, p.Counters.MakeErrors)
		for _, k := range p.PerKey {
			key := k.Key
			if k.BackoffUntil != "" {
				key += " (backoff)"
			}
			fmt.Fprintf(tw, "\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t\n", key,
				k.Active, k.Idle, k.Making, k.Waiters, k.SharesInUse, streamCap(k.ShareCap),
				k.Counters.Borrowed, k.Counters.Created, k.Counters.Destroyed, k.Counters.MakeErrors)
		}
		if p.KeysOmitted > 0 {
			fmt.Fprintf(tw, "\t(%d more keys)\t\t\t\t\t\t\t\t\t\t\t\n", p.KeysOmitted)
		}
	}
	tw.Flush()
	if len(rep.Services) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "service\tendpoints\tusable\tupdates\terrors\tlast error\t")
	for _, s := range rep.Services {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t\n", s.Service, s.Endpoints, s.Usable, s.Updates, s.Errors, s.LastError)
	}
	tw.Flush()
}

// streamCap is the stream cap column's cell for a share cap: "-" for 0,
// none learned.
func streamCap(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("health", "[flags]", healthAbout)
	var f inspectFlags
	f.register(fs, false)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if code, ok := f.check(fs, stderr); !ok {
		return code
	}
	body, code, err := f.fetch(ctx, "/health")
	if err == nil && code != http.StatusOK && code != http.StatusServiceUnavailable {
		err = answerError(body, code)
	}
	var rep metrics.HealthReport
	if err == nil {
		if jerr := json.Unmarshal(body, &rep); jerr != nil || rep.Status == "" {
			err = errors.Join(fmt.Errorf("the answer from %s is not a health report", f.addr), jerr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "kpool health: %v\n", err)
		return 1
	}
	if f.json {
		stdout.Write(body)
	} else {
		printHealth(stdout, rep)
	}
	if rep.Status != "ok" {
		return 1
	}
	return 0
}

func printHealth(w io.Writer, rep metrics.HealthReport) {
	fmt.Fprintf(w, "status: %s\n", rep.Status)
	for _, r := range rep.Reasons {
		fmt.Fprintf(w, "  - %s\n", r)
	}
	for _, p := range rep.Pools {
		state := "open"
		if !p.Open {
			state = "closed"
		}
		line := fmt.Sprintf("pool %s: %s", p.Name, state)
		if len(p.Unhealthy) > 0 {
			line += ", unhealthy: " + strings.Join(p.Unhealthy, ", ")
		}
		fmt.Fprintln(w, line)
	}
	for _, s := range rep.Services {
		fmt.Fprintf(w, "service %s: %d of %d endpoints usable\n", s.Service, s.Usable, s.Endpoints)
	}
}
