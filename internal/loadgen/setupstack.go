//go:build linux

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtcedge/rtcedge/internal/cli"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// Where a setups run's etcd comes from (SetupsConfig.Etcd).
const (
	// EtcdEmbedded runs etcd inside this process (registry/embedetcd).
	EtcdEmbedded = "embedded"
	// EtcdProcess runs SetupsConfig.EtcdCommand as a pinned child
	// process, so that its CPU time is measured on its own.
	EtcdProcess = "process"
)

// SetupsConfig configures Setups.
type SetupsConfig struct {
	// SignalingBin and RelayBin are the signaling and mediarelay
	// binaries; empty builds ./cmd/signaling and ./cmd/mediarelay from
	// RepoDir (default ".") with `go build` into a temporary directory.
	SignalingBin, RelayBin, RepoDir string
	// SignalingURL, when set, is a signaling instance already running
	// (http://host:port), with SignalingGRPC its OriginRegistry address
	// and SignalingPID its process (0 measures no signaling CPU): Setups
	// then starts no etcd, relay nor signaling, and the stack behind it
	// must have a relay.
	SignalingURL, SignalingGRPC string
	SignalingPID                int
	// Etcd is EtcdEmbedded (the default), EtcdProcess, or the
	// comma-separated endpoints of an etcd already running, whose
	// process EtcdPID is (0 measures none).
	Etcd    string
	EtcdPID int
	// EtcdCommand is, for EtcdProcess, a command line that serves etcd on
	// a free loopback port and prints "etcd client=host:port" as its first
	// line on stdout (`rtcedge-load etcd`). Setups appends
	// "-unsafe-no-fsync=true" or "=false".
	EtcdCommand []string
	// UnsafeNoFsync makes the etcd Setups starts skip its fsyncs.
	UnsafeNoFsync bool
	// Clients are the client counts: for each, an edge run and, with
	// Direct, a direct run.
	Clients []int
	Direct  bool
	// Warmup and Duration are each run's warm-up and measurement window;
	// Count, when > 0, ends a window after that many setups.
	Warmup, Duration time.Duration
	Count            int
	// Offer is the SDP offer; nil uses Chrome's WHIP offer. Each POST
	// carries fresh ICE credentials.
	Offer []byte
	// StreamPerSetup posts every setup to a new stream (so signaling pins
	// a new stream to the origin each time) instead of one stream per
	// client, republished by each of its setups.
	StreamPerSetup bool
	// NoKeepAlive opens a new TCP connection for every request.
	NoKeepAlive bool
	// CPUSignaling is the core signaling is pinned to (default 1), CPURest
	// the core of everything else: this process (clients, echo origin,
	// embedded etcd), the relay and an etcd process (default 0). Negative
	// leaves them unpinned, as does a machine with fewer than 2 cores.
	CPUSignaling, CPURest int
	// SignalingLogLevel is signaling's -log-level; default info (it logs
	// each session created and deleted, as in production).
	SignalingLogLevel string
	// RequestTimeout bounds each request; default 30s.
	RequestTimeout time.Duration
	// Logger is nil for slog.Default().
	Logger *slog.Logger
}

// NewSetupsConfig returns the default configuration: 16 clients, a direct
// run after the edge run, 2s of warm-up and 10s windows, signaling on core
// 1 and the rest on core 0, etcd embedded (the `rtcedge-load setups`
// command runs it as a process instead).
func NewSetupsConfig() SetupsConfig {
	return SetupsConfig{Etcd: EtcdEmbedded, Clients: []int{16}, Direct: true, Warmup: 2 * time.Second,
		Duration: 10 * time.Second, CPUSignaling: 1, CPURest: 0, SignalingLogLevel: "info"}
}

