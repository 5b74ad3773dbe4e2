package mediarelay

import (
	"context"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// HTTPHandler serves the relay's REST API (grpc-gateway, in-process; the
// WatchSessions stream is gRPC-only) to the callers Config.Admin allows,
// and to everyone /metrics, /healthz (the process runs) and /readyz (the
// relay serves, with a registry is registered, and is not draining: a
// draining relay turns unready first, so that an orchestrator stops
// counting on it while its sessions end).
func (r *Relay) HTTPHandler() http.Handler {
	gw := runtime.NewServeMux()
	// RegisterRelayServiceHandlerServer only fails for nil arguments.
	_ = relayv1.RegisterRelayServiceHandlerServer(context.Background(), gw, r.GRPCService())
	mux := http.NewServeMux()
	mux.Handle("/v1/", r.cfg.Admin.Middleware(gw))
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		ready := r.socks != nil && !r.closed && (r.cfg.Registry == nil || r.reg != nil)
		draining := r.draining
		r.mu.Unlock()
		switch {
		case !ready:
			http.Error(w, "not ready: not serving or not registered", http.StatusServiceUnavailable)
			return
		case draining:
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
