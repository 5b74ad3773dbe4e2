//go:build linux

// Command rtcedge-load measures the media relay's CPU time per forwarded
// packet against a minimal C forwarder (test/cforward), and the WHIP setup
// rate and latency through signaling. Subcommands:
//
//	rtcedge-load echo    -listen 127.0.0.1:0 [-http-listen 127.0.0.1:0]
//	rtcedge-load run     -target relay|cforward|direct [-transport udp|tcp] [-sessions N -rate R | -window W | -idle] ...
//	rtcedge-load compare [-sessions-list 1,100,1000] [-total-rate 30000] [-transport udp,tcp] [-idle] ...
//	rtcedge-load setups  [-clients 16,64] [-etcd process|embedded|host:port] ...
//	rtcedge-load etcd    [-listen http://127.0.0.1:0] [-unsafe-no-fsync]
//
// `echo` runs the echo origin alone. `run` loads one target (with an
// in-process echo origin unless -origin names one) and reports loss, round
// trip times and, with -pid, the target's CPU per packet and memory per
// session. With `-transport tcp` (target relay) each session's client
// connects to the relay's ICE-TCP port instead (the candidate AllocateSession
// returns with protocol tcp) and frames its STUN Binding request and its
// packets per RFC 4571; the relay reaches the origin over UDP as always.
// Every client connects from 127.0.0.1, so the relay's -tcp-max-conns-per-ip
// (default 64) must allow -sessions connections; `compare` sets it. `-idle`
// sends nothing after the setup: the target's memory per idle session (and
// its idle CPU); the window must stay under the relay's -tcp-idle-timeout
// (30 s) over TCP. `compare` builds and starts the C forwarder and the relay
// as pinned child processes for each session count (and each transport of
// `-transport`, the C forwarder over UDP only), with an embedded etcd and the
// echo origin in-process, and prints one table: "vs cforward" is CPU per
// packet over the C forwarder's, "vs udp" a TCP row's over the UDP row's. `setups` builds and
// starts signaling (pinned to a core of its own), a relay and etcd as child
// processes, registers the in-process echo origin's WHIP endpoint with
// signaling, and has concurrent clients loop WHIP POST and DELETE through
// signaling, then straight to the origin: setups per second, POST latency
// and every process's CPU time per setup. `etcd` runs an embedded etcd
// alone (what `setups -etcd process` starts). Every flag has an environment
// fallback named RTCEDGE_<FLAG>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/loadgen"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

const usage = `usage: rtcedge-load <echo|run|compare|setups|etcd> [flags]   (-h after a subcommand lists its flags)`

func main() {
	cli.Main("rtcedge-load", run)
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "echo":
		return runEcho(ctx, args[1:], getenv)
	case "run":
		return runLoad(ctx, args[1:], getenv)
	case "compare":
		return runCompare(ctx, args[1:], getenv)
	case "setups":
		return runSetups(ctx, args[1:], getenv)
	case "etcd":
		return runEtcd(ctx, args[1:], getenv)
	}
	return fmt.Errorf("unknown subcommand %q; %s", args[0], usage)
}

func newLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func runEcho(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "UDP address of the echo origin")
	httpListen := fs.String("http-listen", "", "TCP address of its WHIP endpoint; empty serves none")
	ufrag := fs.String("ufrag", loadgen.DefaultEchoUfrag, "the origin's ICE ufrag")
	pwd := fs.String("pwd", loadgen.DefaultEchoPwd, "the origin's ICE pwd")
	buf := fs.Int("socket-buffer", 8<<20, "SO_RCVBUF/SO_SNDBUF bytes")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return err
	}
	log := newLogger(level)
	e, err := loadgen.NewEcho(loadgen.EchoConfig{Listen: *listen, HTTPListen: *httpListen, Ufrag: *ufrag, Pwd: *pwd,
		Buffer: *buf, Logger: log})
	if err != nil {
		return err
	}
	log.Info("echo origin serving", "udp", e.Addr().String(), "http", e.HTTPAddr(), "ufrag", e.Ufrag())
	fmt.Printf("echo udp=%s http=%s\n", e.Addr(), e.HTTPAddr())
	<-ctx.Done()
	err = e.Close()
	log.Info("echo origin stopped", "stats", e.Stats())
	return err
}

// loadFlags are the traffic flags run and compare share.
type loadFlags struct {
	rate     float64
	window   int
	idle     bool
	duration time.Duration
	warmup   time.Duration
	size     int
	jsonFile string
	level    slog.Level
}

