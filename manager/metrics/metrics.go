// Package metrics is the HTTP side of every Sluice process's telemetry: a
// Prometheus registry with the Go runtime and process collectors, and one
// server for
//
//	/metrics   Prometheus exposition
//	/healthz   liveness: 200 while the process works (Kubernetes livenessProbe)
//	/readyz    readiness: 200 when the process can do its job (readinessProbe)
//
// and, when asked for (Profiling), Go's profiler on /debug/pprof/.
//
// The manager and the worker both use it, each registering its own
// collectors (the worker its engine counters) on its own registry, so that
// several components in one process (local mode, tests) do not collide.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Checks decide the answers of /healthz and /readyz. A nil check passes.
type Checks struct {
	Live  func() error
	Ready func() error
}

// Handler returns a mux serving /metrics from g and the health endpoints;
// callers may add routes of their own to it.
func Handler(g prometheus.Gatherer, checks Checks) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/healthz", probe(checks.Live))
	mux.HandleFunc("/readyz", probe(checks.Ready))
	return mux
}

// Profiling adds Go's profiler to mux under /debug/pprof/ (CPU, heap,
// goroutines, execution trace). Not the command line: it may hold an auth
// token. Anyone who reaches the port can load the process with profiles,
// so it is off unless an operator turns it on.
func Profiling(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

func probe(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if check != nil {
			if err := check(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	}
}

// Server is an HTTP server for a Handler.
type Server struct {
	srv  *http.Server
	lis  net.Listener
	done chan error
}

// Listen binds addr (":0" picks a port) and serves h in the background.
func Listen(addr string, h http.Handler) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	s := &Server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, lis: lis, done: make(chan error, 1)}
	go func() {
		err := s.srv.Serve(lis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Addr is the address listened on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return <-s.done
}
