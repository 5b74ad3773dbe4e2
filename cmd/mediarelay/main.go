// Command mediarelay runs one rtcedge media relay: the public UDP port,
// the ICE-TCP port for clients that cannot use UDP (RFC 6544 passive, RFC
// 4571 framing; by default the UDP port's number), the
// relay.v1.RelayService gRPC API (with reflection and health), and an HTTP
// port with the REST gateway, /metrics, /healthz and /readyz.
//
// Every flag has an environment fallback named RTCEDGE_<FLAG> (dashes become
// underscores): -udp-listen is RTCEDGE_UDP_LISTEN. `mediarelay healthcheck
// URL` probes an HTTP endpoint (for container health checks), and
// `mediarelay drain -deadline D -wait` drains the relay on this host and
// waits until its sessions are gone (a Kubernetes preStop hook; see
// deploy/helm/rtcedge).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "drain" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runDrain(ctx, os.Args[2:], os.Getenv, os.Stderr)
		stop()
		switch {
		case errors.Is(err, flag.ErrHelp):
		case err != nil:
			fmt.Fprintf(os.Stderr, "mediarelay: %v\n", err)
			os.Exit(1)
		}
		return
	}
	cli.Main("mediarelay", func(ctx context.Context, args []string, getenv func(string) string) error {
		return run(ctx, args, getenv, nil)
	})
}

