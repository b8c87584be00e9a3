package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/metrics"
)

var examplePath = filepath.Join("..", "..", "examples", "kpool.yaml")

// exampleAddrs are the static addresses examples/kpool.yaml names: what
// kpool backends serves for it.
var exampleAddrs = []string{"127.0.0.1:50051", "127.0.0.1:50052"}

// kpool backends serves exactly the addresses the example file names.
func TestBackendsServeTheExamplesAddresses(t *testing.T) {
	f, err := config.Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := backendAddrs(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.listen)
	}
	if !slices.Equal(got, exampleAddrs) {
		t.Errorf("backends for %s listen on %v, want %v", examplePath, got, exampleAddrs)
	}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// exampleCopy writes examples/kpool.yaml with its backend addresses
// replaced by free ones, so that the test does not depend on the fixed
// ports (another run may hold them), and returns its path and the
// addresses.
func exampleCopy(t *testing.T) (string, []string) {
	t.Helper()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	var addrs []string
	for _, a := range exampleAddrs {
		if !strings.Contains(text, a) {
			t.Fatalf("%s does not name %s", examplePath, a)
		}
		free := freeAddr(t)
		text = strings.ReplaceAll(text, a, free)
		addrs = append(addrs, free)
	}
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, addrs
}

// The example file works out of the box: kpool backends serves its
// addresses, kpool start on it reports every endpoint healthy and warm
// (through kpool health and kpool stats, given the URL start serves), and
// both stop cleanly on a signal.
func TestBinaryBackendsThenStartOnTheExample(t *testing.T) {
	path, addrs := exampleCopy(t)
	backends := startBinary(t, "backends", "--config", path)
	backends.waitOutput("ready:")
	for _, a := range addrs {
		if !strings.Contains(backends.stdout.String(), a) {
			t.Errorf("kpool backends does not list %s:\n%s", a, &backends.stdout)
		}
	}

	start := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0")
	base := startedHTTP(t, start.stderr.String)
	// The example keeps 2 connections warm per endpoint.
	grpctest.WaitFor(t, waitTimeout, "both endpoints are warm", func() bool {
		keys := statsKeys(t, base)
		return keys[addrs[0]] >= 2 && keys[addrs[1]] >= 2
	})
	code, body := get(t, base+"/health")
	var rep metrics.HealthReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != http.StatusOK || rep.Status != "ok" {
		t.Errorf("GET /health = %d %s, want 200 ok", code, body)
	}
	if len(rep.Services) != 1 || rep.Services[0].Endpoints != 2 || rep.Services[0].Usable != 2 {
		t.Errorf("/health services = %+v, want backend with 2 of 2 endpoints usable", rep.Services)
	}

	code, out, errOut := runBinary(t, "health", "--addr", base+"/")
	if code != 0 || !strings.Contains(out, "status: ok") || !strings.Contains(out, "service backend: 2 of 2 endpoints usable") {
		t.Errorf("kpool health --addr %s/ = %d, stdout %q, stderr %q; want 0, ok, 2 of 2 usable", base, code, out, errOut)
	}
	code, out, errOut = runBinary(t, "stats", "--addr", base)
	if code != 0 || !strings.Contains(out, addrs[0]) || !strings.Contains(out, addrs[1]) {
		t.Errorf("kpool stats --addr %s = %d, stdout %q, stderr %q; want 0 and both endpoints", base, code, out, errOut)
	}

	start.stop(syscall.SIGINT)
	if l := start.stderr.String(); !strings.Contains(l, `msg="pools closed"`) {
		t.Errorf("kpool start's logs do not say the pools closed:\n%s", l)
	}
	backends.stop(syscall.SIGTERM)
	if l := backends.stderr.String(); !strings.Contains(l, `msg="backends stopped"`) {
		t.Errorf("kpool backends' logs do not say they stopped:\n%s", l)
	}
}

// kpool backends refuses, naming the problem, what it cannot serve.
func TestBinaryBackendsRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name, services string, grpc string) string {
		path := filepath.Join(dir, name)
		data := fmt.Sprintf("grpc:\n%s\nservices:\n%s", grpc, services)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	static := func(addrs string) string {
		return "  - name: backend\n    discovery:\n      static:\n        addresses: [" + addrs + "]\n"
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		path string
		want string // a part of stderr
	}{
		{"not loopback", write("remote.yaml", static("10.1.2.3:50051"), "  insecure: true"),
			"address 10.1.2.3:50051 is not on this machine's loopback"},
		{"TLS", write("tls.yaml", static(freeAddr(t)), "  tls: {}"),
			"kpool backends serves plaintext: use grpc.insecure: true"},
		{"consul only", write("consul.yaml", "  - name: users\n    discovery:\n      consul:\n        address: 127.0.0.1:8500\n", "  insecure: true"),
			"the file lists no static addresses to serve"},
		{"port taken", write("busy.yaml", static(freeAddr(t)+", "+busy.Addr().String()), "  insecure: true"),
			"(is another kpool backends, or something else, serving " + busy.Addr().String() + "?)"},
		{"missing file", filepath.Join(dir, "none.yaml"), "none.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runBinary(t, "backends", "--config", tt.path)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Errorf("kpool backends = %d, stdout %q, stderr %q; want 1, nothing, and %q", code, stdout, stderr, tt.want)
			}
		})
	}
}
