// Command demo-origin runs rtcedge's demo WebRTC origin: a small WHIP/WHEP
// server (pion) that forwards each publisher's RTP to the players of the
// same stream, with one UDP port for all media. It is meant for demos and
// end-to-end tests, not production; use SRS or MediaMTX for real traffic.
//
// With -publish KEY it publishes a VP8 test pattern to KEY itself, and
// GET /v3/paths/list lists the live streams in MediaMTX's shape.
//
// With -signaling-grpc set it registers itself with rtcedge's signaling
// (origin.v1.OriginRegistry) by heartbeat and deregisters on shutdown.
//
// Every flag has an environment fallback named RTCEDGE_<FLAG> (dashes become
// underscores): -media-listen is RTCEDGE_MEDIA_LISTEN. `demo-origin
// healthcheck URL` probes an HTTP endpoint (for container health checks).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/demoorigin"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
)

func main() {
	cli.Main("demo-origin", func(ctx context.Context, args []string, getenv func(string) string) error {
		return run(ctx, args, getenv, nil)
	})
}

type config struct {
	httpListen    string
	mediaListen   string
	publicIPs     cli.StringList
	advertiseURL  string
	signalingGRPC string
	originID      string
	registerToken string
	ttl           time.Duration
	patchMode     string
	publish       cli.StringList
	readyFile     string
	logLevel      slog.Level
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("demo-origin", flag.ContinueOnError)
	fs.StringVar(&c.httpListen, "http-listen", ":8888", "HTTP address of the WHIP/WHEP API (/{stream}/whip, /{stream}/whep) and /healthz")
	fs.StringVar(&c.mediaListen, "media-listen", demoorigin.DefaultMediaAddr, "UDP address for all media (one port for every session)")
	fs.Var(&c.publicIPs, "public-ip", "IP to advertise in ICE candidates instead of the -media-listen IP (1:1 NAT); repeatable or comma-separated")
	fs.StringVar(&c.advertiseURL, "advertise-url", "", "base URL signaling uses to reach the HTTP API; default http://<public-ip or listen host or 127.0.0.1>:<http port>")
	fs.StringVar(&c.signalingGRPC, "signaling-grpc", "", "host:port of rtcedge signaling's gRPC API to register with; empty: do not register")
	fs.StringVar(&c.originID, "origin-id", "demo-"+host, "origin id to register: 1-128 characters of [A-Za-z0-9._:-]")
	fs.StringVar(&c.registerToken, "register-token", "", "bearer token for the registration calls")
	fs.DurationVar(&c.ttl, "ttl", demoorigin.DefaultTTL, "registration lease TTL (5s-300s); refreshed every ttl/3")
	fs.StringVar(&c.patchMode, "patch", string(demoorigin.PatchAccept),
		"how PATCH on a session is answered: accept (trickle and ICE restart), reject (405) or close (drop the connection, as SRS does)")
	fs.Var(&c.publish, "publish", "stream key to publish a built-in VP8 test pattern to (e.g. live/test), with no WHIP client; repeatable or comma-separated")
	cli.RegisterReadyFile(fs, &c.readyFile)
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := cli.ValidateReadyFile(c.readyFile); err != nil {
		return c, err
	}
	if _, _, err := net.SplitHostPort(c.httpListen); err != nil {
		return c, fmt.Errorf("-http-listen %q: %w", c.httpListen, err)
	}
	if _, err := netip.ParseAddrPort(c.mediaListen); err != nil {
		return c, fmt.Errorf("-media-listen %q must be ip:port: %w", c.mediaListen, err)
	}
	for _, ip := range c.publicIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return c, fmt.Errorf("-public-ip %q: %w", ip, err)
		}
	}
	if c.advertiseURL != "" {
		u, err := url.Parse(c.advertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("-advertise-url %q must be an absolute http(s) URL", c.advertiseURL)
		}
	}
	if c.signalingGRPC != "" {
		if _, _, err := net.SplitHostPort(c.signalingGRPC); err != nil {
			return c, fmt.Errorf("-signaling-grpc %q: %w", c.signalingGRPC, err)
		}
		if !validOriginID(c.originID) {
			return c, fmt.Errorf("-origin-id %q: use 1-128 characters of [A-Za-z0-9._:-]", c.originID)
		}
	}
	if c.ttl < 5*time.Second || c.ttl > 300*time.Second {
		return c, fmt.Errorf("-ttl %s is outside 5s-300s", c.ttl)
	}
	if _, err := demoorigin.ParsePatchMode(c.patchMode); err != nil {
		return c, fmt.Errorf("-patch: %w", err)
	}
	seen := map[string]bool{}
	for _, key := range c.publish {
		if !demoorigin.ValidStreamKey(key) {
			return c, fmt.Errorf("-publish %q: use 1-256 bytes of [A-Za-z0-9._~-] segments separated by '/'", key)
		}
		if seen[key] {
			return c, fmt.Errorf("-publish %q is given twice", key)
		}
		seen[key] = true
	}
	return c, nil
}