type config struct {
	udpListen      string
	publicAddrs    cli.StringList
	publicFromNode string
	tcp            tcpConfig
	grpcListen     string
	grpcAdvertise  string
	httpListen     string
	etcd           cli.EtcdFlags
	relayID        string
	zone           string
	idleTimeout    time.Duration
	leaseTTL       time.Duration
	dataPlane      string
	threads        int
	maxSessions    int
	socketBuffer   int
	sockets        int
	tlsCert        string
	tlsKey         string
	clientCA       string
	readyFile      string
	adminToken     string
	insecureAdmin  bool
	takeover       bool
	logLevel       slog.Level
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("mediarelay", flag.ContinueOnError)
	fs.StringVar(&c.udpListen, "udp-listen", ":8000", "public UDP address for media (one port for every session)")
	fs.Var(&c.publicAddrs, "public-addr", "advertised ip:port clients reach the UDP port on; repeatable or comma-separated; when unset: the bound address if -udp-listen names an IP, else derived from the interfaces")
	fs.StringVar(&c.publicFromNode, "public-addr-from-node", "", "Kubernetes node name: advertise that Node's ExternalIP addresses with the bound UDP port, read at start from the API server with the pod's service account (which needs get on nodes); excludes -public-addr")
	c.tcp.register(fs)
	fs.StringVar(&c.grpcListen, "grpc-listen", ":9090", "gRPC admin API address")
	fs.StringVar(&c.grpcAdvertise, "grpc-advertise", "", "host:port signaling dials for the gRPC API; default: -grpc-listen with this host's address")
	fs.StringVar(&c.httpListen, "http-listen", ":9091", "HTTP address for REST, /metrics, /healthz, /readyz")
	c.etcd.Register(fs)
	fs.StringVar(&c.relayID, "relay-id", sanitize(host), "relay id in the registry: 1-64 of [A-Za-z0-9._-]; keep it across restarts to resume sessions")
	fs.StringVar(&c.zone, "zone", "", "zone label; signaling prefers relays of its own zone")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", mediarelay.DefaultIdleTimeout, "release a session after this long without packets from its client")
	fs.DurationVar(&c.leaseTTL, "registration-ttl", mediarelay.DefaultRelayTTL, "TTL of the relay's registration lease in etcd: how soon signaling stops picking a relay that died, and counts its sessions as orphaned")
	fs.IntVar(&c.maxSessions, "max-sessions", 0, "maximum open sessions; 0 is unlimited")
	fs.IntVar(&c.socketBuffer, "socket-buffer", 4<<20, "SO_RCVBUF/SO_SNDBUF bytes of every socket; 0 keeps the kernel default (which overflows in bursts)")
	fs.StringVar(&c.dataPlane, "data-plane", mediarelay.DataPlaneThread, "packet loop: thread (-data-plane-threads OS threads with epoll, recvmmsg and sendmmsg outside the Go scheduler; Linux), netpoll (goroutines on Go's poller), goroutines (a reader per socket; portable)")
	fs.IntVar(&c.threads, "data-plane-threads", 0, fmt.Sprintf("data-plane threads of -data-plane thread, each with its own SO_REUSEPORT socket of the UDP port and its share of the sessions; 0: the cores the process may use minus one, at least 1 (here %d)", mediarelay.DefaultDataPlaneThreads()))
	fs.IntVar(&c.sockets, "reuseport-sockets", 1, "SO_REUSEPORT sockets on the UDP port, one reader each, for -data-plane netpoll and goroutines (Linux); 1 disables. The thread plane opens one per data-plane thread")
	fs.StringVar(&c.tlsCert, "grpc-tls-cert", "", "certificate file for the gRPC API (enables TLS)")
	fs.StringVar(&c.tlsKey, "grpc-tls-key", "", "key file for the gRPC API")
	fs.StringVar(&c.clientCA, "grpc-client-ca", "", "CA file: gRPC clients (signaling, operators) must present a certificate it signed (mTLS)")
	fs.StringVar(&c.adminToken, "admin-token", "", "bearer token every admin API call (gRPC and REST /v1/) must carry; give signaling the same as -relay-token. Unset: only loopback callers, or mTLS clients with -grpc-client-ca")
	fs.BoolVar(&c.insecureAdmin, "insecure-admin-api", false, "INSECURE: serve the admin API (release, drain) to anyone who can reach it, without a token or mTLS")
	fs.BoolVar(&c.takeover, "takeover", false, "replace a running relay of the same -relay-id on this host without a gap (a rolling upgrade): share its UDP, ICE-TCP, gRPC and HTTP ports (SO_REUSEPORT, same user; Linux), take over its registration and its sessions (each bound to the same address toward its origin), then stop the old process; without a running relay it starts as usual. Without it a port in use is an error")
	cli.RegisterReadyFile(fs, &c.readyFile)
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	switch {
	case c.etcd.Validate() != nil:
		return c, c.etcd.Validate()
	case cli.ValidateReadyFile(c.readyFile) != nil:
		return c, cli.ValidateReadyFile(c.readyFile)
	case c.sockets < 1 || c.sockets > 64:
		return c, fmt.Errorf("-reuseport-sockets %d: want 1-64", c.sockets)
	case c.threads < 0 || c.threads > mediarelay.MaxDataPlaneThreads:
		return c, fmt.Errorf("-data-plane-threads %d: want 0 (the default) to %d", c.threads, mediarelay.MaxDataPlaneThreads)
	case c.idleTimeout < time.Second:
		return c, fmt.Errorf("-idle-timeout %s: want at least 1s", c.idleTimeout)
	case c.dataPlane != mediarelay.DataPlaneThread && c.dataPlane != mediarelay.DataPlaneNetpoll && c.dataPlane != mediarelay.DataPlaneGoroutines:
		return c, fmt.Errorf("-data-plane %q: want thread, netpoll or goroutines", c.dataPlane)
	case c.leaseTTL < registry.MinRelayTTL || c.leaseTTL > 5*time.Minute:
		return c, fmt.Errorf("-registration-ttl %s: want %s to 5m", c.leaseTTL, registry.MinRelayTTL)
	case c.clientCA != "" && c.tlsCert == "":
		return c, errors.New("-grpc-client-ca needs -grpc-tls-cert")
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return c, errors.New("-grpc-tls-cert and -grpc-tls-key go together")
	case c.adminToken != "" && c.insecureAdmin:
		return c, errors.New("-admin-token and -insecure-admin-api exclude each other")
	case c.publicFromNode != "" && len(c.publicAddrs) > 0:
		return c, errors.New("-public-addr and -public-addr-from-node exclude each other")
	case c.tcp.validate() != nil:
		return c, c.tcp.validate()
	}
	return c, nil
}

// adminPolicy is who may call the admin API: the token holders, else mTLS
// clients (gRPC) and loopback callers, else with the opt-in everyone.
func (c config) adminPolicy() bearer.Policy {
	return bearer.Policy{Token: c.adminToken, VerifiedTLS: c.clientCA != "", Insecure: c.insecureAdmin,
		Hint: "set -admin-token on the relay and the same -relay-token on signaling, use mTLS with -grpc-client-ca, or -insecure-admin-api"}
}

// restAdminPolicy is who may call the REST admin API on -http-listen: as on
// gRPC, except that a client certificate opens nothing there (the HTTP port
// has no TLS, so no caller is verified).
func (c config) restAdminPolicy() bearer.Policy {
	p := c.adminPolicy()
	p.VerifiedTLS = false
	p.Hint = "set -admin-token on the relay and the same -relay-token on signaling, or -insecure-admin-api; mTLS with -grpc-client-ca opens gRPC only"
	return p
}

// sanitize turns a host name into a valid relay id.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "relay"
	}
	return string(b[:min(len(b), 64)])
}

