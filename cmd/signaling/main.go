// Command signaling runs one rtcedge signaling instance: WHIP/WHEP over
// HTTP(S), the origin.v1.OriginRegistry gRPC API (with reflection and
// health) and its REST gateway, /metrics, /healthz and /readyz.
//
// Every flag has an environment fallback named RTCEDGE_<FLAG> (dashes become
// underscores): -http-listen is RTCEDGE_HTTP_LISTEN. `signaling healthcheck
// URL` probes an HTTP endpoint (for container health checks).
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/signaling"
	"github.com/rtcedge/rtcedge/web"
)

var version = "dev"

func main() {
	cli.Main("signaling", func(ctx context.Context, args []string, getenv func(string) string) error {
		return run(ctx, args, getenv, nil)
	})
}

type config struct {
	httpListen        string
	tlsCert, tlsKey   string
	grpcListen        string
	grpcCert, grpcKey string
	relayCA           string
	relayCert         string
	relayKey          string
	grpcClientCA      string
	etcd              cli.EtcdFlags
	zone              string
	iceServers        cli.StringList
	tokens            cli.StringList
	hmacKey           string
	regToken          string
	statusToken       string
	insecureReg       bool
	relayToken        string
	forwardAuth       bool
	allowOrigin       string
	bodyLimit         int64
	originTimeout     time.Duration
	relayTimeout      time.Duration
	noPage            bool
	rateLimit         float64
	rateBurst         int
	reapInterval      time.Duration
	orphanGrace       time.Duration
	setupMargin       time.Duration
	pinIdle           time.Duration
	publicBaseURL     string
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	shutdownTimeout   time.Duration
	readyFile         string
	logLevel          slog.Level
	originsFile       string
	probeInterval     time.Duration
	probeTimeout      time.Duration
	probeFailures     int
	probeLeaderTTL    time.Duration
	probeMaxStreams   int
	probeMaxBackoff   time.Duration
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("signaling", flag.ContinueOnError)
	fs.StringVar(&c.httpListen, "http-listen", ":8080", "HTTP address for WHIP/WHEP, the REST gateway and metrics")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "certificate file: serve HTTPS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "key file for -tls-cert")
	fs.StringVar(&c.grpcListen, "grpc-listen", ":9092", "gRPC address for origin.v1.OriginRegistry")
	fs.StringVar(&c.grpcCert, "grpc-tls-cert", "", "certificate file for the gRPC API (enables TLS)")
	fs.StringVar(&c.grpcKey, "grpc-tls-key", "", "key file for -grpc-tls-cert")
	fs.StringVar(&c.relayCA, "relay-ca", "", "CA file verifying the relays' gRPC certificates (enables TLS toward relays)")
	fs.StringVar(&c.relayCert, "relay-cert", "", "client certificate presented to relays (mTLS; with -relay-ca)")
	fs.StringVar(&c.relayKey, "relay-key", "", "key file for -relay-cert")
	fs.StringVar(&c.grpcClientCA, "grpc-client-ca", "", "CA file: gRPC clients (origins) must present a certificate it signed (mTLS)")
	c.etcd.Register(fs)
	fs.StringVar(&c.zone, "zone", "", "zone label: origins and relays of this zone are preferred")
	fs.Var(&c.iceServers, "ice-server", "ICE server advertised in Link headers: stun:host:port or turn:user:pass@host:port; repeatable")
	fs.Var(&c.tokens, "auth-token", "static WHIP/WHEP bearer token; repeatable; none and no -auth-hmac-key disables auth")
	fs.StringVar(&c.hmacKey, "auth-hmac-key", "", "hex HMAC-SHA256 key for signed, stream-scoped bearer tokens")
	fs.StringVar(&c.statusToken, "status-token", "", "bearer token operators present to read the status API (GET /v1/streams, /v1/status, gRPC status.v1.StatusService) that the /status page reads; the registration token works too; unset: only from this host (or mTLS clients with -grpc-client-ca)")
	fs.StringVar(&c.regToken, "registration-token", "", "bearer token origins must present to register (gRPC, REST, SRS heartbeat); unset: registration only from loopback (or mTLS clients with -grpc-client-ca)")
	fs.BoolVar(&c.insecureReg, "insecure-open-registration", false, "INSECURE: without -registration-token, accept origin registration from anyone who can reach signaling (who could then capture streams)")
	fs.StringVar(&c.relayToken, "relay-token", "", "bearer token sent on every call to relays: the relays' -admin-token")
	fs.BoolVar(&c.forwardAuth, "forward-authorization", false, "pass the client's Authorization header to the origin")
	fs.StringVar(&c.allowOrigin, "cors-allow-origin", "*", "Access-Control-Allow-Origin")
	fs.Int64Var(&c.bodyLimit, "body-limit", signaling.DefaultBodyLimit, "maximum request body bytes")
	fs.DurationVar(&c.originTimeout, "origin-timeout", signaling.DefaultOriginTimeout, "timeout of each origin HTTP call")
	fs.DurationVar(&c.relayTimeout, "relay-timeout", signaling.DefaultRelayCallTimeout, "timeout of each relay gRPC call")
	fs.StringVar(&c.publicBaseURL, "public-base-url", "", "external base URL (https://edge.example.com) for absolute session Locations; empty = relative")
	fs.DurationVar(&c.readTimeout, "http-read-timeout", 15*time.Second, "HTTP server read timeout (a request's headers get at most 5s of it)")
	fs.DurationVar(&c.writeTimeout, "http-write-timeout", 30*time.Second, "HTTP server write timeout; must exceed -origin-timeout plus -relay-timeout")
	fs.DurationVar(&c.idleTimeout, "http-idle-timeout", 2*time.Minute, "HTTP keep-alive idle timeout")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "grace period for in-flight requests at shutdown")
	fs.BoolVar(&c.noPage, "no-demo-page", false, "do not serve the demo page at /")
	fs.Float64Var(&c.rateLimit, "rate-limit", 20, "POST/PATCH/DELETE requests per second per client IP; 0 disables")
	fs.IntVar(&c.rateBurst, "rate-burst", 40, "burst allowed above -rate-limit")
	fs.DurationVar(&c.reapInterval, "reap-interval", signaling.DefaultReapInterval, "how often to look for sessions orphaned on dead relays")
	fs.DurationVar(&c.orphanGrace, "orphan-grace", signaling.DefaultOrphanGrace, "how long a session may stay on a dead relay (for an ICE restart to move it) before it is removed")
	fs.DurationVar(&c.pinIdle, "pin-idle", signaling.DefaultPinIdle, "a stream's origin pin older than this is released by the reaper once the stream has no session and no setup")
	fs.DurationVar(&c.setupMargin, "setup-margin", signaling.DefaultSetupMargin, "added to -origin-timeout plus -relay-timeout to make a setup's deadline; a setup left pending past it (its instance died) is undone by the reaper")
	fs.StringVar(&c.originsFile, "origins-file", "", "YAML or JSON file of configured origins (id, kind, url, api_url, whip_url, whep_url, capacity, zone, token, media_addresses); reloaded on change and SIGHUP")
	fs.DurationVar(&c.probeInterval, "probe-interval", signaling.DefaultProbeInterval, "time between two probes of an origin (by the one signaling instance elected to probe)")
	fs.DurationVar(&c.probeTimeout, "probe-timeout", signaling.DefaultProbeTimeout, "timeout of one probe of one origin, every call included")
	fs.IntVar(&c.probeFailures, "probe-failures", signaling.DefaultProbeFailures, "failed probes in a row after which a configured origin is deregistered (new sessions avoid it, its idle streams move)")
	fs.DurationVar(&c.probeLeaderTTL, "probe-leader-ttl", signaling.DefaultProbeLeaderTTL, "lease of the prober election: a dead prober is replaced within it")
	fs.IntVar(&c.probeMaxStreams, "probe-max-streams", signaling.DefaultProbeMaxStreams, "most streams read from one origin's stream list")
	fs.DurationVar(&c.probeMaxBackoff, "probe-max-backoff", signaling.DefaultProbeMaxBackoff, "longest time between probes of an origin that is down")
	cli.RegisterReadyFile(fs, &c.readyFile)
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	switch {
	case c.probeInterval < 100*time.Millisecond || c.probeTimeout < 100*time.Millisecond || c.probeMaxBackoff < c.probeInterval:
		return c, errors.New("-probe-interval and -probe-timeout must be at least 100ms, -probe-max-backoff at least -probe-interval")
	case c.probeFailures < 1 || c.probeFailures > 100:
		return c, fmt.Errorf("-probe-failures %d: want 1 to 100", c.probeFailures)
	case c.probeLeaderTTL < time.Second || c.probeLeaderTTL%time.Second != 0:
		return c, fmt.Errorf("-probe-leader-ttl %s: want whole seconds, at least 1s", c.probeLeaderTTL)
	case c.probeMaxStreams < 1 || c.probeMaxStreams > 10000:
		return c, fmt.Errorf("-probe-max-streams %d: want 1 to 10000", c.probeMaxStreams)
	case c.etcd.Validate() != nil:
		return c, c.etcd.Validate()
	case cli.ValidateReadyFile(c.readyFile) != nil:
		return c, cli.ValidateReadyFile(c.readyFile)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return c, errors.New("-tls-cert and -tls-key go together")
	case (c.relayCert == "") != (c.relayKey == ""), c.relayCert != "" && c.relayCA == "":
		return c, errors.New("-relay-cert and -relay-key go together, with -relay-ca")
	case c.grpcClientCA != "" && c.grpcCert == "":
		return c, errors.New("-grpc-client-ca needs -grpc-tls-cert")
	case (c.grpcCert == "") != (c.grpcKey == ""):
		return c, errors.New("-grpc-tls-cert and -grpc-tls-key go together")
	case c.reapInterval < time.Second || c.orphanGrace < time.Second:
		return c, errors.New("-reap-interval and -orphan-grace must be at least 1s")
	case c.rateLimit < 0 || c.rateBurst < 1:
		return c, errors.New("-rate-limit must be >= 0 and -rate-burst >= 1")
	case c.bodyLimit < 1024 || c.bodyLimit > 16<<20:
		return c, fmt.Errorf("-body-limit %d: want 1 KiB to 16 MiB", c.bodyLimit)
	case c.originTimeout <= 0 || c.relayTimeout <= 0 || c.readTimeout <= 0 || c.idleTimeout <= 0 || c.shutdownTimeout <= 0 || c.setupMargin <= 0 || c.pinIdle <= 0:
		return c, errors.New("timeouts must be positive")
	case c.writeTimeout <= c.originTimeout+c.relayTimeout:
		return c, fmt.Errorf("-http-write-timeout %s must exceed -origin-timeout plus -relay-timeout (%s)", c.writeTimeout, c.originTimeout+c.relayTimeout)
	}
	if c.hmacKey != "" {
		if k, err := hex.DecodeString(c.hmacKey); err != nil || len(k) < 16 {
			return c, errors.New("-auth-hmac-key: want at least 16 bytes, hex-encoded")
		}
	}
	return c, nil
}

