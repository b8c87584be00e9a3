package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func rvBench(t *testing.T, args ...string) (settings benchSettings, results []benchResult) {
	t.Helper()
	base := []string{"bench", "--json", "--callers", "20", "--delay", "1ms", "--duration", "150ms", "--warmup", "50"}
	code, stdout, stderr := runKpool(context.Background(), append(base, args...)...)
	if code != 0 {
		t.Fatalf("bench %v = %d\nstderr: %s", args, code, stderr)
	}
	var out struct {
		Settings benchSettings
		Results  []benchResult
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	return out.Settings, out.Results
}

// --shares auto turns every shared in --mode into shared-auto (one run of
// it, as the command merges the two), and --json says so.
func TestBenchSharesAutoEveryShared(t *testing.T) {
	s, rs := rvBench(t, "--mode", "shared,single,shared-auto", "--shares", "auto", "--max-streams", "5")
	if len(rs) != 2 || rs[0].Mode != "shared-auto" || rs[1].Mode != "single" {
		t.Fatalf("results = %+v, want shared-auto then single", rs)
	}
	if s.Shares != 0 || strings.Join(s.Modes, ",") != "shared-auto,single" {
		t.Errorf("settings = %+v, want shares 0 and modes shared-auto,single", s)
	}
	rs = rs[:1]
	for _, r := range rs {
		if r.Errors != 0 || r.Connections < 4 || r.Connections > 6 {
			t.Errorf("%+v: want no errors on 4 to 6 connections", r)
		}
	}
}

// --conns, when given, bounds shared-auto's connections.
func TestBenchSharesAutoConnsBound(t *testing.T) {
	_, rs := rvBench(t, "--mode", "shared-auto", "--conns", "2", "--max-streams", "5")
	if len(rs) != 1 || rs[0].Errors != 0 || rs[0].Connections < 1 || rs[0].Connections > 2 {
		t.Errorf("results = %+v, want shared-auto on at most 2 connections, no errors", rs)
	}
}

// Without a server cap, shared-auto puts every caller on one connection.
func TestBenchSharesAutoNoCap(t *testing.T) {
	_, rs := rvBench(t, "--mode", "shared", "--shares", "auto", "--max-streams", "0")
	if len(rs) != 1 || rs[0].Mode != "shared-auto" || rs[0].Errors != 0 || rs[0].Connections != 1 {
		t.Errorf("results = %+v, want shared-auto on 1 connection, no errors", rs)
	}
}

func TestBenchSharesFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--shares", "-1"}, "--shares is -1"},
		{[]string{"--shares", "AUTO"}, `--shares is "AUTO"`},
		{[]string{"--shares", ""}, `--shares is ""`},
		{[]string{"--shares", "auto", "--mode", "shared,nope"}, `--mode: unknown mode "nope"`},
		{[]string{"--shares", "auto", "--callers", "0"}, "--callers is 0"},
	} {
		code, _, stderr := runKpool(context.Background(), append([]string{"bench"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("bench %q = %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