// Setups measures WHIP setups through separate processes: etcd (see
// SetupsConfig.Etcd), a mediarelay child and a signaling child (unless
// SignalingURL names a running one), and the echo origin in this process,
// its WHIP endpoint registered with signaling as a WHIP origin. For each
// client count it runs measureSetups against signaling and then, with
// Direct, against the echo origin, and returns the results in order (those
// completed before a failure, too).
func Setups(ctx context.Context, cfg SetupsConfig) ([]*SetupsResult, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RepoDir == "" {
		cfg.RepoDir = "."
	}
	if cfg.Etcd == "" {
		cfg.Etcd = EtcdEmbedded
	}
	if cfg.SignalingLogLevel == "" {
		cfg.SignalingLogLevel = "info"
	}
	if len(cfg.Clients) == 0 {
		cfg.Clients = []int{16}
	}
	for _, n := range cfg.Clients {
		if n < 1 {
			return nil, fmt.Errorf("loadgen: %d clients: want at least 1", n)
		}
	}
	if cfg.Etcd == EtcdProcess && len(cfg.EtcdCommand) == 0 {
		return nil, errors.New("loadgen: etcd as a process needs an etcd command")
	}
	log := cfg.Logger
	external := cfg.SignalingURL != ""
	if external && cfg.SignalingGRPC == "" {
		return nil, errors.New("loadgen: a running signaling needs its gRPC address to register the origin")
	}

	tmp, err := os.MkdirTemp("", "rtcedge-setups-")
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	defer os.RemoveAll(tmp)
	if !external {
		// Before pinning: the build is a child of this process.
		if err := buildSetupBinaries(ctx, &cfg, tmp); err != nil {
			return nil, err
		}
	}

	cpuSig, cpuRest := cfg.CPUSignaling, cfg.CPURest
	if runtime.NumCPU() < 2 || cpuSig < 0 || cpuRest < 0 {
		cpuSig, cpuRest = -1, -1
	}
	pinning := "unpinned"
	if cpuRest >= 0 {
		if err := pinProcess(0, cpuRest); err != nil {
			return nil, err
		}
		// One core: more Ps would only preempt each other.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		pinning = fmt.Sprintf("signaling on core %d, the rest on core %d", cpuSig, cpuRest)
		if external {
			pinning = fmt.Sprintf("this process on core %d, the running signaling as it is", cpuRest)
		}
	}
	info := SetupsResult{Pinning: pinning, Streams: "per-client"}
	if cfg.StreamPerSetup {
		info.Streams = "per-setup"
	}
	procs := []procRef{{name: "tool", pid: os.Getpid()}}
	sigURL, sigGRPC := cfg.SignalingURL, cfg.SignalingGRPC
	var sig *child
	if external {
		info.Etcd = "external"
		if cfg.SignalingPID > 0 {
			procs = append(procs, procRef{name: "signaling", pid: cfg.SignalingPID})
		}
	} else {
		endpoints, stopEtcd, err := startSetupEtcd(ctx, cfg, cpuRest, &info, &procs)
		if err != nil {
			return nil, err
		}
		defer stopEtcd()
		relay, _, err := startRelay(ctx, CompareConfig{RelayBin: cfg.RelayBin, CPUTarget: cpuRest, SocketBuffer: 1 << 20},
			endpoints, 0)
		if err != nil {
			return nil, err
		}
		defer stopChild(log, "relay", relay)
		procs = append(procs, procRef{name: "relay", pid: relay.pid()})
		sig, sigURL, sigGRPC, err = startSignaling(ctx, cfg, cpuSig, endpoints, filepath.Join(tmp, "signaling.log"))
		if err != nil {
			return nil, err
		}
		defer stopChild(log, "signaling", sig)
		procs = append(procs, procRef{name: "signaling", pid: sig.pid()})
		log.Info("loadgen: stack started", "signaling", sigURL, "signaling_pid", sig.pid(), "relay_pid", relay.pid(),
			"etcd", info.Etcd, "etcd_fsync", info.EtcdFsync, "pinning", pinning)
	}

	echo, err := NewEcho(EchoConfig{Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: log})
	if err != nil {
		return nil, err
	}
	defer echo.Close()
	echoURL := "http://" + echo.HTTPAddr()
	unregister, err := registerEcho(ctx, sigGRPC, echo, log)
	if err != nil {
		return nil, err
	}
	defer unregister()

	tag := randomAlnum(6)
	stream := func(i int, seq uint64) string {
		if cfg.StreamPerSetup {
			return fmt.Sprintf("load/%s-%d-%d", tag, i, seq)
		}
		return fmt.Sprintf("load/%s-%d", tag, i)
	}
	edgeURL := func(i int, seq uint64) string { return sigURL + "/whip/" + stream(i, seq) }
	if err := waitSetup(ctx, edgeURL(0, 0), cfg.Offer, sig); err != nil {
		return nil, err
	}
	var results []*SetupsResult
	for _, n := range cfg.Clients {
		targets := []string{SetupsEdge}
		if cfg.Direct {
			targets = append(targets, SetupsDirect)
		}
		for _, target := range targets {
			run := setupRun{target: target, clients: n, url: edgeURL, offer: cfg.Offer, warmup: cfg.Warmup,
				duration: cfg.Duration, count: cfg.Count, timeout: cfg.RequestTimeout, noKeepAlive: cfg.NoKeepAlive,
				procs: procs, log: log}
			if target == SetupsDirect {
				run.url = func(i int, seq uint64) string { return echoURL + "/" + stream(i, seq) + "/whip" }
			}
			log.Info("loadgen: measuring setups", "target", target, "clients", n)
			res, err := measureSetups(ctx, run)
			if res != nil {
				res.Etcd, res.EtcdFsync, res.Pinning, res.Streams = info.Etcd, info.EtcdFsync, info.Pinning, info.Streams
			}
			if err != nil {
				if sig != nil {
					err = fmt.Errorf("%w (signaling's log ends: %s)", err, lastLines(sig.stderrTail(), 5))
				}
				if res != nil {
					results = append(results, res)
				}
				return results, err
			}
			results = append(results, res)
		}
	}
	return results, nil
}

