package consul_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
)

func newFake(t *testing.T, f *fakeConsul, cfg consul.Config) *consul.Resolver {
	t.Helper()
	cfg.HTTPClient = &http.Client{Transport: f}
	if cfg.Address == "" {
		cfg.Address = "consul.invalid:8500"
	}
	res, err := consul.New(cfg)
	if err != nil {
		t.Fatalf("consul.New() error = %v", err)
	}
	return res
}

func TestNewNamesInvalidFields(t *testing.T) {
	tests := []struct {
		cfg  consul.Config
		want string
	}{
		{consul.Config{WaitTime: -1}, "WaitTime"},
		{consul.Config{BackoffBase: -1}, "BackoffBase"},
		{consul.Config{BackoffMax: -1}, "BackoffMax"},
		{consul.Config{BackoffBase: time.Minute, BackoffMax: time.Second}, "below BackoffBase"},
		{consul.Config{Tags: []string{"a", ""}}, "Tags[1]"},
		{consul.Config{TLS: &api.TLSConfig{}, HTTPClient: http.DefaultClient}, "TLS"},
	}
	for _, tt := range tests {
		_, err := consul.New(tt.cfg)
		if !errors.Is(err, consul.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) error = %v, want ErrInvalidConfig naming %s", tt.cfg, err, tt.want)
		}
	}
	if _, err := consul.New(consul.Config{}); err != nil {
		t.Errorf("New(zero Config) error = %v, want nil", err)
	}
}

// The watch sends Consul's index back as WaitIndex, starts over from 0 when
// it goes backwards, sends 1 when Consul answers 0, and delivers a list only
// when it changed.
func TestWatchIndexHandling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := entry(1, 80, api.HealthPassing), entry(2, 80, api.HealthPassing)
		f := &fakeConsul{script: []answer{
			{index: 10, entries: []*api.ServiceEntry{a, b}},
			{index: 12, entries: []*api.ServiceEntry{b, a}}, // same list, other order: no change
			{index: 5, entries: []*api.ServiceEntry{a}},     // backwards
			{index: 0, entries: []*api.ServiceEntry{a}},     // not positive
			{index: 7, entries: []*api.ServiceEntry{a, b}},
		}, gate: make(chan struct{})}
		res := newFake(t, f, consul.Config{})
		w := newRecorder()
		stop := watch(res, "svc", w)
		for range 5 {
			synctest.Wait()
			f.gate <- struct{}{}
		}
		synctest.Wait()

		var got []string
		for _, r := range f.requests() {
			got = append(got, r.index)
		}
		// The first query has no index; then 10, 12, 0 (reset), 1, 7.
		want := []string{"", "10", "12", "", "1", "7"}
		if !slices.Equal(got, want) {
			t.Errorf("query indexes = %q, want %q", got, want)
		}
		updates, errs := w.got()
		var lists [][]string
		for _, u := range updates {
			lists = append(lists, addrs(u))
		}
		wantLists := [][]string{{"10.0.0.1:80", "10.0.0.2:80"}, {"10.0.0.1:80"}, {"10.0.0.1:80", "10.0.0.2:80"}}
		if !slices.EqualFunc(lists, wantLists, slices.Equal) || len(errs) != 0 {
			t.Errorf("updates = %v, errors = %v; want %v and none", lists, errs, wantLists)
		}
		if err := stop(); err != context.Canceled {
			t.Errorf("Watch() = %v after its context ended, want context.Canceled", err)
		}
	})
}

