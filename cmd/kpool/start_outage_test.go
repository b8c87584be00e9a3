package main

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/grpctest"
)

// outageWarmInterval is the --warm-interval of the outage tests: /health
// must turn 503 within two of them after every backend stops.
const outageWarmInterval = 500 * time.Millisecond

// outage is a service's backends that a test stops and starts again.
type outage interface {
	stop()
	start()
}

// TestStartProcessHealthFailsWhenEveryBackendStops runs kpool start over a
// service whose backends are up, warmed and reported usable, then stops
// every backend while nothing sends RPCs: /health must answer 503 naming
// the service within two warm intervals and stay 503 while they are down,
// and the logs must not say an endpoint is warm again before one is; once
// the backends are back, /health turns 200 and each endpoint is logged
// warm again. Connections that lost their transport go IDLE, and IDLE is
// no sign of a live backend; with the example file as shipped, the eviction
// run's health checks leave some of them behind.
func TestStartProcessHealthFailsWhenEveryBackendStops(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
		path := writeFile(t, fmt.Sprintf(`pool:
  min_idle_per_key: 2
grpc:
  insecure: true
  connect_timeout: 5s
services:
  - name: backend
    discovery:
      static:
        addresses: [%s, %s]
`, a.Addr, b.Addr))
		checkOutage(t, path, []string{a.Addr, b.Addr}, &servers{a, b})
	})
	t.Run("example with kpool backends", func(t *testing.T) {
		t.Parallel()
		path, addrs := exampleCopy(t)
		bk := &backendsProcess{t: t, path: path}
		bk.start()
		checkOutage(t, path, addrs, bk)
	})
}

// checkOutage starts kpool start on the file at path, whose one service
// "backend" lists addrs, and checks /health through an outage of every
// backend (see TestStartProcessHealthFailsWhenEveryBackendStops).
func checkOutage(t *testing.T, path string, addrs []string, o outage) {
	t.Helper()
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--warm-interval", outageWarmInterval.String())
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "/health is 200 with every endpoint usable and warm", func() bool {
		code, rep, _ := getHealth(base)
		keys := statsKeys(t, base)
		return code == http.StatusOK && len(rep.Services) == 1 && rep.Services[0].Usable == len(addrs) &&
			keys[addrs[0]] >= 1 && keys[addrs[1]] >= 1
	})
	logged := len(p.stderr.String())

	o.stop()
	stopped := time.Now()
	within := 2 * outageWarmInterval
	var first time.Duration // when /health first said 503 naming the service
	for first == 0 {
		code, rep, body := getHealth(base)
		if code == http.StatusServiceUnavailable && len(rep.Reasons) == 1 && strings.Contains(rep.Reasons[0], `service "backend" has no usable endpoint`) {
			first = time.Since(stopped)
			break
		}
		if time.Since(stopped) > within {
			t.Fatalf("GET /health %v after every backend stopped = %d %s, want 503 naming service \"backend\" within %v (2 warm intervals)\nlogs:\n%s",
				time.Since(stopped), code, body, within, &p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("/health said 503 naming the service %v after every backend stopped", first)
	// A readiness probe must not pass while the backends are down: not
	// between warm-ups, not when an evictor's checks leave some
	// connections.
	for end := time.Now().Add(3 * outageWarmInterval); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if code, _, body := getHealth(base); code != http.StatusServiceUnavailable {
			t.Fatalf("GET /health %v after every backend stopped = %d %s, want 503 while they are down\nlogs:\n%s", time.Since(stopped), code, body, &p.stderr)
		}
	}
	if l := p.stderr.String()[logged:]; strings.Contains(l, "endpoint warm again") {
		t.Errorf("an endpoint was logged warm again while every backend was down:\n%s", l)
	}

	o.start()
	restarted := time.Now()
	grpctest.WaitFor(t, waitTimeout, "/health is 200 with every endpoint usable once the backends are back", func() bool {
		code, rep, _ := getHealth(base)
		return code == http.StatusOK && len(rep.Services) == 1 && rep.Services[0].Usable == len(addrs)
	})
	t.Logf("/health said 200 %v after the backends came back", time.Since(restarted))
	grpctest.WaitFor(t, waitTimeout, "each endpoint is logged warm again", func() bool {
		l := p.stderr.String()[logged:]
		for _, a := range addrs {
			if !strings.Contains(l, `msg="endpoint warm again" addr=`+a) {
				return false
			}
		}
		return true
	})
	p.stop(syscall.SIGTERM)
}

// servers are in-process backends.
type servers []*grpctest.Server

func (s *servers) stop() {
	for _, srv := range *s {
		srv.Stop()
	}
}

func (s *servers) start() {
	for _, srv := range *s {
		srv.Restart()
	}
}

// backendsProcess is kpool backends serving the file at path.
type backendsProcess struct {
	t    *testing.T
	path string
	p    *process
}

func (b *backendsProcess) start() {
	b.p = startBinary(b.t, "backends", "--config", b.path)
	b.p.waitOutput("ready:")
}

func (b *backendsProcess) stop() { b.p.stop(syscall.SIGTERM) }
