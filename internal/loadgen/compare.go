//go:build linux

package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// CompareConfig configures Compare.
type CompareConfig struct {
	// CForwardBin is the C forwarder binary; empty compiles CForwardSrc
	// with gcc into a temporary directory.
	CForwardBin, CForwardSrc string
	// RelayBin is the mediarelay binary; empty builds ./cmd/mediarelay
	// from RepoDir with `go build`.
	RelayBin, RepoDir string
	// Targets are the targets to run for each session count, in order;
	// default cforward then relay.
	Targets []string
	// Transports are the client transports each target runs with, in
	// order (TransportUDP, TransportTCP); default UDP. The C forwarder
	// runs over UDP only.
	Transports []string
	// SessionsList are the session counts.
	SessionsList []int
	// TotalRate is the packets per second of all sessions together in
	// paced mode: each session sends TotalRate/sessions. Rate, when set,
	// is the per-session rate instead; Window > 0 with neither runs closed
	// loop.
	TotalRate, Rate float64
	Window          int
	// Idle sends no traffic after the setup: memory (and idle CPU) only.
	Idle bool
	// Warmup, Duration and Size are as in Config.
	Warmup, Duration time.Duration
	Size             int
	// CPUTool and CPUTarget pin this process and the target processes;
	// negative leaves them unpinned.
	CPUTool, CPUTarget int
	// SocketBuffer is the targets' SO_RCVBUF/SO_SNDBUF; default 4 MiB.
	SocketBuffer int
	// RelayArgs are more flags for the relay binary, after the tool's own
	// (e.g. -data-plane-threads 2).
	RelayArgs []string
	// Logger is nil for slog.Default().
	Logger *slog.Logger
}

// Compare runs each target as a fresh child process for each session count
// and returns the results in order: an embedded etcd (the relay needs one)
// and the echo origin run in this process.
func Compare(ctx context.Context, cfg CompareConfig) ([]*Result, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Targets) == 0 {
		cfg.Targets = []string{TargetCForward, TargetRelay}
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = []string{TransportUDP}
	}
	for _, t := range cfg.Transports {
		if t != TransportUDP && t != TransportTCP {
			return nil, fmt.Errorf("loadgen: transport %q: want %s or %s", t, TransportUDP, TransportTCP)
		}
	}
	if cfg.SocketBuffer == 0 {
		cfg.SocketBuffer = 4 << 20
	}
	if cfg.RepoDir == "" {
		cfg.RepoDir = "."
	}
	log := cfg.Logger
	if cfg.CPUTool >= 0 {
		if err := pinProcess(0, cfg.CPUTool); err != nil {
			return nil, err
		}
		// One core: more Ps would only make threads preempt each other
		// in scheduler time slices (milliseconds of added RTT).
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	tmp, err := os.MkdirTemp("", "rtcedge-load-")
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	defer os.RemoveAll(tmp)

	needs := map[string]bool{}
	for _, t := range cfg.Targets {
		needs[t] = true
	}
	if needs[TargetCForward] && cfg.CForwardBin == "" {
		if cfg.CForwardBin, err = BuildCForward(ctx, cfg.CForwardSrc, filepath.Join(tmp, "cforward")); err != nil {
			return nil, err
		}
	}
	var etcd *embedetcd.Server
	if needs[TargetRelay] {
		if cfg.RelayBin == "" {
			cfg.RelayBin = filepath.Join(tmp, "mediarelay")
			log.Info("loadgen: building the relay", "out", cfg.RelayBin)
			cmd := exec.CommandContext(ctx, "go", "build", "-o", cfg.RelayBin, "./cmd/mediarelay")
			cmd.Dir = cfg.RepoDir
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("loadgen: go build ./cmd/mediarelay: %w\n%s", err, out)
			}
		}
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		etcd, err = embedetcd.Start(ctx, embedetcd.Config{UnsafeNoFsync: true, Logger: quiet})
		if err != nil {
			return nil, fmt.Errorf("loadgen: starting etcd: %w", err)
		}
		defer etcd.Close()
	}
	echo, err := NewEcho(EchoConfig{Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		return nil, err
	}
	defer echo.Close()

	var results []*Result
	for _, n := range cfg.SessionsList {
		for _, target := range cfg.Targets {
			for _, transport := range cfg.Transports {
				if transport != TransportUDP && target != TargetRelay {
					continue // only the relay has an ICE-TCP port
				}
				if err := ctx.Err(); err != nil {
					return results, err
				}
				res, err := compareOne(ctx, cfg, etcd, echo, target, transport, n)
				if err != nil {
					return results, err
				}
				results = append(results, res)
			}
		}
	}
	return results, nil
}