// publicAddrs parses -public-addr (a bare IP takes the bound port). Unset,
// it is the bound address when that names an IP (-udp-listen
// 127.0.0.1:0 advertises the port the kernel picked), and otherwise the
// interfaces' addresses with the bound port.
func publicAddrs(flagged []string, bound netip.AddrPort) ([]netip.AddrPort, error) {
	port := bound.Port()
	var out []netip.AddrPort
	for _, s := range flagged {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			// A bare IP takes the listening port.
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("-public-addr %q: want ip or ip:port", s)
			}
			ap = netip.AddrPortFrom(a, port)
		}
		out = append(out, ap)
	}
	if len(out) > 0 {
		return out, nil
	}
	if a := bound.Addr().Unmap(); a.IsValid() && !a.IsUnspecified() {
		return []netip.AddrPort{netip.AddrPortFrom(a, port)}, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing interface addresses: %w", err)
	}
	var loopback []netip.AddrPort
	for _, ia := range ifaddrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := p.Addr()
		switch {
		case a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified():
		case a.IsLoopback():
			loopback = append(loopback, netip.AddrPortFrom(a, port))
		default:
			out = append(out, netip.AddrPortFrom(a, port))
		}
	}
	if len(out) == 0 {
		out = loopback
	}
	if len(out) == 0 {
		return nil, errors.New("no usable interface address: set -public-addr")
	}
	return out, nil
}