// After a failed query the next one carries no index, so that an agent
// that restarted (its index starts over, lower) answers at once instead of
// holding the query for WaitTime; the list it gives then is delivered.
func TestWatchFailedQueryStartsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := entry(1, 80, api.HealthPassing), entry(2, 80, api.HealthPassing)
		f := &fakeConsul{script: []answer{
			{index: 40, entries: []*api.ServiceEntry{a}},
			{index: 42, entries: []*api.ServiceEntry{a}},
			{status: 500},
			{status: 500},
			{index: 7, entries: []*api.ServiceEntry{a, b}}, // the restarted agent
			{index: 9, entries: []*api.ServiceEntry{a, b}},
		}, gate: make(chan struct{})}
		res := newFake(t, f, consul.Config{WaitTime: 5 * time.Minute, BackoffBase: time.Second, BackoffMax: time.Second})
		w := newRecorder()
		stop := watch(res, "svc", w)
		defer stop()
		for range 6 {
			synctest.Wait()
			f.gate <- struct{}{}
			time.Sleep(time.Second) // fake time: past any retry's wait
		}
		synctest.Wait()

		var got []string
		for _, r := range f.requests() {
			got = append(got, r.index)
		}
		want := []string{"", "40", "42", "", "", "7", "9"}
		if !slices.Equal(got, want) {
			t.Errorf("query indexes = %q, want %q (no index after each failure)", got, want)
		}
		updates, errs := w.got()
		if len(updates) != 2 || !slices.Equal(addrs(updates[1]), []string{"10.0.0.1:80", "10.0.0.2:80"}) || len(errs) != 2 {
			t.Errorf("updates = %v, errors = %d; want the first list, then both instances, and 2 errors", updates, len(errs))
		}
	})
}

// Failed queries are reported one by one and retried after jittered,
// doubling waits up to BackoffMax; the endpoints last delivered stand
// meanwhile; a success resets the backoff.
func TestWatchRetriesWithBackoffAndKeepsLastGood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := entry(1, 80, api.HealthPassing)
		script := []answer{{index: 3, entries: []*api.ServiceEntry{a}}}
		for range 5 {
			script = append(script, answer{status: 500})
		}
		script = append(script, answer{index: 4, entries: []*api.ServiceEntry{a, entry(2, 80, api.HealthPassing)}}, answer{status: 503})
		f := &fakeConsul{script: script}
		res := newFake(t, f, consul.Config{BackoffBase: time.Second, BackoffMax: 4 * time.Second})
		w := newRecorder()
		stop := watch(res, "svc", w)
		defer stop()
		time.Sleep(time.Minute) // fake time: every retry has run
		synctest.Wait()

		updates, errs := w.got()
		if len(errs) != 6 {
			t.Fatalf("errors = %d (%v), want 6, one per failed query", len(errs), errs)
		}
		if !strings.Contains(errs[0].Error(), `"svc"`) || !strings.Contains(errs[0].Error(), "500") {
			t.Errorf("error = %q, want it to name the service and Consul's status", errs[0])
		}
		if len(updates) != 2 || len(updates[0]) != 1 || len(updates[1]) != 2 {
			t.Errorf("updates = %v, want the first list kept through the errors, then the new one", updates)
		}
		reqs := f.requests()
		// Waits after failures 1..5: [0.5,1], [1,2], [2,4], [2,4], [2,4]
		// seconds; then a success, and the next failure starts over.
		bounds := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second, 0, time.Second}
		for i, hi := range bounds {
			if hi == 0 {
				continue // after a success: the next query at once
			}
			gap := reqs[i+2].at.Sub(reqs[i+1].at)
			if gap < hi/2 || gap > hi {
				t.Errorf("wait after failure in query %d = %v, want within [%v, %v]", i+2, gap, hi/2, hi)
			}
		}
		if gap := reqs[7].at.Sub(reqs[6].at); gap != 0 {
			t.Errorf("query after a success waited %v, want 0", gap)
		}
	})
}