// compareOne starts a fresh target process and runs n sessions of
// transport against it.
func compareOne(ctx context.Context, cfg CompareConfig, etcd *embedetcd.Server, echo *Echo, target, transport string, n int) (*Result, error) {
	log := cfg.Logger
	run := Config{
		Target: target, Transport: transport, Origin: echo.Addr(), OriginUfrag: echo.Ufrag(), OriginPwd: echo.Pwd(),
		Sessions: n, Rate: cfg.Rate, Window: cfg.Window, Idle: cfg.Idle, Warmup: cfg.Warmup, Duration: cfg.Duration,
		Size: cfg.Size, Logger: log,
	}
	if run.Rate == 0 && run.Window == 0 {
		run.Rate = cfg.TotalRate / float64(n)
	}
	var c *child
	var err error
	switch target {
	case TargetCForward:
		c, run.Addr, err = startCForward(ctx, cfg, echo.Addr())
	case TargetRelay:
		c, run.RelayGRPC, err = startRelay(ctx, cfg, etcd.Endpoints(), n)
	default:
		err = fmt.Errorf("loadgen: compare cannot start target %q", target)
	}
	if err != nil {
		return nil, err
	}
	run.PID = c.pid()
	log.Info("loadgen: running", "target", target, "transport", transport, "sessions", n, "rate_per_session", run.Rate,
		"idle", run.Idle, "pid", run.PID)
	res, err := Run(ctx, run)
	stopErr := c.stop()
	if err != nil {
		return nil, fmt.Errorf("loadgen: %s over %s with %d sessions: %w (target stderr: %s)", target, transport, n, err, c.stderrTail())
	}
	if stopErr != nil {
		log.Warn("loadgen: target did not exit cleanly", "target", target, "err", stopErr, "stderr", c.stderrTail())
	}
	if tail := c.stderrTail(); tail != "" {
		log.Debug("loadgen: target stderr", "target", target, "stderr", tail)
	}
	return res, nil
}

// BuildCForward compiles the C forwarder src (default
// test/cforward/cforward.c) to out with gcc.
func BuildCForward(ctx context.Context, src, out string) (string, error) {
	if src == "" {
		src = filepath.Join("test", "cforward", "cforward.c")
	}
	cmd := exec.CommandContext(ctx, "gcc", "-O2", "-Wall", "-Wextra", "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("loadgen: gcc %s: %w\n%s", src, err, b)
	}
	return out, nil
}

// child is a target process.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // after done
	mu     sync.Mutex
	stderr []byte // its last 8 KiB
	// logPath, when set, is the file its stderr goes to instead.
	logPath string
}

func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stderr = append(c.stderr, p...)
	if len(c.stderr) > 8<<10 {
		c.stderr = c.stderr[len(c.stderr)-8<<10:]
	}
	return len(p), nil
}

func (c *child) stderrTail() string {
	if c.logPath != "" {
		b, err := os.ReadFile(c.logPath)
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(string(b[max(0, len(b)-8<<10):]))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(string(c.stderr))
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// startChild starts bin pinned to cpu (when >= 0) with taskset, or with
// sched_setaffinity right after it starts when taskset is missing.
func startChild(cpu int, stdout io.Writer, bin string, args ...string) (*child, error) {
	return startChildLog(cpu, stdout, "", bin, args...)
}

// startChildLog is startChild with the child's stderr written to the file
// logPath (created or truncated) when it is not empty: the child writes
// it itself, costing this process nothing.
func startChildLog(cpu int, stdout io.Writer, logPath, bin string, args ...string) (*child, error) {
	name, argv := bin, args
	taskset, lookErr := exec.LookPath("taskset")
	if cpu >= 0 && lookErr == nil {
		name, argv = taskset, append([]string{"-c", strconv.Itoa(cpu), bin}, args...)
	}
	c := &child{done: make(chan struct{}), logPath: logPath}
	c.cmd = exec.Command(name, argv...)
	c.cmd.Stdout = stdout
	c.cmd.Stderr = c
	// The child dies with this process, whatever happens to it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
		defer f.Close() // the child has its own descriptor once started
		c.cmd.Stderr = f
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadgen: starting %s: %w", bin, err)
	}
	if cpu >= 0 && lookErr != nil {
		_ = pinProcess(c.pid(), cpu)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM and waits up to 15s before killing.
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
		return c.err
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
		return errors.New("loadgen: killed after 15s")
	}
}

// waitReady waits until child c (an rtcedge binary started with
// -ready-file path) has written path, then until url+"/readyz" answers 200
// (url derived from the file by readyURL), all within timeout; it stops c
// on a failure. name is for errors.
func waitReady(ctx context.Context, c *child, name, path string, timeout time.Duration, readyURL func(cli.Ready) string) (cli.Ready, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var r cli.Ready
	haveFile := false
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return r, fmt.Errorf("loadgen: %s exited: %v: %s", name, c.err, c.stderrTail())
		case <-ctx.Done():
			_ = c.stop()
			return r, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if !haveFile {
			var err error
			if r, err = cli.ReadReadyFile(path); err != nil {
				continue
			}
			haveFile = true
		}
		resp, err := hc.Get(readyURL(r) + "/readyz")
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return r, nil
		}
	}
	_ = c.stop()
	return r, fmt.Errorf("loadgen: %s was not ready in %s: %s", name, timeout, c.stderrTail())
}

