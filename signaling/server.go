package signaling

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/rtcedge/rtcedge/internal/bearer"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	statusv1 "github.com/rtcedge/rtcedge/proto/status/v1"
	"github.com/rtcedge/rtcedge/signaling/internal/originadapter"
)

// Server is a signaling instance. Create it with New; serve Handler over
// HTTP and RegisterGRPC on a gRPC server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	origins *originadapter.Client
	handler http.Handler
	health  *originHealth // failover and probe metrics (health.go)

	// RelayCredentials are the transport credentials for relay gRPC calls;
	// nil is plaintext.
	relayCreds credentials.TransportCredentials

	limiter *limiter // nil when unlimited

	instance string // random id naming this instance's reaper claims

	missing missingRelays  // the reaper's view of relays gone from the registry
	unheld  unheldSessions // the reaper's view of records their live relay does not hold

	mu     sync.Mutex // guards the following
	relays map[string]*grpc.ClientConn
	closed bool
}

// New validates cfg and builds a server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, metrics: newMetrics(),
		origins:  &originadapter.Client{HTTP: cfg.HTTPClient},
		relays:   map[string]*grpc.ClientConn{},
		instance: newID(),
	}
	s.health = newOriginHealth(s.metrics.registry)
	s.limiter = newLimiter(cfg.RateLimit, cfg.RateBurst)
	s.handler = withRequestID(s.limit(s.routes()))
	if cfg.RegistrationToken == "" && cfg.InsecureOpenRegistration {
		s.log.Warn("signaling: origin registration is open to every peer (InsecureOpenRegistration, no registration token): " +
			"anyone who can reach this instance can register an origin and capture streams; set a registration token outside private networks")
	}
	return s, nil
}

// SetRelayCredentials sets the TLS credentials used toward relays.
func (s *Server) SetRelayCredentials(c credentials.TransportCredentials) { s.relayCreds = c }

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler { return s.handler }

// RegisterGRPC registers origin.v1.OriginRegistry, status.v1.StatusService
// (the status policy, see status.go), grpc.health.v1 and
// server reflection on g. Every OriginRegistry call is subject to the
// registration policy (see the package doc); health and reflection are
// open.
func (s *Server) RegisterGRPC(g *grpc.Server) {
	originv1.RegisterOriginRegistryServer(g, &registryService{s: s})
	statusv1.RegisterStatusServiceServer(g, &statusService{s: s})
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
}

// Close closes the relay connections.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for addr, c := range s.relays {
		_ = c.Close()
		delete(s.relays, addr)
	}
	s.cfg.HTTPClient.CloseIdleConnections()
}

// relayClient returns a (pooled) client for the relay at addr.
func (s *Server) relayClient(addr string) (relayv1.RelayServiceClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("signaling: closed")
	}
	if c, ok := s.relays[addr]; ok {
		return relayv1.NewRelayServiceClient(c), nil
	}
	creds := s.relayCreds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
			invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, callOpts...)
			if status.Code(err) == codes.Unavailable && cc.GetState() == connectivity.TransientFailure {
				s.dropRelayClient(addr, cc)
			}
			return err
		})}
	if s.cfg.RelayToken != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer.Token(s.cfg.RelayToken)))
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("signaling: relay %s: %w", addr, err)
	}
	s.relays[addr] = c
	return relayv1.NewRelayServiceClient(c), nil
}

