// Command rtcedge runs the whole edge in one process on loopback defaults:
// an embedded etcd, signaling (serving the demo page), one media relay and
// the demo origin. It is the quickest way to try rtcedge:
//
//	go run ./cmd/rtcedge
//
// then open the printed URL. Production deployments run the signaling and
// mediarelay binaries separately against a real etcd cluster.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/demoorigin"
	"github.com/rtcedge/rtcedge/mediarelay"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
	"github.com/rtcedge/rtcedge/web"
)

var version = "dev"

func main() {
	cli.Main("rtcedge", func(ctx context.Context, args []string, getenv func(string) string) error {
		return run(ctx, args, getenv, os.Stdout, nil)
	})
}

// config is the all-in-one binary's configuration.
type config struct {
	host        string
	httpPort    int
	udpPort     int
	tcpPort     int
	relayGRPC   int
	relayHTTP   int
	sigGRPC     int
	originHTTP  int
	originMedia int
	threads     int
	dataDir     string
	publish     cli.StringList
	readyFile   string
	logLevel    slog.Level
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("rtcedge", flag.ContinueOnError)
	fs.StringVar(&c.host, "host", "127.0.0.1", "IP address every listener binds and the relay advertises; the default keeps everything on loopback")
	fs.IntVar(&c.httpPort, "http-port", 8080, "signaling HTTP port (WHIP/WHEP, demo page, REST)")
	fs.IntVar(&c.udpPort, "udp-port", 8000, "relay UDP media port")
	fs.IntVar(&c.tcpPort, "tcp-port", -1, "relay ICE-TCP port, for clients that cannot use UDP; -1: the bound UDP port's number (any port when -udp-port 0 and that number is taken)")
	fs.IntVar(&c.threads, "data-plane-threads", 0, fmt.Sprintf("relay data-plane threads, each with its own SO_REUSEPORT socket of the UDP port; 0: the cores the process may use minus one, at least 1 (here %d)", mediarelay.DefaultDataPlaneThreads()))
	fs.IntVar(&c.relayGRPC, "relay-grpc-port", 9090, "relay gRPC admin port")
	fs.IntVar(&c.relayHTTP, "relay-http-port", 9091, "relay HTTP port (REST, /metrics)")
	fs.IntVar(&c.sigGRPC, "signaling-grpc-port", 9092, "signaling gRPC port (origin registry)")
	fs.IntVar(&c.originHTTP, "origin-http-port", 8888, "demo origin HTTP port")
	fs.IntVar(&c.originMedia, "origin-media-port", 8189, "demo origin UDP media port")
	fs.StringVar(&c.dataDir, "data-dir", "", "embedded etcd data directory; empty uses a temporary one removed at exit")
	fs.Var(&c.publish, "publish", "stream key the demo origin publishes a built-in VP8 test pattern to (e.g. live/test: play it at /whep/live/test); repeatable or comma-separated")
	cli.RegisterReadyFile(fs, &c.readyFile)
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	for _, key := range c.publish {
		if !demoorigin.ValidStreamKey(key) {
			return c, fmt.Errorf("-publish %q: use 1-256 bytes of [A-Za-z0-9._~-] segments separated by '/'", key)
		}
	}
	if _, err := netip.ParseAddr(c.host); err != nil {
		return c, fmt.Errorf("-host %q: want an IP address: %w", c.host, err)
	}
	if err := cli.ValidateReadyFile(c.readyFile); err != nil {
		return c, err
	}
	for name, p := range map[string]int{"http-port": c.httpPort, "udp-port": c.udpPort, "relay-grpc-port": c.relayGRPC,
		"relay-http-port": c.relayHTTP, "signaling-grpc-port": c.sigGRPC, "origin-http-port": c.originHTTP, "origin-media-port": c.originMedia} {
		if p < 0 || p > 65535 {
			return c, fmt.Errorf("-%s %d: want 0-65535", name, p)
		}
	}
	if c.threads < 0 || c.threads > mediarelay.MaxDataPlaneThreads {
		return c, fmt.Errorf("-data-plane-threads %d: want 0 (the default) to %d", c.threads, mediarelay.MaxDataPlaneThreads)
	}
	if c.tcpPort < -1 || c.tcpPort > 65535 {
		return c, fmt.Errorf("-tcp-port %d: want -1 (the UDP port's number) or 0-65535", c.tcpPort)
	}
	return c, nil
}

// endpoints are the addresses the stack actually listens on.
type endpoints struct {
	Signaling   string // http://host:port
	RelayGRPC   string
	RelayHTTP   string
	SigGRPC     string
	RelayUDP    string
	RelayTCP    string
	OriginHTTP  string
	OriginMedia string
	Etcd        []string
}

