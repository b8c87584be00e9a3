package metrics_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// Tests of the HTTP endpoints' documented answers and of Serve's shutdown.

// Every error answer of Handler is a JSON object {"error": "..."}, as its
// doc says, those of the mux included (a method other than GET or HEAD, an
// unknown path), so that a client can decode every error body.
func TestHandlerErrorsAreJSON(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	base := serve(t, m, reg)
	c := &http.Client{Timeout: testTimeout}
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/stats", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/health", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nope", http.StatusNotFound},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		if resp.StatusCode != tc.code || ct != "application/json" || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s %s = %d %q %q, want %d application/json {\"error\": ...}", tc.method, tc.path, resp.StatusCode, ct, body, tc.code)
		}
	}
}

// /health?service=NAME judges that service only, as a per-service readiness
// probe or load-balancer check needs: a closed pool (one for another
// backend, being retired) does not fail it.
func TestHealthServiceFilterJudgesThatServiceOnly(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	p := newPool(t, &testfactory.Factory{}, keyedpool.Config{})
	if err := metrics.AddPool(m, "retired", p, nil); err != nil {
		t.Fatal(err)
	}
	m.AddServices(services{{Service: "users", Endpoints: 2, Usable: 2}})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, serve(t, m, reg)+"/health?service=users")
	if code != http.StatusOK {
		t.Errorf("GET /health?service=users with users fully usable = %d, want 200; body:\n%s", code, body)
	}
}

// blockingGatherer blocks every Gather until release is closed.
type blockingGatherer struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (g *blockingGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.release
	return nil, nil
}

// When ctx ends, Serve gives requests in flight 5 seconds, then closes their
// connections before it returns: a request stuck (here in a slow collector)
// does not outlive Serve. (This test takes the 5 seconds of Serve's own
// grace period.)
func TestServeClosesRequestsAfterGracePeriod(t *testing.T) {
	m, _ := newMetrics(t, metrics.Options{})
	g := &blockingGatherer{entered: make(chan struct{}), release: make(chan struct{})}
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() { close(g.release) })
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- metrics.Serve(ctx, lis, m.Handler(g)) }()

	got := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 3 * testTimeout}
		resp, err := c.Get("http://" + lis.Addr().String() + "/metrics")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case <-g.entered:
	case <-time.After(testTimeout):
		t.Fatal("the scrape did not reach the gatherer")
	}
	cancel()
	select {
	case err := <-served:
		if err == nil {
			t.Errorf("Serve() with a request stuck past the grace period = nil, want the shutdown error")
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve() did not return after its 5 s grace period")
	}
	// Serve has returned: the stuck request's connection must be closed.
	ended := false
	select {
	case <-got:
		ended = true
	case <-time.After(time.Second):
		t.Errorf("1 s after Serve() returned, the request in flight still has its connection open: the server was not closed")
	}
	release() // let the handler, the connection and the client end
	if !ended {
		<-got
	}
}