// startCForward starts the C forwarder toward origin, pinned to
// cfg.CPUTarget, and returns once it listens, with its address.
func startCForward(ctx context.Context, cfg CompareConfig, origin netip.AddrPort) (*child, netip.AddrPort, error) {
	c, l, err := startChildLine(ctx, cfg.CPUTarget, 30*time.Second, "cforward", cfg.CForwardBin,
		"-l", "127.0.0.1:0", "-o", origin.String(), "-b", strconv.Itoa(cfg.SocketBuffer))
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	a, ok := strings.CutPrefix(l, "cforward listening on ")
	ap, err := netip.ParseAddrPort(a)
	if !ok || err != nil {
		_ = c.stop()
		return nil, netip.AddrPort{}, fmt.Errorf("loadgen: cforward said %q", l)
	}
	return c, ap, nil
}

// startChildLine starts bin pinned to cpu (as startChild) and returns once
// it has printed its first line on stdout, with that line; the child is
// stopped if it prints nothing within timeout. name is for errors.
func startChildLine(ctx context.Context, cpu int, timeout time.Duration, name, bin string, args ...string) (*child, string, error) {
	pr, pw := io.Pipe()
	c, err := startChild(cpu, pw, bin, args...)
	if err != nil {
		_ = pw.Close()
		return nil, "", err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		first := true
		for sc.Scan() { // drain stdout until the child exits
			if first {
				lines <- sc.Text()
				first = false
			}
		}
	}()
	go func() {
		<-c.done
		_ = pw.Close()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l := <-lines:
		return c, l, nil
	case <-c.done:
		return nil, "", fmt.Errorf("loadgen: %s exited: %v: %s", name, c.err, c.stderrTail())
	case <-t.C:
		_ = c.stop()
		return nil, "", fmt.Errorf("loadgen: %s did not start in %s", name, timeout)
	case <-ctx.Done():
		_ = c.stop()
		return nil, "", ctx.Err()
	}
}

// startRelay starts the relay binary, pinned, on loopback port 0
// everywhere (it advertises the UDP address it bound, and its ICE-TCP
// port, which takes n connections from the load tool's one IP), and
// returns once its /readyz answers, with its gRPC address from its
// -ready-file.
func startRelay(ctx context.Context, cfg CompareConfig, etcd []string, n int) (*child, string, error) {
	dir, err := os.MkdirTemp("", "rtcedge-load-relay-")
	if err != nil {
		return nil, "", fmt.Errorf("loadgen: %w", err)
	}
	defer os.RemoveAll(dir)
	readyFile := filepath.Join(dir, "ready.json")
	// Every ICE-TCP client connects from 127.0.0.1: the per-IP limit is the
	// total one, at least the relay's default total (4096).
	tcpLimit := strconv.Itoa(max(n, 4096))
	c, err := startChild(cfg.CPUTarget, io.Discard, cfg.RelayBin, append([]string{
		"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0", "-ready-file", readyFile,
		"-etcd-endpoints", strings.Join(etcd, ","), "-relay-id", "load-" + strconv.Itoa(n) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"-socket-buffer", strconv.Itoa(cfg.SocketBuffer), "-log-level", "warn",
		"-tcp-max-conns", tcpLimit, "-tcp-max-conns-per-ip", tcpLimit}, cfg.RelayArgs...)...)
	if err != nil {
		return nil, "", err
	}
	r, err := waitReady(ctx, c, "the relay", readyFile, 60*time.Second, func(r cli.Ready) string { return "http://" + r.HTTP })
	if err != nil {
		return nil, "", err
	}
	if cfg.CPUTarget >= 0 {
		_ = pinProcess(c.pid(), cfg.CPUTarget)
	}
	return c, r.GRPC, nil
}