// iceServers parses -ice-server values; credentials go before "@".
func iceServers(vals []string) []signaling.ICEServer {
	var out []signaling.ICEServer
	for _, v := range vals {
		s := signaling.ICEServer{URL: v}
		if scheme, rest, ok := strings.Cut(v, ":"); ok {
			if cred, host, ok := strings.Cut(rest, "@"); ok {
				user, pass, _ := strings.Cut(cred, ":")
				s = signaling.ICEServer{URL: scheme + ":" + host, Username: user, Credential: pass}
			}
		}
		out = append(out, s)
	}
	return out
}

// run starts signaling and blocks until ctx ends. ready, when not nil,
// receives the HTTP and gRPC addresses once both listen.
func run(ctx context.Context, args []string, getenv func(string) string, ready chan<- [2]string) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	reg, err := cfg.etcd.Client(log)
	if err != nil {
		return err
	}
	defer reg.Close()
	auth := signaling.Auth{Tokens: cfg.tokens}
	if cfg.hmacKey != "" {
		auth.HMACKey, _ = hex.DecodeString(cfg.hmacKey)
	}
	var page http.Handler
	if !cfg.noPage {
		page = web.Handler()
	}
	sig, err := signaling.New(signaling.Config{
		Page: page, RateLimit: cfg.rateLimit, RateBurst: cfg.rateBurst, ReapInterval: cfg.reapInterval, OrphanGrace: cfg.orphanGrace,
		Registry: reg, Zone: cfg.zone, ICEServers: iceServers(cfg.iceServers), Auth: auth,
		RegistrationToken: cfg.regToken, InsecureOpenRegistration: cfg.insecureReg, RelayToken: cfg.relayToken,
		ForwardAuthorization: cfg.forwardAuth, AllowOrigin: cfg.allowOrigin, StatusToken: cfg.statusToken,
		BodyLimit: cfg.bodyLimit, OriginTimeout: cfg.originTimeout, RelayCallTimeout: cfg.relayTimeout,
		Logger: log, Version: version, PublicBaseURL: cfg.publicBaseURL, SetupMargin: cfg.setupMargin, PinIdle: cfg.pinIdle,
	})
	if err != nil {
		return err
	}
	defer sig.Close()
	// The origins file is checked before anything listens: a bad one stops
	// the start, naming its line and field.
	prober, err := sig.NewProber(signaling.ProbeConfig{File: cfg.originsFile, Interval: cfg.probeInterval, Timeout: cfg.probeTimeout,
		Failures: cfg.probeFailures, LeaderTTL: cfg.probeLeaderTTL, MaxStreams: cfg.probeMaxStreams, MaxBackoff: cfg.probeMaxBackoff})
	if err != nil {
		return err
	}
	if cfg.originsFile != "" {
		log.Info("signaling: origins file loaded", "file", cfg.originsFile, "origins", len(prober.Origins()))
	}
	if cfg.relayCA != "" {
		creds, err := cli.ClientTLS(cfg.relayCA, cfg.relayCert, cfg.relayKey)
		if err != nil {
			return fmt.Errorf("-relay-ca: %w", err)
		}
		sig.SetRelayCredentials(creds)
	}
	httpLis, err := net.Listen("tcp", cfg.httpListen)
	if err != nil {
		return err
	}
	grpcLis, err := net.Listen("tcp", cfg.grpcListen)
	if err != nil {
		return err
	}
	var opts []grpc.ServerOption
	if cfg.grpcCert != "" {
		creds, err := cli.ServerTLS(cfg.grpcCert, cfg.grpcKey, cfg.grpcClientCA)
		if err != nil {
			return fmt.Errorf("gRPC TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	sig.RegisterGRPC(gs)
	hs := &http.Server{Handler: sig.Handler(), ReadHeaderTimeout: min(5*time.Second, cfg.readTimeout), ReadTimeout: cfg.readTimeout,
		WriteTimeout: cfg.writeTimeout, IdleTimeout: cfg.idleTimeout, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	log.Info("signaling starting", "version", version, "http", httpLis.Addr().String(), "grpc", grpcLis.Addr().String(),
		"tls", cfg.tlsCert != "", "auth", len(cfg.tokens) > 0 || cfg.hmacKey != "", "zone", cfg.zone)
	// Connections queue in the listeners' backlogs until the servers below
	// accept them, so the file may announce the addresses now.
	if err := cli.WriteReadyFile(cfg.readyFile, cli.Ready{HTTP: httpLis.Addr().String(), GRPC: grpcLis.Addr().String()}); err != nil {
		_ = httpLis.Close()
		_ = grpcLis.Close()
		return err
	}
	defer func() { _ = cli.RemoveReadyFile(cfg.readyFile) }()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if cfg.tlsCert != "" {
			err = hs.ServeTLS(httpLis, cfg.tlsCert, cfg.tlsKey)
		} else {
			err = hs.Serve(httpLis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return cli.ServeGRPC(gs, grpcLis) })
	g.Go(func() error { sig.RunReaper(gctx); return nil })
	g.Go(func() error { return prober.Run(gctx) })
	g.Go(func() error {
		// SIGHUP reloads the origins file (a bad one leaves the
		// configuration in force).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				log.Info("signaling: SIGHUP: reloading the origins file", "file", cfg.originsFile)
				_ = prober.Reload()
			}
		}
	})
	if ready != nil {
		ready <- [2]string{httpLis.Addr().String(), grpcLis.Addr().String()}
	}
	<-gctx.Done()
	log.Info("signaling stopping")
	shutdown, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	_ = hs.Shutdown(shutdown)
	cli.StopGRPC(shutdown, gs)
	return g.Wait()
}