// run starts the stack and blocks until ctx ends. When ready is not nil the
// endpoints are sent on it once everything listens (tests use it).
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, ready chan<- endpoints) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	etcd, err := embedetcd.Start(ctx, embedetcd.Config{Dir: cfg.dataDir, Logger: log})
	if err != nil {
		return fmt.Errorf("embedded etcd: %w", err)
	}
	defer etcd.Close()
	reg, err := registry.New(registry.Config{Endpoints: etcd.Endpoints(), Logger: log})
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer reg.Close()

	listen := func(port int) (net.Listener, error) {
		return net.Listen("tcp", netip.AddrPortFrom(netip.MustParseAddr(cfg.host), uint16(port)).String())
	}
	var lis struct{ sigHTTP, sigGRPC, relayGRPC, relayHTTP, originHTTP net.Listener }
	for _, l := range []struct {
		dst  *net.Listener
		port int
	}{{&lis.sigHTTP, cfg.httpPort}, {&lis.sigGRPC, cfg.sigGRPC}, {&lis.relayGRPC, cfg.relayGRPC}, {&lis.relayHTTP, cfg.relayHTTP}, {&lis.originHTTP, cfg.originHTTP}} {
		if *l.dst, err = listen(l.port); err != nil {
			return err
		}
		defer (*l.dst).Close()
	}
	hostAddr := netip.MustParseAddr(cfg.host)
	threads := cmp.Or(cfg.threads, mediarelay.DefaultDataPlaneThreads())
	udpConns, err := mediarelay.ListenUDP(ctx, "udp", netip.AddrPortFrom(hostAddr, uint16(cfg.udpPort)).String(), threads, 0)
	if err != nil {
		return fmt.Errorf("relay UDP: %w", err)
	}
	publicUDP := netip.MustParseAddrPort(udpConns[0].LocalAddr().String())
	relayTCP, err := listenRelayTCP(ctx, hostAddr, cfg.tcpPort, cfg.udpPort, publicUDP.Port())
	if err != nil {
		return err
	}
	defer relayTCP.Close()
	publicTCP := relayTCP.Addr().(*net.TCPAddr).AddrPort()
	publicTCP = netip.AddrPortFrom(publicTCP.Addr().Unmap(), publicTCP.Port())
	originMedia, err := net.ListenPacket("udp", netip.AddrPortFrom(hostAddr, uint16(cfg.originMedia)).String())
	if err != nil {
		return fmt.Errorf("demo origin media: %w", err)
	}

	// Relay.
	relay, err := mediarelay.New(mediarelay.Config{
		RelayID:          "relay-1",
		PublicAddrs:      []netip.AddrPort{publicUDP},
		PublicTCPAddrs:   []netip.AddrPort{publicTCP},
		GRPCAddress:      lis.relayGRPC.Addr().String(),
		Registry:         reg,
		Logger:           log.With("service", "mediarelay"),
		Version:          version,
		DataPlaneThreads: threads,
	})
	if err != nil {
		return err
	}
	relayGRPC := grpc.NewServer()
	mediarelay.RegisterGRPC(relayGRPC, relay)

	// Signaling, serving the demo page at "/".
	sig, err := signaling.New(signaling.Config{Registry: reg, Logger: log.With("service", "signaling"), Page: web.Handler(), Version: version})
	if err != nil {
		return err
	}
	sigGRPC := grpc.NewServer()
	sig.RegisterGRPC(sigGRPC)
	sigHTTP := &http.Server{Handler: sig.Handler(), ReadHeaderTimeout: 10 * time.Second}
	relayHTTP := &http.Server{Handler: relay.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}

	// Demo origin, registering itself with signaling.
	origin, err := demoorigin.New(demoorigin.Config{MediaConn: originMedia, Logger: log.With("service", "demo-origin")})
	if err != nil {
		return err
	}
	for _, key := range cfg.publish {
		if err := origin.PublishTestPattern(key); err != nil {
			_ = origin.Close()
			return err
		}
	}
	originHTTP := &http.Server{Handler: origin.Handler(), ReadHeaderTimeout: 10 * time.Second}
	conn, err := grpc.NewClient(lis.sigGRPC.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	originURL := "http://" + lis.originHTTP.Addr().String()
	hb := &demoorigin.Heartbeat{
		Client: originv1.NewOriginRegistryClient(conn),
		Origin: demoorigin.NewRegistration("demo-origin", originURL, []string{origin.MediaAddr().String()}, 0),
		Logger: log.With("service", "demo-origin"),
	}

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error {
		// The relay is closed on Serve's goroutine only (when gctx ends or
		// Serve fails), so that no Close races Serve's start, and
		// ServeTCP returns with it.
		err := relay.Serve(gctx, udpConns...)
		_ = relay.Close()
		return err
	})
	g.Go(func() error {
		if err := relay.ServeTCP(relayTCP); err != nil && !errors.Is(err, mediarelay.ErrClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return cli.ServeGRPC(relayGRPC, lis.relayGRPC) })
	g.Go(func() error { return cli.ServeGRPC(sigGRPC, lis.sigGRPC) })
	g.Go(func() error { return cli.ServeHTTP(sigHTTP, lis.sigHTTP) })
	g.Go(func() error { return cli.ServeHTTP(relayHTTP, lis.relayHTTP) })
	g.Go(func() error { return cli.ServeHTTP(originHTTP, lis.originHTTP) })
	g.Go(func() error { return hb.Run(gctx) })
	g.Go(func() error { sig.RunReaper(gctx); return nil })

	ep := endpoints{
		Signaling:   "http://" + lis.sigHTTP.Addr().String(),
		RelayGRPC:   lis.relayGRPC.Addr().String(),
		RelayHTTP:   "http://" + lis.relayHTTP.Addr().String(),
		SigGRPC:     lis.sigGRPC.Addr().String(),
		RelayUDP:    publicUDP.String(),
		RelayTCP:    publicTCP.String(),
		OriginHTTP:  originURL,
		OriginMedia: origin.MediaAddr().String(),
		Etcd:        etcd.Endpoints(),
	}
	fmt.Fprintf(stdout, `rtcedge %s is running (Ctrl-C stops it)
  demo page        %s/
  status page      %s/status
  WHIP             %s/whip/{stream}
  WHEP             %s/whep/{stream}
  relay admin      grpcurl -plaintext %s list    (REST: %s/v1/status)
  relay media      udp %s, tcp %s (ICE-TCP)
  origin registry  grpc %s
  demo origin      %s (media udp %s)
  etcd             %v
`, version, ep.Signaling, ep.Signaling, ep.Signaling, ep.Signaling, ep.RelayGRPC, ep.RelayHTTP, ep.RelayUDP, ep.RelayTCP, ep.SigGRPC, ep.OriginHTTP, ep.OriginMedia, ep.Etcd)
	// Announce the stack once a WHEP request would find it: the relay and
	// the demo origin are in the registry's caches signaling reads.
	if err := waitUsable(gctx, reg, hb.Origin.GetId(), time.Minute); err != nil {
		log.Warn("rtcedge: announcing the stack before it is usable", "err", err)
	}
	readyErr := cli.WriteReadyFile(cfg.readyFile, cli.Ready{
		HTTP: lis.sigHTTP.Addr().String(), GRPC: ep.SigGRPC, UDP: []string{ep.RelayUDP}, Public: []string{publicUDP.String()},
		TCP: []string{relayTCP.Addr().String()}, PublicTCP: []string{ep.RelayTCP},
		RelayGRPC: ep.RelayGRPC, RelayHTTP: lis.relayHTTP.Addr().String(), OriginHTTP: lis.originHTTP.Addr().String(),
		OriginUDP: []string{ep.OriginMedia}, Etcd: ep.Etcd,
	})
	if readyErr == nil {
		defer func() { _ = cli.RemoveReadyFile(cfg.readyFile) }()
		if ready != nil {
			ready <- ep
		}
		<-gctx.Done()
	}
	stopRun()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = sigHTTP.Shutdown(shutdownCtx)
	_ = relayHTTP.Shutdown(shutdownCtx)
	_ = originHTTP.Shutdown(shutdownCtx)
	cli.StopGRPC(shutdownCtx, sigGRPC)
	cli.StopGRPC(shutdownCtx, relayGRPC)
	// stopRun ended Serve's context: Serve closes the relay.
	_ = origin.Close()
	sig.Close()
	if readyErr != nil {
		// The stack was never announced: stop it all and say why.
		_ = g.Wait()
		return readyErr
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// listenRelayTCP binds the relay's ICE-TCP port on host: port, or with -1
// the bound UDP port's number (any port when the UDP port was 0, chosen by
// the kernel, and its number is taken for TCP).
func listenRelayTCP(ctx context.Context, host netip.Addr, port, udpFlag int, udpBound uint16) (net.Listener, error) {
	var lc net.ListenConfig
	if port >= 0 {
		ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(host, uint16(port)).String())
		if err != nil {
			return nil, fmt.Errorf("relay ICE-TCP (-tcp-port): %w", err)
		}
		return ln, nil
	}
	ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(host, udpBound).String())
	if err != nil && udpFlag == 0 {
		ln, err = lc.Listen(ctx, "tcp", netip.AddrPortFrom(host, 0).String())
	}
	if err != nil {
		return nil, fmt.Errorf("relay ICE-TCP on the UDP port's number %d: %w (set -tcp-port)", udpBound, err)
	}
	return ln, nil
}

// waitUsable waits, at most timeout, until reg's caches hold a live relay
// and the origin originID, so that the first setup after the announcement
// finds both.
func waitUsable(ctx context.Context, reg *registry.Client, originID string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		relays, rerr := reg.Relays(ctx)
		origins, oerr := reg.Origins(ctx)
		if rerr == nil && oerr == nil && len(relays) > 0 &&
			slices.ContainsFunc(origins, func(o registry.Origin) bool { return o.ID == originID }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("relay or origin %s not registered: %w", originID, errors.Join(ctx.Err(), rerr, oerr))
		case <-tick.C:
		}
	}
}
