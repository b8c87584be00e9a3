package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// serveInstance serves the endpoints of a pool with keys a (1 idle) and b
// (1 lent) on a real loopback port, as a running kpool would; it returns the
// address and the pool.
func serveInstance(t *testing.T) (string, *keyedpool.Pool[string, *testfactory.Obj]) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyedpool.New(&testfactory.Factory{}, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.AddObject(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Borrow(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := metrics.AddPool(m, "backends", p, nil); err != nil {
		t.Fatal(err)
	}
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(sctx, lis, m.Handler(reg)) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ended, stop := context.WithCancel(ctx)
		stop() // b is still lent: do not wait for it
		p.Close(ended)
	})
	return lis.Addr().String(), p
}

func TestStatsCommand(t *testing.T) {
	addr, _ := serveInstance(t)
	ctx := context.Background()

	code, out, errOut := runKpool(ctx, "stats", "--addr", addr)
	if code != 0 {
		t.Fatalf("stats = %d, stderr %s", code, errOut)
	}
	for _, want := range []string{"backends", "(2 keys)", "\n", " a ", " b "} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = runKpool(ctx, "stats", "--addr", addr, "--key", "b", "--json")
	var rep metrics.StatsReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Pools) != 1 ||
		len(rep.Pools[0].PerKey) != 1 || rep.Pools[0].PerKey[0].Key != "b" || rep.Pools[0].PerKey[0].Active != 1 {
		t.Errorf("stats --key b --json = %d %s, want the JSON of key b alone, 1 active", code, out)
	}

	code, _, errOut = runKpool(ctx, "stats", "--addr", addr, "--key", "nope")
	if code != 1 || !strings.Contains(errOut, `unknown key \"nope\"`) && !strings.Contains(errOut, `unknown key "nope"`) {
		t.Errorf("stats --key nope = %d, stderr %q; want 1 naming the key", code, errOut)
	}
}

func TestHealthCommand(t *testing.T) {
	addr, p := serveInstance(t)
	ctx := context.Background()
	code, out, errOut := runKpool(ctx, "health", "--addr", addr)
	if code != 0 || !strings.Contains(out, "status: ok") || !strings.Contains(out, "pool backends: open") {
		t.Errorf("health = %d %q (stderr %q), want 0 and ok", code, out, errOut)
	}

	ended, stop := context.WithCancel(ctx)
	stop()
	p.Close(ended)
	code, out, _ = runKpool(ctx, "health", "--addr", addr)
	if code != 1 || !strings.Contains(out, "status: unhealthy") || !strings.Contains(out, `pool "backends" is closed`) {
		t.Errorf("health of a closed pool = %d %q, want 1 with the reason", code, out)
	}
}

func TestInspectCannotConnect(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	for _, cmd := range []string{"stats", "health"} {
		code, _, errOut := runKpool(context.Background(), cmd, "--addr", dead)
		if code != 1 || !strings.Contains(errOut, "cannot reach a kpool instance at "+dead) {
			t.Errorf("%s --addr %s = %d, stderr %q; want 1 and a clear error", cmd, dead, code, errOut)
		}
	}
}