func (l *loadFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&l.rate, "rate", 0, "packets per second per session (paced; run defaults to 50 without -window); 0 with -window runs closed loop")
	fs.IntVar(&l.window, "window", 0, "packets in flight per session (closed loop, when -rate is 0)")
	fs.BoolVar(&l.idle, "idle", false, "send nothing after the sessions' setup: measure the target's memory (and CPU) with idle sessions")
	fs.DurationVar(&l.duration, "duration", 10*time.Second, "measurement window")
	fs.DurationVar(&l.warmup, "warmup", 2*time.Second, "traffic before the measurement window")
	fs.IntVar(&l.size, "size", 1200, "packet size in bytes")
	fs.StringVar(&l.jsonFile, "json", "", "also write the results to this file as JSON")
	fs.TextVar(&l.level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
}

func runLoad(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var lf loadFlags
	lf.register(fs)
	target := fs.String("target", loadgen.TargetDirect, "relay, cforward or direct")
	transport := fs.String("transport", loadgen.TransportUDP, "udp, or tcp: connect to the relay's ICE-TCP port (target relay; its -tcp-max-conns-per-ip must allow -sessions)")
	addr := fs.String("addr", "", "target UDP ip:port (cforward; direct defaults to the echo origin)")
	relayGRPC := fs.String("relay-grpc", "127.0.0.1:9090", "the relay's gRPC address (target relay)")
	origin := fs.String("origin", "", "UDP ip:port of an echo origin already running (rtcedge-load echo); empty starts one in-process")
	echoListen := fs.String("echo-listen", "127.0.0.1:0", "UDP address of the in-process echo origin")
	ufrag := fs.String("origin-ufrag", loadgen.DefaultEchoUfrag, "the echo origin's ICE ufrag")
	pwd := fs.String("origin-pwd", loadgen.DefaultEchoPwd, "the echo origin's ICE pwd")
	sessions := fs.Int("sessions", 10, "sessions, each with its own client socket")
	pid := fs.Int("pid", 0, "target process to measure (CPU per packet, memory per session); 0 measures none")
	clientBuf := fs.Int("client-buffer", 256<<10, "SO_RCVBUF/SO_SNDBUF bytes of each client socket")
	setupTimeout := fs.Duration("setup-timeout", 30*time.Second, "bound on the sessions' STUN exchange")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return err
	}
	if lf.rate == 0 && lf.window == 0 {
		lf.rate = 50
	}
	log := newLogger(lf.level)
	cfg := loadgen.Config{
		Target: *target, Transport: *transport, RelayGRPC: *relayGRPC, OriginUfrag: *ufrag, OriginPwd: *pwd,
		Sessions: *sessions, Rate: lf.rate, Window: lf.window, Idle: lf.idle, Warmup: lf.warmup, Duration: lf.duration,
		Size: lf.size, PID: *pid, ClientBuffer: *clientBuf, SetupTimeout: *setupTimeout, Logger: log,
	}
	if *target == "whip" {
		return errors.New("-target whip: WHIP setups are measured by `rtcedge-load setups`")
	}
	if *addr != "" {
		a, err := netip.ParseAddrPort(*addr)
		if err != nil {
			return fmt.Errorf("-addr %q: %w", *addr, err)
		}
		cfg.Addr = a
	}
	if *origin != "" {
		a, err := netip.ParseAddrPort(*origin)
		if err != nil {
			return fmt.Errorf("-origin %q: %w", *origin, err)
		}
		cfg.Origin = a
	} else {
		e, err := loadgen.NewEcho(loadgen.EchoConfig{Listen: *echoListen, Ufrag: *ufrag, Pwd: *pwd, Logger: log})
		if err != nil {
			return err
		}
		defer e.Close()
		cfg.Origin = e.Addr()
		log.Info("echo origin in-process", "udp", e.Addr().String())
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return report([]*loadgen.Result{res}, lf.jsonFile)
}

func report(results []*loadgen.Result, jsonFile string) error {
	if err := loadgen.WriteTable(os.Stdout, results); err != nil {
		return err
	}
	if jsonFile != "" {
		return loadgen.WriteJSON(jsonFile, results)
	}
	return nil
}

