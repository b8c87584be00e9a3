package static_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) Update(eps []discovery.Endpoint) {
	s := "update"
	for _, e := range eps {
		s += " " + e.Addr()
	}
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
}

func (r *recorder) Error(err error) {
	r.mu.Lock()
	r.log = append(r.log, "error "+err.Error())
	r.mu.Unlock()
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

func TestWatchFollowsSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := static.New(map[string][]discovery.Endpoint{"a": {{Address: "10.0.0.1", Port: 80}}})
		ctx, cancel := context.WithCancel(t.Context())
		var w1, w2, ghost recorder
		done := make(chan error, 3)
		go func() { done <- res.Watch(ctx, "a", &w1) }()
		go func() { done <- res.Watch(ctx, "a", &w2) }()
		go func() { done <- res.Watch(ctx, "none", &ghost) }()
		synctest.Wait()
		eps := []discovery.Endpoint{{Address: "10.0.0.2", Port: 80}, {Address: "[::1]:81"}}
		res.Set("a", eps)
		eps[0].Port = 99 // Set copied the list
		synctest.Wait()
		res.Fail("a", errors.New("registry down"))
		synctest.Wait()
		res.Set("a", nil)
		synctest.Wait()
		want := []string{"update 10.0.0.1:80", "update 10.0.0.2:80 [::1]:81", "error registry down", "update"}
		for name, w := range map[string]*recorder{"w1": &w1, "w2": &w2} {
			if got := w.got(); !slices.Equal(got, want) {
				t.Errorf("%s got %q, want %q", name, got, want)
			}
		}
		if got := ghost.got(); !slices.Equal(got, []string{"update"}) {
			t.Errorf("watch of a service never set got %q, want one empty update", got)
		}
		cancel()
		for range 3 {
			if err := <-done; err != context.Canceled {
				t.Errorf("Watch() = %v, want context.Canceled", err)
			}
		}
		if got := res.Endpoints("a"); len(got) != 0 {
			t.Errorf("Endpoints(a) = %v, want none", got)
		}
	})
}

func TestEndpointAddr(t *testing.T) {
	tests := []struct {
		ep   discovery.Endpoint
		want string
	}{
		{discovery.Endpoint{Address: "10.0.0.1", Port: 80}, "10.0.0.1:80"},
		{discovery.Endpoint{Address: "::1", Port: 80}, "[::1]:80"},
		{discovery.Endpoint{Address: "host:81"}, "host:81"},
	}
	for _, tt := range tests {
		if got := tt.ep.Addr(); got != tt.want {
			t.Errorf("%+v.Addr() = %q, want %q", tt.ep, got, tt.want)
		}
	}
}