// dropRelayClient closes the pooled client of a relay whose connection
// failed, so that the next call dials afresh. A channel in transient failure
// waits out its reconnect backoff (up to 2 minutes) and its name resolver's
// (a relay's container name does not resolve while it is down) before it
// tries again: without this, a relay that came back after a minute would
// get every setup signaling picks it for refused with 503 for as long.
func (s *Server) dropRelayClient(addr string, c *grpc.ClientConn) {
	s.mu.Lock()
	if s.relays[addr] != c {
		s.mu.Unlock()
		return
	}
	delete(s.relays, addr)
	s.mu.Unlock()
	_ = c.Close()
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	whip := s.instrument("whip", s.endpoint(DirPublish, streamFromPath("/whip/")))
	whep := s.instrument("whep", s.endpoint(DirPlay, streamFromPath("/whep/")))
	mux.Handle("/whip/", whip)
	mux.Handle("/whep/", whep)
	mux.Handle("/rtc/v1/whip/", s.instrument("srs-whip", s.endpoint(DirPublish, streamFromQuery)))
	mux.Handle("/rtc/v1/whep/", s.instrument("srs-whep", s.endpoint(DirPlay, streamFromQuery)))
	mux.Handle("/rtc/v1/publish/", s.instrument("srs-publish", s.legacy(DirPublish)))
	mux.Handle("/rtc/v1/play/", s.instrument("srs-play", s.legacy(DirPlay)))
	mux.Handle("/sessions/{id}", s.instrument("session", s.sessionResource))
	mux.Handle("POST /api/v1/srs/register", s.instrument("srs-register", s.srsRegister))
	mux.Handle("POST /api/v1/srs/hooks", s.instrument("srs-hooks", s.srsHooks))

	gw := runtime.NewServeMux(runtime.WithIncomingHeaderMatcher(func(k string) (string, bool) {
		if strings.EqualFold(k, "Authorization") {
			return "authorization", true
		}
		return runtime.DefaultHeaderMatcher(k)
	}))
	// The REST gateway calls the service in-process, without a gRPC peer:
	// the policy is applied here, to the HTTP peer, instead.
	_ = originv1.RegisterOriginRegistryHandlerServer(context.Background(), gw, &registryService{s: s, viaHTTP: true})
	mux.Handle("/v1/", s.instrument("origin-registry", s.registrationPolicy().Middleware(gw).ServeHTTP))
	s.statusRoutes(mux) // GET /v1/streams, GET /v1/status, /status (status.go)

	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Page != nil {
		mux.Handle("/", s.cfg.Page)
	}
	return mux
}

// readyz answers 200 when etcd answers.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.cfg.Registry.ListRelays(ctx); err != nil {
		s.logger(r.Context()).Warn("signaling: not ready", "err", err)
		http.Error(w, "not ready: the registry does not answer", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// cors sets the CORS headers every response carries.
func (s *Server) cors(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", s.cfg.AllowOrigin)
	h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, "+RequestIDHeader)
}

// options answers OPTIONS: a CORS preflight, or a plain OPTIONS with
// Accept-Post and the ICE servers (RFC 9725 sections 4.2 and 4.6).
func (s *Server) options(w http.ResponseWriter, r *http.Request, methods string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", methods)
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, "+RequestIDHeader)
	h.Set("Access-Control-Max-Age", "86400")
	// Accept-Post, Accept-Patch and the ICE servers go on a plain OPTIONS
	// only, not on a CORS preflight (RFC 9725 sections 4.2 and 4.6).
	if r.Header.Get("Access-Control-Request-Method") == "" {
		if strings.Contains(methods, "POST") {
			h.Set("Accept-Post", "application/sdp")
		}
		if strings.Contains(methods, "PATCH") {
			h.Set("Accept-Patch", "application/trickle-ice-sdpfrag")
		}
		s.linkICEServers(w)
	}
	w.WriteHeader(http.StatusNoContent)
}

// linkICEServers adds a Link header per configured ICE server.
func (s *Server) linkICEServers(w http.ResponseWriter) {
	for _, is := range s.cfg.ICEServers {
		v := fmt.Sprintf(`<%s>; rel="ice-server"`, is.URL)
		if is.Username != "" {
			v += fmt.Sprintf(`; username="%s"; credential="%s"; credential-type="password"`, quote(is.Username), quote(is.Credential))
		}
		w.Header().Add("Link", v)
	}
}

func quote(s string) string { return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) }