func runCompare(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	var lf loadFlags
	lf.register(fs)
	cfBin := fs.String("cforward-bin", "", "C forwarder binary; empty compiles -cforward-src with gcc")
	cfSrc := fs.String("cforward-src", "test/cforward/cforward.c", "C forwarder source")
	relayBin := fs.String("relay-bin", "", "mediarelay binary; empty runs go build ./cmd/mediarelay")
	var targets cli.StringList
	fs.Var(&targets, "targets", "targets in order, comma-separated (default cforward,relay)")
	var transports cli.StringList
	fs.Var(&transports, "transport", "client transports each target runs with, comma-separated: udp, tcp (the relay's ICE-TCP port; the C forwarder runs udp only) (default udp)")
	var list cli.StringList
	fs.Var(&list, "sessions-list", "session counts, comma-separated (default 1,100,1000,5000)")
	total := fs.Float64("total-rate", 30000, "packets per second of all sessions together (paced, unless -rate or -window)")
	cpuTool := fs.Int("cpu-tool", 0, "CPU this process is pinned to; -1 leaves it unpinned")
	cpuTarget := fs.Int("cpu-target", 1, "CPU the targets are pinned to; -1 leaves them unpinned")
	buf := fs.Int("socket-buffer", 4<<20, "SO_RCVBUF/SO_SNDBUF bytes of the targets' sockets")
	relayArgs := fs.String("relay-args", "", "more flags for the relay, space-separated (e.g. \"-data-plane-threads 2\")")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return err
	}
	if len(list) == 0 {
		list = cli.StringList{"1", "100", "1000", "5000"}
	}
	var sessions []int
	for _, s := range list {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("-sessions-list: %q is not a session count", s)
		}
		sessions = append(sessions, n)
	}
	results, err := loadgen.Compare(ctx, loadgen.CompareConfig{
		CForwardBin: *cfBin, CForwardSrc: *cfSrc, RelayBin: *relayBin, Targets: targets, Transports: transports,
		SessionsList: sessions, TotalRate: *total, Rate: lf.rate, Window: lf.window, Idle: lf.idle,
		Warmup: lf.warmup, Duration: lf.duration, Size: lf.size,
		CPUTool: *cpuTool, CPUTarget: *cpuTarget, SocketBuffer: *buf, RelayArgs: strings.Fields(*relayArgs), Logger: newLogger(lf.level),
	})
	if len(results) > 0 {
		fmt.Printf("rate: %s\n", strings.TrimSpace(describeRate(lf, *total)))
		if rerr := report(results, lf.jsonFile); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

func describeRate(lf loadFlags, total float64) string {
	switch {
	case lf.idle:
		return "idle: no packets after the setup"
	case lf.rate > 0:
		return fmt.Sprintf("%g packets/s per session", lf.rate)
	case lf.window > 0:
		return fmt.Sprintf("closed loop, %d in flight per session", lf.window)
	}
	return fmt.Sprintf("%g packets/s in total, spread over the sessions", total)
}

func runSetups(ctx context.Context, args []string, getenv func(string) string) error {
	def := loadgen.NewSetupsConfig()
	fs := flag.NewFlagSet("setups", flag.ContinueOnError)
	var clients cli.StringList
	fs.Var(&clients, "clients", "concurrent clients, comma-separated for several runs (default 16)")
	direct := fs.Bool("direct", def.Direct, "after each edge run, run the same clients straight against the echo origin")
	duration := fs.Duration("duration", def.Duration, "measurement window of each run")
	warmup := fs.Duration("warmup", def.Warmup, "setups before each measurement window")
	count := fs.Int("count", 0, "end a window after this many setups; 0 runs the whole -duration")
	etcd := fs.String("etcd", loadgen.EtcdProcess, "process (this binary's etcd subcommand as a pinned child, its CPU measured apart), embedded (in this process), or host:port,... of a running etcd")
	etcdPID := fs.Int("etcd-pid", 0, "process of the running etcd named by -etcd, to measure its CPU")
	noFsync := fs.Bool("etcd-unsafe-no-fsync", false, "the etcd started here skips its fsyncs")
	sigBin := fs.String("signaling-bin", "", "signaling binary; empty runs go build ./cmd/signaling")
	relayBin := fs.String("relay-bin", "", "mediarelay binary; empty runs go build ./cmd/mediarelay")
	sigURL := fs.String("signaling", "", "http://host:port of a running signaling (with -signaling-grpc): start no etcd, relay nor signaling")
	sigGRPC := fs.String("signaling-grpc", "", "OriginRegistry gRPC address of the running signaling, to register the echo origin")
	sigPID := fs.Int("signaling-pid", 0, "process of the running signaling, to measure its CPU")
	sigLevel := fs.String("signaling-log-level", def.SignalingLogLevel, "signaling's -log-level")
	cpuSig := fs.Int("cpu-signaling", def.CPUSignaling, "CPU signaling is pinned to; -1 leaves everything unpinned")
	cpuRest := fs.Int("cpu-rest", def.CPURest, "CPU of everything else (this process, relay, etcd); -1 leaves everything unpinned")
	offerFile := fs.String("offer", "", "SDP offer file; empty uses Chrome's WHIP offer (fresh ICE credentials per POST either way)")
	perSetup := fs.Bool("stream-per-setup", false, "a new stream (and origin pin) for every setup instead of one stream per client")
	noKeepAlive := fs.Bool("no-keepalive", false, "a new TCP connection for every request")
	timeout := fs.Duration("request-timeout", 30*time.Second, "bound on each request")
	jsonFile := fs.String("json", "", "also write the results to this file as JSON")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return err
	}
	if len(clients) == 0 {
		clients = cli.StringList{"16"}
	}
	cfg := def
	cfg.Clients = nil
	for _, c := range clients {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			return fmt.Errorf("-clients: %q is not a client count", c)
		}
		cfg.Clients = append(cfg.Clients, n)
	}
	cfg.Direct, cfg.Duration, cfg.Warmup, cfg.Count = *direct, *duration, *warmup, *count
	cfg.Etcd, cfg.EtcdPID, cfg.UnsafeNoFsync = *etcd, *etcdPID, *noFsync
	cfg.SignalingBin, cfg.RelayBin = *sigBin, *relayBin
	cfg.SignalingURL, cfg.SignalingGRPC, cfg.SignalingPID = *sigURL, *sigGRPC, *sigPID
	cfg.SignalingLogLevel, cfg.CPUSignaling, cfg.CPURest = *sigLevel, *cpuSig, *cpuRest
	cfg.StreamPerSetup, cfg.NoKeepAlive, cfg.RequestTimeout = *perSetup, *noKeepAlive, *timeout
	cfg.Logger = newLogger(level)
	if *offerFile != "" {
		b, err := os.ReadFile(*offerFile)
		if err != nil {
			return fmt.Errorf("-offer: %w", err)
		}
		cfg.Offer = b
	}
	if cfg.Etcd == loadgen.EtcdProcess {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("-etcd process: %w", err)
		}
		cfg.EtcdCommand = []string{self, "etcd", "-log-level", "error"}
	}
	results, err := loadgen.Setups(ctx, cfg)
	if len(results) > 0 {
		r := results[0]
		fsync := "fsync on"
		switch {
		case r.Etcd == "external":
			fsync = "fsync as configured there"
		case !r.EtcdFsync:
			fsync = "fsync off"
		}
		fmt.Printf("etcd: %s, %s; %s; streams %s; keep-alive %t\n", r.Etcd, fsync, r.Pinning, r.Streams, r.KeepAlive)
		if rerr := loadgen.WriteSetupsTable(os.Stdout, results); rerr != nil {
			return errors.Join(err, rerr)
		}
		if *jsonFile != "" {
			if rerr := loadgen.WriteJSON(*jsonFile, results); rerr != nil {
				return errors.Join(err, rerr)
			}
		}
	}
	return err
}

func runEtcd(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	listen := fs.String("listen", "", "client URL, e.g. http://127.0.0.1:2379; empty picks a free loopback port")
	dir := fs.String("dir", "", "data directory; empty uses a temporary one, removed at exit")
	noFsync := fs.Bool("unsafe-no-fsync", false, "skip etcd's fsyncs (the data survives a restart, not a power loss)")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := cli.Parse(fs, args, getenv); err != nil {
		return err
	}
	log := newLogger(level)
	e, err := embedetcd.Start(ctx, embedetcd.Config{Dir: *dir, ClientURL: *listen, UnsafeNoFsync: *noFsync, Logger: log})
	if err != nil {
		return err
	}
	// The first line is what `setups -etcd process` waits for.
	fmt.Printf("etcd client=%s\n", strings.Join(e.Endpoints(), ","))
	log.Info("etcd serving", "endpoints", e.Endpoints(), "unsafe_no_fsync", *noFsync)
	<-ctx.Done()
	return e.Close()
}
