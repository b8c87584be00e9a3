package consul_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery"
)

// answer is one scripted answer of fakeConsul: entries at an index, an HTTP
// error status, or (block) no answer until the request's context ends.
type answer struct {
	index   uint64
	entries []*api.ServiceEntry
	status  int
	block   bool
}

// request is what fakeConsul saw of one query.
type request struct {
	at    time.Time
	index string // the index query parameter
	url   string
	token string
}

// fakeConsul is an http.RoundTripper that answers health queries from a
// script, in memory, so that tests run in a synctest bubble. After the
// script it blocks every request.
type fakeConsul struct {
	// gate, when set, holds each scripted answer until the test sends on
	// it, so that the watcher sees every answer before the next.
	gate chan struct{}

	mu       sync.Mutex
	script   []answer
	reqs     []request
	inFlight int
	most     int // most requests in flight at once
}

func (f *fakeConsul) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, request{at: time.Now(), index: req.URL.Query().Get("index"), url: req.URL.String(), token: req.Header.Get("X-Consul-Token")})
	a := answer{block: true}
	if len(f.script) > 0 {
		a, f.script = f.script[0], f.script[1:]
	}
	f.inFlight++
	f.most = max(f.most, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if a.block {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	if a.status != 0 {
		return &http.Response{StatusCode: a.status, Body: io.NopCloser(bytes.NewReader([]byte("fake error"))), Header: http.Header{}, Request: req}, nil
	}
	body, err := json.Marshal(a.entries)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set("X-Consul-Index", strconv.FormatUint(a.index, 10))
	h.Set("X-Consul-Knownleader", "true")
	h.Set("Content-Type", "application/json")
	return &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(body)), Header: h, Request: req}, nil
}

func (f *fakeConsul) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

// entry is an instance at 10.0.0.n:port whose checks have the given
// statuses.
func entry(n, port int, statuses ...string) *api.ServiceEntry {
	e := &api.ServiceEntry{
		Node:    &api.Node{Node: "node" + strconv.Itoa(n), Address: "10.0.0." + strconv.Itoa(n)},
		Service: &api.AgentService{ID: "svc-" + strconv.Itoa(n), Service: "svc", Port: port, Weights: api.AgentWeights{Passing: 1, Warning: 1}},
	}
	for i, s := range statuses {
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: "check" + strconv.Itoa(i), Status: s})
	}
	return e
}

// recorder is a discovery.Watcher that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	updates [][]discovery.Endpoint
	errs    []error
	changed chan struct{} // 1-buffered: something new
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) Update(eps []discovery.Endpoint) {
	r.mu.Lock()
	r.updates = append(r.updates, eps)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) Error(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) got() (updates [][]discovery.Endpoint, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]discovery.Endpoint(nil), r.updates...), append([]error(nil), r.errs...)
}

// last returns the last update, or nil.
func (r *recorder) last() []discovery.Endpoint {
	u, _ := r.got()
	if len(u) == 0 {
		return nil
	}
	return u[len(u)-1]
}

// addrs returns the addresses of eps.
func addrs(eps []discovery.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Addr()
	}
	return out
}

// watch runs res.Watch(service, w) in a goroutine until the returned stop
// is called; stop waits for Watch to return and gives its error.
func watch(res discovery.Resolver, service string, w discovery.Watcher) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- res.Watch(ctx, service, w) }()
	return func() error {
		cancel()
		return <-done
	}
}
