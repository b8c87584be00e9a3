package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kpool-go/kpool/internal/backend"
	"github.com/kpool-go/kpool/internal/e2e"
)

// Bounds of the bench flags: a run stays a benchmark, not a soak, and a
// payload stays under gRPC's default 4 MiB message limit.
const (
	maxBenchDuration = 10 * time.Minute
	maxPayload       = 4<<20 - 1024
)

const benchAbout = `Sends unary RPCs from many concurrent callers to a real gRPC server that
this command starts on 127.0.0.1, once per mode, each mode with a fresh
server, and prints requests, RPCs per second, median and 99th percentile
latency, failed RPCs and the connections the server held at the end.

Modes: single (one ClientConn), roundrobin (--conns ClientConns picked in
turn, no pool), exclusive (kpool, one RPC per borrowed connection, up to
--conns connections), shared (kpool with shared leases through
grpcpool.Conn: up to --shares RPCs per connection, up to --conns
connections), shared-auto (shared told nothing: each connection learns
how many streams its server allows and takes that many RPCs, and the pool
opens what the load needs, up to --conns if given, else one per caller;
--shares auto makes shared run as shared-auto). The defaults are the
README's "capped" scenario: a server that allows 100 streams per
connection and works 5ms per RPC. The benchmark BenchmarkE2E runs the same
code.`

// benchResult is one mode's line of output; its JSON form is --json's.
type benchResult struct {
	Mode        string  `json:"mode"`
	Requests    int64   `json:"requests"`
	RPS         float64 `json:"rps"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Connections int64   `json:"connections"`
}

// benchSettings are the flags, echoed in --json output.
type benchSettings struct {
	Modes      []string `json:"modes"`
	Callers    int      `json:"callers"`
	Conns      int      `json:"conns"`
	Shares     int      `json:"shares"` // 0 with --shares auto
	MaxStreams uint     `json:"max_streams"`
	DelayMs    float64  `json:"delay_ms"`
	Payload    int      `json:"payload_bytes"`
	DurationS  float64  `json:"duration_s"`
	Warmup     int64    `json:"warmup_requests"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench", "[flags]", benchAbout)
	modes := fs.String("mode", "single,roundrobin,exclusive,shared,shared-auto", "comma-separated `modes` to run, in order")
	callers := fs.Int("callers", 1000, "concurrent callers, each sending its next RPC when the last answers")
	conns := fs.Int("conns", e2e.DefaultConns, "connections of roundrobin; most connections of exclusive and shared")
	sharesFlag := fs.String("shares", "0", "RPCs per connection at once in shared mode (0: --max-streams, or 100 without a cap; auto: learn each server's cap, as shared-auto)")
	maxStreams := fs.Uint("max-streams", 100, "the server's MAX_CONCURRENT_STREAMS per connection (0: no cap)")
	delay := fs.Duration("delay", 5*time.Millisecond, "how long the server works on each RPC")
	payload := fs.Int("payload", 4, "request payload `bytes`, echoed back")
	duration := fs.Duration("duration", 3*time.Second, "how long each mode is measured, at most "+maxBenchDuration.String())
	warmup := fs.Int64("warmup", 2000, "RPCs sent before each measurement, to make connections and grow HTTP/2 windows")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}

	auto := *sharesFlag == "auto"
	shares := 0
	if !auto {
		n, err := strconv.Atoi(*sharesFlag)
		if err != nil {
			return usageError(fs, stderr, "--shares is %q, want a number or auto", *sharesFlag)
		}
		shares = n
	}
	connsGiven := false
	fs.Visit(func(f *flag.Flag) { connsGiven = connsGiven || f.Name == "conns" })

	var kinds []e2e.Kind
	for name := range strings.SplitSeq(*modes, ",") {
		k, err := e2e.ParseKind(strings.TrimSpace(name))
		if err != nil {
			return usageError(fs, stderr, "--mode: %v", err)
		}
		if k == e2e.Shared && auto {
			k = e2e.SharedAuto
		}
		if !slices.Contains(kinds, k) { // --shares auto makes shared one with shared-auto
			kinds = append(kinds, k)
		}
	}
	switch {
	case *callers < 1:
		return usageError(fs, stderr, "--callers is %d, want 1 or more", *callers)
	case *conns < 1:
		return usageError(fs, stderr, "--conns is %d, want 1 or more", *conns)
	case shares < 0:
		return usageError(fs, stderr, "--shares is %d, want 0 (--max-streams), more, or auto", shares)
	case *maxStreams > 1<<31-1:
		return usageError(fs, stderr, "--max-streams is %d, want at most %d", *maxStreams, 1<<31-1)
	case *delay < 0:
		return usageError(fs, stderr, "--delay is %v, want 0 or more", *delay)
	case *payload < 0 || *payload > maxPayload:
		return usageError(fs, stderr, "--payload is %d, want 0 to %d bytes", *payload, maxPayload)
	case *duration <= 0 || *duration > maxBenchDuration:
		return usageError(fs, stderr, "--duration is %v, want more than 0 and at most %v", *duration, maxBenchDuration)
	case *warmup < 0:
		return usageError(fs, stderr, "--warmup is %d, want 0 or more", *warmup)
	}
	if shares == 0 && !auto {
		shares = e2e.DefaultShares
		if *maxStreams > 0 {
			shares = int(*maxStreams)
		}
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	settings := benchSettings{
		Callers: *callers, Conns: *conns, Shares: shares, MaxStreams: *maxStreams,
		DelayMs: ms(*delay), Payload: *payload, DurationS: duration.Seconds(), Warmup: *warmup,
	}
	var results []benchResult
	failed := 0
	for _, k := range kinds {
		settings.Modes = append(settings.Modes, k.String())
		log.Info("measuring", "mode", k.String(), "duration", *duration, "callers", *callers)
		n := *conns
		if k == e2e.SharedAuto && !connsGiven {
			n = *callers // as many as the server's cap needs
		}
		rep, err := e2e.Measure(ctx, e2e.Bench{
			Server: backend.Options{MaxConcurrentStreams: uint32(*maxStreams), Delay: *delay},
			Mode:   e2e.Mode{Kind: k, Conns: n, Shares: shares, Payload: make([]byte, *payload)},
			Warmup: *warmup,
			Load:   e2e.Load{Callers: *callers, Duration: *duration},
		})
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "kpool bench: interrupted during mode %s (%v)\n", k, context.Cause(ctx))
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "kpool bench: mode %s: %v\n", k, err)
			return 1
		}
		r := rep.Result
		res := benchResult{
			Mode: rep.Mode, Requests: r.Requests, RPS: r.RPS(),
			P50ms: ms(r.Latency.Quantile(0.5)), P99ms: ms(r.Latency.Quantile(0.99)),
			Errors: r.Errors, Connections: rep.Conns,
		}
		if r.FirstErr != nil {
			res.FirstError = r.FirstErr.Error()
			failed++
		}
		results = append(results, res)
	}

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Settings benchSettings `json:"settings"`
			Results  []benchResult `json:"results"`
		}{settings, results})
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "mode\trequests\trps\tp50\tp99\terrors\tconnections\t")
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2fms\t%.2fms\t%d\t%d\t\n", r.Mode, r.Requests, r.RPS, r.P50ms, r.P99ms, r.Errors, r.Connections)
		}
		tw.Flush()
	}
	if failed > 0 {
		for _, r := range results {
			if r.FirstError != "" {
				fmt.Fprintf(stderr, "kpool bench: mode %s: %d RPCs failed, the first with: %s\n", r.Mode, r.Errors, r.FirstError)
			}
		}
		return 1
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