func validOriginID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// advertised returns the base URL and media address to register.
func (c config) advertised(httpAddr net.Addr, media netip.AddrPort) (string, string) {
	mediaAddr := media
	host := ""
	if len(c.publicIPs) > 0 {
		ip := netip.MustParseAddr(c.publicIPs[0])
		mediaAddr = netip.AddrPortFrom(ip, media.Port())
		host = ip.String()
	}
	base := c.advertiseURL
	if base == "" {
		h, port, _ := net.SplitHostPort(httpAddr.String())
		if host == "" {
			host = h
			if ip, err := netip.ParseAddr(h); err != nil || ip.IsUnspecified() {
				host = "127.0.0.1"
			}
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	return base, mediaAddr.String()
}

// run starts the origin and blocks until ctx ends. ready, when not nil,
// receives the HTTP and media addresses once both are listening.
func run(ctx context.Context, args []string, getenv func(string) string, ready chan<- [2]string) error {
	c, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: c.logLevel}))
	origin, err := demoorigin.New(demoorigin.Config{MediaAddr: c.mediaListen, PublicIPs: c.publicIPs, Logger: log,
		PatchMode: demoorigin.PatchMode(c.patchMode)})
	if err != nil {
		return err
	}
	defer origin.Close()
	for _, key := range c.publish {
		if err := origin.PublishTestPattern(key); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", c.httpListen)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("/", origin.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	base, mediaAddr := c.advertised(lis.Addr(), origin.MediaAddr())
	log.Info("demo origin listening (demo/test use only)", "http", lis.Addr().String(), "media", origin.MediaAddr().String(),
		"whip", base+"/{stream}/whip", "whep", base+"/{stream}/whep", "media_advertised", mediaAddr)

	// Connections and packets queue in the sockets until the server and the
	// origin read them, so the file may announce the addresses now.
	if err := cli.WriteReadyFile(c.readyFile, cli.Ready{HTTP: lis.Addr().String(), UDP: []string{origin.MediaAddr().String()}, URL: base}); err != nil {
		_ = lis.Close()
		return err
	}
	defer func() { _ = cli.RemoveReadyFile(c.readyFile) }()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	if c.signalingGRPC != "" {
		cc, err := grpc.NewClient(c.signalingGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("signaling client: %w", err)
		}
		defer cc.Close()
		hb := &demoorigin.Heartbeat{
			Client: originv1.NewOriginRegistryClient(cc),
			Origin: demoorigin.NewRegistration(c.originID, base, []string{mediaAddr}, c.ttl),
			Token:  c.registerToken,
			Logger: log,
		}
		g.Go(func() error { return hb.Run(gctx) })
	}
	if ready != nil {
		ready <- [2]string{lis.Addr().String(), origin.MediaAddr().String()}
	}
	err = g.Wait()
	log.Info("demo origin stopped")
	return err
}