// Passing instances only, by default; all of them when none passes, with
// FallbackToAll; weights by status; the node's address when the service
// has none.
func TestWatchHealthFilterAndFallback(t *testing.T) {
	warn := entry(3, 90, api.HealthPassing, api.HealthWarning)
	warn.Service.Weights = api.AgentWeights{Passing: 10, Warning: 2}
	warn.Service.Address = "svc3.example"
	tests := []struct {
		name     string
		all      bool
		entries  []*api.ServiceEntry
		want     []string
		wantHlth []discovery.Health
	}{
		{"passing only", false, []*api.ServiceEntry{entry(1, 80, api.HealthPassing), entry(2, 80, api.HealthCritical), warn},
			[]string{"10.0.0.1:80"}, []discovery.Health{discovery.HealthPassing}},
		{"none passing, no fallback", false, []*api.ServiceEntry{entry(2, 80, api.HealthCritical)}, []string{}, nil},
		{"none passing, fallback", true, []*api.ServiceEntry{entry(2, 80, api.HealthCritical), warn},
			[]string{"10.0.0.2:80", "svc3.example:90"}, []discovery.Health{discovery.HealthCritical, discovery.HealthWarning}},
		{"some passing, fallback unused", true, []*api.ServiceEntry{entry(1, 80, api.HealthPassing), entry(2, 80, api.HealthCritical)},
			[]string{"10.0.0.1:80"}, []discovery.Health{discovery.HealthPassing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeConsul{script: []answer{{index: 1, entries: tt.entries}}}
				w := newRecorder()
				stop := watch(newFake(t, f, consul.Config{FallbackToAll: tt.all}), "svc", w)
				defer stop()
				synctest.Wait()
				got := w.last()
				if !slices.Equal(addrs(got), tt.want) {
					t.Fatalf("endpoints = %v, want %v", addrs(got), tt.want)
				}
				for i, e := range got {
					if e.Health != tt.wantHlth[i] {
						t.Errorf("%s Health = %v, want %v", e.Addr(), e.Health, tt.wantHlth[i])
					}
					if e.Address == "svc3.example" && e.Weight != 2 {
						t.Errorf("warning instance Weight = %d, want its warning weight 2", e.Weight)
					}
				}
			})
		})
	}
}

// Tags, datacenter, token and stale reads go into every query.
func TestWatchQueryParameters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeConsul{script: []answer{{index: 1}}}
		res := newFake(t, f, consul.Config{Tags: []string{"blue", "v2"}, Datacenter: "dc2", Token: "secret", AllowStale: true, WaitTime: 7 * time.Second})
		w := newRecorder()
		stop := watch(res, "svc", w)
		defer stop()
		synctest.Wait()
		reqs := f.requests()
		if len(reqs) != 2 {
			t.Fatalf("requests = %d, want 2 (the answer, then a blocking query)", len(reqs))
		}
		r := reqs[1]
		for _, want := range []string{"/v1/health/service/svc", "tag=blue", "tag=v2", "dc=dc2", "stale", "wait=7000ms", "index=1"} {
			if !strings.Contains(r.url, want) {
				t.Errorf("query URL %s lacks %q", r.url, want)
			}
		}
		if strings.Contains(r.url, "passing") {
			t.Errorf("query URL %s asks for passing only; the watch filters itself, for FallbackToAll", r.url)
		}
		if r.token != "secret" {
			t.Errorf("X-Consul-Token = %q, want the configured token", r.token)
		}
	})
}

// All the watches of a service share one query loop: one request in flight
// at a time, whatever their number; a late watcher gets the list at once;
// the loop stops with the last watch.
func TestWatchOneQueryPerService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeConsul{script: []answer{{index: 1, entries: []*api.ServiceEntry{entry(1, 80, api.HealthPassing)}}}}
		res := newFake(t, f, consul.Config{})
		var stops []func() error
		var ws []*recorder
		for range 5 {
			w := newRecorder()
			ws = append(ws, w)
			stops = append(stops, watch(res, "svc", w))
		}
		synctest.Wait()
		late := newRecorder()
		stops = append(stops, watch(res, "svc", late))
		ws = append(ws, late)
		synctest.Wait()
		for i, w := range ws {
			if got := addrs(w.last()); !slices.Equal(got, []string{"10.0.0.1:80"}) {
				t.Errorf("watcher %d endpoints = %v, want [10.0.0.1:80]", i, got)
			}
		}
		if n := len(f.requests()); n != 2 || f.most != 1 {
			t.Errorf("requests = %d, most in flight %d; want 2 and 1: one query loop for 6 watches", n, f.most)
		}
		for _, stop := range stops {
			stop()
		}
		synctest.Wait()
		if f.inFlight != 0 {
			t.Errorf("requests in flight after the last watch ended = %d, want 0", f.inFlight)
		}
		// A new watch starts a new loop.
		w := newRecorder()
		stop := watch(res, "svc", w)
		synctest.Wait()
		if n := len(f.requests()); n != 3 {
			t.Errorf("requests after a new watch = %d, want 3", n)
		}
		stop()
	})
}