// buildSetupBinaries builds the binaries cfg does not name into dir.
func buildSetupBinaries(ctx context.Context, cfg *SetupsConfig, dir string) error {
	var pkgs []string
	if cfg.SignalingBin == "" {
		pkgs = append(pkgs, "./cmd/signaling")
		cfg.SignalingBin = filepath.Join(dir, "signaling")
	}
	if cfg.RelayBin == "" {
		pkgs = append(pkgs, "./cmd/mediarelay")
		cfg.RelayBin = filepath.Join(dir, "mediarelay")
	}
	if len(pkgs) == 0 {
		return nil
	}
	cfg.Logger.Info("loadgen: building", "packages", pkgs)
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = cfg.RepoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("loadgen: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// startSetupEtcd starts (or, for endpoints, names) the etcd of a setups
// run; it fills info's Etcd and EtcdFsync and adds an etcd process to
// procs, and returns the endpoints and a function stopping it.
func startSetupEtcd(ctx context.Context, cfg SetupsConfig, cpu int, info *SetupsResult, procs *[]procRef) ([]string, func(), error) {
	log := cfg.Logger
	switch cfg.Etcd {
	case EtcdEmbedded:
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		e, err := embedetcd.Start(ctx, embedetcd.Config{UnsafeNoFsync: cfg.UnsafeNoFsync, Logger: quiet})
		if err != nil {
			return nil, nil, fmt.Errorf("loadgen: starting etcd: %w", err)
		}
		info.Etcd, info.EtcdFsync = EtcdEmbedded, !cfg.UnsafeNoFsync
		(*procs)[0].name = "tool+etcd"
		return e.Endpoints(), func() { _ = e.Close() }, nil
	case EtcdProcess:
		c, endpoint, err := startEtcdChild(ctx, cfg.EtcdCommand, cfg.UnsafeNoFsync, cpu)
		if err != nil {
			return nil, nil, err
		}
		info.Etcd, info.EtcdFsync = EtcdProcess, !cfg.UnsafeNoFsync
		*procs = append(*procs, procRef{name: "etcd", pid: c.pid()})
		return []string{endpoint}, func() { stopChild(log, "etcd", c) }, nil
	}
	info.Etcd = "external"
	if cfg.EtcdPID > 0 {
		*procs = append(*procs, procRef{name: "etcd", pid: cfg.EtcdPID})
	}
	return strings.Split(cfg.Etcd, ","), func() {}, nil
}

// startEtcdChild runs command pinned to cpu and returns once it printed
// its client endpoint.
func startEtcdChild(ctx context.Context, command []string, noFsync bool, cpu int) (*child, string, error) {
	args := append(append([]string(nil), command[1:]...), "-unsafe-no-fsync="+strconv.FormatBool(noFsync))
	c, l, err := startChildLine(ctx, cpu, 30*time.Second, "etcd", command[0], args...)
	if err != nil {
		return nil, "", err
	}
	ep, ok := strings.CutPrefix(l, "etcd client=")
	if !ok {
		_ = c.stop()
		return nil, "", fmt.Errorf("loadgen: the etcd command said %q", l)
	}
	return c, ep, nil
}

// startSignaling starts the signaling binary pinned to cpu on loopback
// port 0, without rate limit (every client is 127.0.0.1) and demo page,
// its log in logPath, and returns once its /readyz answers, with its HTTP
// URL and gRPC address from its -ready-file.
func startSignaling(ctx context.Context, cfg SetupsConfig, cpu int, etcd []string, logPath string) (*child, string, string, error) {
	readyFile := logPath + ".ready.json"
	defer os.Remove(readyFile)
	c, err := startChildLog(cpu, nil, logPath, cfg.SignalingBin,
		"-http-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-ready-file", readyFile, "-etcd-endpoints", strings.Join(etcd, ","),
		"-rate-limit", "0", "-no-demo-page", "-log-level", cfg.SignalingLogLevel)
	if err != nil {
		return nil, "", "", err
	}
	r, err := waitReady(ctx, c, "signaling", readyFile, 60*time.Second, func(r cli.Ready) string { return "http://" + r.HTTP })
	if err != nil {
		return nil, "", "", err
	}
	if cpu >= 0 {
		_ = pinProcess(c.pid(), cpu)
	}
	return c, "http://" + r.HTTP, r.GRPC, nil
}

// stopChild stops c and logs an unclean exit.
func stopChild(log *slog.Logger, name string, c *child) {
	if err := c.stop(); err != nil {
		log.Warn("loadgen: child did not exit cleanly", "child", name, "err", err, "stderr", lastLines(c.stderrTail(), 5))
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// echoOriginTTL is the lease of the echo origin's registration; it is
// refreshed every third of it.
const echoOriginTTL = 15 * time.Second

// registerEcho registers the echo origin's WHIP endpoint with signaling's
// OriginRegistry at grpcAddr as a WHIP origin
// ({base}/{stream}/whip, its UDP address as media address), keeps the
// registration alive, and returns a function that stops and deregisters.
func registerEcho(ctx context.Context, grpcAddr string, e *Echo, log *slog.Logger) (func(), error) {
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("loadgen: signaling gRPC: %w", err)
	}
	api := originv1.NewOriginRegistryClient(cc)
	base := "http://" + e.HTTPAddr()
	o := &originv1.Origin{
		Id: "load-echo-" + randomAlnum(6), Kind: originv1.OriginKind_ORIGIN_KIND_WHIP, ApiBaseUrl: base,
		WhipUrlTemplate: base + "/{stream}/whip", WhepUrlTemplate: base + "/{stream}/whep",
		MediaAddresses: []string{e.Addr().String()}, Ttl: durationpb.New(echoOriginTTL),
		Labels: map[string]string{"software": "rtcedge-load"},
	}
	register := func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := api.RegisterOrigin(rctx, &originv1.RegisterOriginRequest{Origin: o})
		return err
	}
	if err := register(ctx); err != nil {
		_ = cc.Close()
		return nil, fmt.Errorf("loadgen: registering the echo origin: %w", err)
	}
	log.Info("loadgen: echo origin registered", "origin", o.GetId(), "whip", o.GetWhipUrlTemplate())
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			sleep(hctx, echoOriginTTL/3)
			if hctx.Err() != nil {
				return
			}
			if err := register(hctx); err != nil && hctx.Err() == nil {
				log.Warn("loadgen: refreshing the echo origin's registration", "err", err)
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if _, err := api.DeregisterOrigin(dctx, &originv1.DeregisterOriginRequest{Id: o.GetId()}); err != nil {
			log.Warn("loadgen: deregistering the echo origin", "err", err)
		}
		_ = cc.Close()
	}, nil
}

// waitSetup posts offers to endpoint until one is answered 201 (and
// deletes that session), for at most 20s: the relay's registration may
// take a moment to reach signaling's cache.
func waitSetup(ctx context.Context, endpoint string, offer []byte, sig *child) error {
	tmpl, err := newOfferTemplate(offer)
	if err != nil {
		return err
	}
	r := &setupRunner{cfg: setupRun{timeout: 5 * time.Second}, http: &http.Client{Transport: &http.Transport{}}}
	defer r.http.CloseIdleConnections()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); sleep(ctx, 200*time.Millisecond) {
		if err := ctx.Err(); err != nil {
			return err
		}
		status, loc, body, err := r.do(ctx, http.MethodPost, endpoint, tmpl.fresh())
		if err != nil || status != http.StatusCreated {
			last = fmt.Sprintf("%d %v %s", status, err, strings.TrimSpace(string(body)))
			continue
		}
		u, _ := url.Parse(endpoint)
		ref, err := u.Parse(loc)
		if err != nil {
			return fmt.Errorf("loadgen: signaling's Location %q: %w", loc, err)
		}
		if status, _, body, err := r.do(ctx, http.MethodDelete, ref.String(), nil); err != nil || status != http.StatusOK {
			return fmt.Errorf("loadgen: the first DELETE failed: %d %v %s", status, err, body)
		}
		return nil
	}
	msg := fmt.Sprintf("loadgen: no setup through %s succeeded in 20s; the last answer: %s", endpoint, last)
	if sig != nil {
		msg += "; signaling's log ends: " + lastLines(sig.stderrTail(), 5)
	}
	return errors.New(msg)
}
