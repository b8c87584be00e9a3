package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where ListenAndServe listens when given no address: the
// loopback interface only, so that pool internals are not exposed to the
// network by default.
const DefaultAddr = "127.0.0.1:9090"

// DefaultStatsLimit is how many keys per pool /stats lists when the request
// has no limit parameter.
const DefaultStatsLimit = 1000

// Handler returns an http.Handler that serves:
//
//   - /metrics: the Prometheus exposition of g (the registry m's collectors
//     are on).
//   - /health: a HealthReport in JSON, with status 200 when every pool is
//     open and every service has at least one usable endpoint, 503 with the
//     reasons otherwise. The services are those the sources report: for a
//     discovery.Router, the services it watches now (configured with
//     Router.Watch, or used within its IdleTimeout), each marked "kept" or
//     "used"; one whose every endpoint refuses connections has none
//     usable (see discovery.Router.Services). ?service=NAME judges that
//     service only, not the pools (404 if it is unknown): a readiness
//     probe per service.
//   - /stats: a StatsReport in JSON: per pool and per key active, idle,
//     waiters, shares and counters, per key the share cap its connections
//     learned (KeyReport.ShareCap), and the services. ?key=K reports only
//     that key (404 if no pool holds it), ?service=NAME only that service
//     (404 if unknown), ?limit=N at most N keys per pool (default
//     DefaultStatsLimit).
//
// Errors, an unknown path (404) and a method other than GET or HEAD (405)
// included, are JSON objects {"error": "..."} naming what was wrong.
func (m *Metrics) Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", getOnly(promhttp.HandlerFor(g, promhttp.HandlerOpts{})))
	mux.Handle("/health", getOnly(http.HandlerFunc(m.serveHealth)))
	mux.Handle("/stats", getOnly(http.HandlerFunc(m.serveStats)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "unknown path %q: want /metrics, /health or /stats", r.URL.Path)
	})
	return mux
}

// getOnly refuses methods other than GET and HEAD with a JSON 405.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s: want GET", r.Method, r.URL.Path)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (m *Metrics) serveHealth(w http.ResponseWriter, r *http.Request) {
	pools, srcs := m.snapshot()
	name := r.URL.Query().Get("service")
	services, ok := filterServices(serviceStats(srcs), name)
	if !ok {
		writeError(w, http.StatusNotFound, "unknown service %q", name)
		return
	}
	h := healthReport(pools, services, name == "")
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (m *Metrics) serveStats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := DefaultStatsLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit %q is not a count (want 0 or more)", s)
			return
		}
		limit = n
	}
	pools, srcs := m.snapshot()
	services, ok := filterServices(serviceStats(srcs), q.Get("service"))
	if !ok {
		writeError(w, http.StatusNotFound, "unknown service %q", q.Get("service"))
		return
	}
	key := q.Get("key")
	rep := StatsReport{Pools: []PoolReport{}}
	for _, v := range pools {
		if pr, ok := poolReport(v, key, limit); ok {
			rep.Pools = append(rep.Pools, pr)
		}
	}
	if key != "" && len(rep.Pools) == 0 {
		writeError(w, http.StatusNotFound, "unknown key %q: no pool holds it", key)
		return
	}
	for _, s := range services {
		rep.Services = append(rep.Services, serviceReport(s))
	}
	writeJSON(w, http.StatusOK, rep)
}

// filterServices keeps the service named name, or all when name is empty;
// ok is false when name is set and unknown.
func filterServices(all []ServiceStats, name string) (_ []ServiceStats, ok bool) {
	if name == "" {
		return all, true
	}
	for _, s := range all {
		if s.Service == name {
			return []ServiceStats{s}, true
		}
	}
	return nil, false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing to do
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{fmt.Sprintf(format, args...)})
}

// ListenAndServe serves h on addr (DefaultAddr when empty) until ctx ends,
// then shuts the server down, giving requests in flight up to 5 seconds
// before it cuts them. It
// returns nil after a shutdown caused by ctx, or the error that stopped the
// server (a port in use, say). Use Listen and Serve to learn the address of
// ":0" before serving.
func ListenAndServe(ctx context.Context, addr string, h http.Handler) error {
	lis, err := Listen(addr)
	if err != nil {
		return err
	}
	return Serve(ctx, lis, h)
}

// Listen listens on addr (DefaultAddr when empty) over TCP.
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return lis, nil
}

// Serve serves h on lis until ctx ends, as ListenAndServe. It closes lis.
func Serve(ctx context.Context, lis net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Requests still running past the grace period: cut them, so that
		// nothing of the server outlives Serve.
		err = errors.Join(err, srv.Close())
	}
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
