package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// smallBench keeps the bench runs of the tests short and light.
var smallBench = []string{"--callers", "20", "--conns", "4", "--max-streams", "5", "--delay", "1ms", "--duration", "150ms", "--warmup", "50"}

func TestBenchTable(t *testing.T) {
	code, stdout, stderr := runKpool(context.Background(), append([]string{"bench"}, smallBench...)...)
	if code != 0 {
		t.Fatalf("bench = %d, want 0\nstderr: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 6 {
		t.Fatalf("bench printed %d lines, want a header and 5 modes:\n%s", len(lines), stdout)
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "mode requests rps p50 p99 errors connections" {
		t.Errorf("header = %q", lines[0])
	}
	for i, mode := range []string{"single", "roundrobin", "exclusive", "shared", "shared-auto"} {
		f := strings.Fields(lines[i+1])
		if len(f) != 7 || f[0] != mode || f[5] != "0" || !strings.HasSuffix(f[3], "ms") {
			t.Errorf("line %d = %q, want mode %s with 0 errors", i+1, lines[i+1], mode)
		}
	}
	if !strings.Contains(stderr, "msg=measuring mode=shared") {
		t.Errorf("stderr does not log progress: %s", stderr)
	}
}

func TestBenchJSON(t *testing.T) {
	args := append([]string{"bench", "--json", "--mode", "shared, roundrobin", "--payload", "1000"}, smallBench...)
	code, stdout, stderr := runKpool(context.Background(), args...)
	if code != 0 {
		t.Fatalf("bench --json = %d, want 0\nstderr: %s", code, stderr)
	}
	var out struct {
		Settings benchSettings
		Results  []benchResult
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("bench --json output is not JSON: %v\n%s", err, stdout)
	}
	if len(out.Results) != 2 || out.Results[0].Mode != "shared" || out.Results[1].Mode != "roundrobin" {
		t.Fatalf("results = %+v, want shared then roundrobin", out.Results)
	}
	if out.Settings.Shares != 5 || out.Settings.Payload != 1000 {
		t.Errorf("settings = %+v, want shares 5 (from --max-streams), payload 1000", out.Settings)
	}
	for _, r := range out.Results {
		if r.Requests == 0 || r.Errors != 0 || r.RPS <= 0 || r.P99ms < r.P50ms || r.P50ms < 1 {
			t.Errorf("result %+v: want requests, no errors, p99 >= p50 >= the 1ms delay", r)
		}
	}
	// 20 callers at 5 shares need 4 connections, the --conns limit;
	// roundrobin always opens all 4.
	if r := out.Results[1]; r.Connections != 4 {
		t.Errorf("roundrobin connections = %d, want 4", r.Connections)
	}
	if r := out.Results[0]; r.Connections < 1 || r.Connections > 4 {
		t.Errorf("shared connections = %d, want 1 to 4", r.Connections)
	}
}

// --shares auto runs shared as shared-auto: told nothing of the server's 5
// streams per connection, it settles on the 4 connections 20 callers need,
// though --conns is not there to bound it.
func TestBenchSharesAuto(t *testing.T) {
	args := []string{"bench", "--json", "--mode", "shared", "--shares", "auto", "--callers", "20",
		"--max-streams", "5", "--delay", "1ms", "--duration", "150ms", "--warmup", "50"}
	code, stdout, stderr := runKpool(context.Background(), args...)
	if code != 0 {
		t.Fatalf("bench --shares auto = %d, want 0\nstderr: %s", code, stderr)
	}
	var out struct {
		Settings benchSettings
		Results  []benchResult
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("bench --json output is not JSON: %v\n%s", err, stdout)
	}
	if len(out.Results) != 1 || out.Results[0].Mode != "shared-auto" {
		t.Fatalf("results = %+v, want one shared-auto", out.Results)
	}
	if r := out.Results[0]; r.Errors != 0 || r.Connections < 4 || r.Connections > 6 {
		t.Errorf("shared-auto: %d errors on %d connections, want none on 4 to 6 (1.5x what the cap needs)", r.Errors, r.Connections)
	}
	// With the default modes, shared turned shared-auto runs once.
	code, stdout, stderr = runKpool(context.Background(), append([]string{"bench", "--shares", "auto"}, smallBench...)...)
	if code != 0 || strings.Count(stdout, "shared-auto") != 1 || strings.Count(stdout, "\n") != 5 {
		t.Errorf("bench --shares auto with the default modes = %d:\n%s\nwant shared-auto once among 4 modes", code, stdout)
	}
	code, _, stderr = runKpool(context.Background(), "bench", "--shares", "lots")
	if code != 2 || !strings.Contains(stderr, `--shares is "lots", want a number or auto`) {
		t.Errorf("bench --shares lots = %d, stderr %q; want 2 and the flag named", code, stderr)
	}
}

func TestBenchInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code, _, stderr := runKpool(ctx, append([]string{"bench"}, smallBench...)...)
	if code != 1 || !strings.Contains(stderr, "kpool bench: interrupted during mode single") {
		t.Errorf("bench with a cancelled context = %d, stderr %q; want 1 and \"interrupted\"", code, stderr)
	}
}