// run starts the relay and blocks until ctx ends. ready, when not nil,
// receives the gRPC and HTTP addresses once everything listens.
func run(ctx context.Context, args []string, getenv func(string) string, ready chan<- [2]string) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	if cfg.publicFromNode != "" {
		api, err := inClusterNodeAPI(getenv)
		if err != nil {
			return err
		}
		ips, err := api.externalIPs(ctx, cfg.publicFromNode)
		if err != nil {
			return err
		}
		log.Info("mediarelay: advertising the node's ExternalIP addresses", "node", cfg.publicFromNode, "addresses", ips)
		cfg.publicAddrs = ips
	}

	reg, err := cfg.etcd.Client(log)
	if err != nil {
		return err
	}
	defer reg.Close()

	sockets := cfg.sockets
	if cfg.dataPlane == mediarelay.DataPlaneThread {
		sockets = cmp.Or(cfg.threads, mediarelay.DefaultDataPlaneThreads())
	}
	listenUDP := mediarelay.ListenUDP
	if cfg.takeover {
		listenUDP = mediarelay.ListenUDPTakeover
	}
	conns, err := listenUDP(ctx, "udp", cfg.udpListen, sockets, cfg.socketBuffer)
	if err != nil {
		return err
	}
	if got := mediarelay.ReceiveBuffer(conns[0]); cfg.socketBuffer > 0 && got > 0 && got < cfg.socketBuffer {
		log.Warn("mediarelay: the kernel granted a smaller UDP receive buffer than -socket-buffer; bursts may overflow it: raise net.core.rmem_max and net.core.wmem_max, or grant CAP_NET_ADMIN",
			"asked", cfg.socketBuffer, "granted", got)
	}
	bound := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	addrs, err := publicAddrs(cfg.publicAddrs, bound)
	if err != nil {
		return err
	}
	// ICE-TCP (nil when -tcp-listen off). The relay closes it at Close;
	// the defer covers the early returns.
	tcpLis, tcpPublic, err := cfg.tcp.listen(ctx, cfg.udpListen, bound, addrs, cfg.takeover)
	if err != nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return err
	}
	if tcpLis != nil {
		defer tcpLis.Close()
	}
	grpcLis, err := mediarelay.ListenTCP(ctx, "tcp", cfg.grpcListen, cfg.takeover)
	if err != nil {
		return err
	}
	httpLis, err := mediarelay.ListenTCP(ctx, "tcp", cfg.httpListen, cfg.takeover)
	if err != nil {
		return err
	}
	advertise := cfg.grpcAdvertise
	if advertise == "" {
		advertise = advertised(grpcLis.Addr().(*net.TCPAddr), addrs)
	}

	relay, err := mediarelay.New(mediarelay.Config{
		RelayID: cfg.relayID, Zone: cfg.zone, PublicAddrs: addrs, GRPCAddress: advertise,
		IdleTimeout: cfg.idleTimeout, MaxSessions: cfg.maxSessions, Registry: reg, Logger: log,
		Version: version, SocketBuffer: cfg.socketBuffer, RegistrationTTL: cfg.leaseTTL, DataPlane: cfg.dataPlane,
		DataPlaneThreads: cfg.threads,
		PublicTCPAddrs:   tcpPublic, TCPMaxConns: cfg.tcp.maxConns, TCPMaxConnsPerIP: cfg.tcp.maxConnsPerIP,
		TCPVerifyTimeout: cfg.tcp.verifyTimeout, TCPIdleTimeout: cfg.tcp.idleTimeout, TCPWriteQueue: cfg.tcp.writeQueue,
		Admin: cfg.restAdminPolicy(), Takeover: cfg.takeover,
	})
	if err != nil {
		return err
	}
	if cfg.insecureAdmin {
		log.Warn("mediarelay: -insecure-admin-api: anyone who can reach the admin API may release sessions and drain this relay",
			"grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String())
	} else if cfg.adminToken == "" && !(bearer.IsLoopbackListen(grpcLis.Addr().String()) && bearer.IsLoopbackListen(httpLis.Addr().String())) {
		log.Info("mediarelay: the admin API answers loopback callers only (and mTLS clients on gRPC); set -admin-token for signaling and operators elsewhere")
	}
	opts := cfg.adminPolicy().ServerOptions()
	if cfg.tlsCert != "" {
		creds, err := cli.ServerTLS(cfg.tlsCert, cfg.tlsKey, cfg.clientCA)
		if err != nil {
			return fmt.Errorf("gRPC TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	mediarelay.RegisterGRPC(gs, relay)
	hs := &http.Server{Handler: relay.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}

	var tcpBound []string
	if tcpLis != nil {
		tcpBound = []string{tcpLis.Addr().String()}
	}
	tcpAdvertised := make([]string, len(tcpPublic))
	for i, a := range tcpPublic {
		tcpAdvertised[i] = a.String()
	}
	log.Info("mediarelay starting", "version", version, "relay_id", cfg.relayID, "udp", conns[0].LocalAddr().String(),
		"public", addrs, "tcp", tcpBound, "public_tcp", tcpAdvertised,
		"grpc", grpcLis.Addr().String(), "grpc_advertise", advertise, "http", httpLis.Addr().String())
	// Packets and connections queue in the sockets until the servers below
	// read them, so the file may announce the addresses now.
	public := make([]string, len(addrs))
	for i, a := range addrs {
		public[i] = a.String()
	}
	if err := cli.WriteReadyFile(cfg.readyFile, cli.Ready{UDP: []string{bound.String()}, Public: public,
		TCP: tcpBound, PublicTCP: tcpAdvertised,
		GRPC: grpcLis.Addr().String(), GRPCAdvertise: advertise, HTTP: httpLis.Addr().String()}); err != nil {
		_ = relay.Close()
		for _, c := range conns {
			_ = c.Close()
		}
		_ = grpcLis.Close()
		_ = httpLis.Close()
		return err
	}
	defer func() { _ = cli.RemoveReadyFile(cfg.readyFile) }()
	g, gctx := errgroup.WithContext(ctx)
	// The data plane stops last: media keeps flowing while the admin
	// servers shut down, so that a restart (or a successor started with
	// -takeover) costs the clients as little as possible.
	planeCtx, stopPlane := context.WithCancel(context.WithoutCancel(gctx))
	defer stopPlane()
	g.Go(func() error {
		// Serve closes the relay when planeCtx ends; the relay is closed on
		// Serve's goroutine only, after Serve started everything (a Close
		// from here during Serve's reload would race with it), and also
		// when Serve fails, so that ServeTCP returns.
		err := relay.Serve(planeCtx, conns...)
		_ = relay.Close()
		return err
	})
	if tcpLis != nil {
		g.Go(func() error {
			// Returns when the relay closes, which closes the listener.
			if err := relay.ServeTCP(tcpLis); err != nil && !errors.Is(err, mediarelay.ErrClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error { return cli.ServeGRPC(gs, grpcLis) })
	g.Go(func() error { return cli.ServeHTTP(hs, httpLis) })
	if ready != nil {
		ready <- [2]string{grpcLis.Addr().String(), httpLis.Addr().String()}
	}
	<-gctx.Done()
	log.Info("mediarelay stopping")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdown)
	cli.StopGRPC(shutdown, gs)
	stopPlane()
	return g.Wait() // Serve closes the relay
}

// advertised turns a listen address into one signaling can dial: a wildcard
// host becomes the first public address's IP.
func advertised(l *net.TCPAddr, public []netip.AddrPort) string {
	ap := l.AddrPort()
	if ap.Addr().IsUnspecified() && len(public) > 0 {
		return netip.AddrPortFrom(public[0].Addr(), ap.Port()).String()
	}
	return net.JoinHostPort(ap.Addr().Unmap().String(), strconv.Itoa(int(ap.Port())))
}
