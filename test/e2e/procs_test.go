//go:build linux

package e2e

// A harness that runs rtcedge as real processes: the signaling, mediarelay
// and demo-origin binaries built from this tree and an etcd server built
// from tools/etcd, each with its output captured to a file that the test
// prints when it fails. Processes can be stopped, killed (SIGKILL), frozen
// (SIGSTOP/SIGCONT) and started again with the same command line, so the
// same data directory and relay id. Everything listens on 127.0.0.1, and
// every process is killed at the test's cleanup.
//
// No port is picked by the harness: every process binds port 0 and says
// what it got, the rtcedge binaries in their -ready-file (JSON, see
// cli.Ready), etcd in its log ("serving client traffic", "serving peer
// traffic"). A process started again gets the addresses its first run
// reported (pin), so a relay restarts on its port and etcd on its.
//
// The binaries are built once per `go test` run into a directory under the
// system temp dir named after the test process (dirs of dead test processes
// are removed the next time). The etcd server takes long to build cold, so
// it is cached across runs, keyed by tools/etcd/go.sum. RTCEDGE_E2E_BINDIR
// points at prebuilt signaling, mediarelay and demo-origin binaries instead;
// RTCEDGE_E2E_ETCD at a prebuilt etcd.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/testcerts"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// procBinaries are the paths of the built executables.
type procBinaries struct {
	signaling, relay, origin, etcd string
}

var (
	binsOnce sync.Once
	bins     procBinaries
	binsErr  error
)

// repoRoot is the module root (test/e2e is two levels down).
func repoRoot() string {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	return root
}

// buildBinaries builds the binaries once per test process and fails the test
// when a build fails.
func buildBinaries(t *testing.T) procBinaries {
	t.Helper()
	binsOnce.Do(func() { bins, binsErr = buildProcBinaries(t) })
	if binsErr != nil {
		t.Fatalf("building the binaries: %v", binsErr)
	}
	return bins
}

func buildProcBinaries(t *testing.T) (procBinaries, error) {
	if _, err := exec.LookPath("go"); err != nil {
		return procBinaries{}, fmt.Errorf("no go command: %w", err)
	}
	base := filepath.Join(os.TempDir(), "rtcedge-e2e-procs")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return procBinaries{}, err
	}
	removeStaleRunDirs(base)
	var b procBinaries
	if dir := os.Getenv("RTCEDGE_E2E_BINDIR"); dir != "" {
		b.signaling, b.relay, b.origin = filepath.Join(dir, "signaling"), filepath.Join(dir, "mediarelay"), filepath.Join(dir, "demo-origin")
	} else {
		dir := filepath.Join(base, "run-"+strconv.Itoa(os.Getpid()))
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/signaling", "./cmd/mediarelay", "./cmd/demo-origin")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
		}
		t.Logf("built signaling, mediarelay and demo-origin in %s", time.Since(start).Round(100*time.Millisecond))
		b.signaling, b.relay, b.origin = filepath.Join(dir, "signaling"), filepath.Join(dir, "mediarelay"), filepath.Join(dir, "demo-origin")
	}
	if p := os.Getenv("RTCEDGE_E2E_ETCD"); p != "" {
		b.etcd = p
		return b, nil
	}
	sum, err := os.ReadFile(filepath.Join(repoRoot(), "tools", "etcd", "go.sum"))
	if err != nil {
		return b, err
	}
	h := sha256.Sum256(sum)
	b.etcd = filepath.Join(base, "etcd-"+hex.EncodeToString(h[:8]))
	if _, err := os.Stat(b.etcd); err == nil {
		return b, nil
	}
	// Build next to the final path and rename, so a concurrent run never
	// executes a half-written binary.
	start := time.Now()
	tmp := fmt.Sprintf("%s.tmp%d", b.etcd, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "go.etcd.io/etcd/server/v3")
	cmd.Dir = filepath.Join(repoRoot(), "tools", "etcd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return b, fmt.Errorf("building etcd in tools/etcd: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, b.etcd); err != nil {
		return b, err
	}
	t.Logf("built the etcd server in %s (cached as %s)", time.Since(start).Round(100*time.Millisecond), b.etcd)
	return b, nil
}

// removeStaleRunDirs deletes the binaries of test processes that are gone.
func removeStaleRunDirs(base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "run-"))
		if !e.IsDir() || err != nil || !strings.HasPrefix(e.Name(), "run-") || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // still running (or the pid was reused: keep it, it is harmless)
		}
		_ = os.RemoveAll(filepath.Join(base, e.Name()))
	}
}

// anyPort is the listen address of every child: loopback, the port the
// kernel picks.
const anyPort = "127.0.0.1:0"

// startDeadline bounds how long a child may take to bind its listeners
// and report them; generous, for a loaded 2-core machine running the race
// detector.
const startDeadline = 60 * time.Second

// proc is one child process; start runs it again with the same command
// line, its output appended to the same log file.
type proc struct {
	t         *testing.T
	name      string
	bin       string
	args      []string
	log       string
	readyFile string // the -ready-file path, for the rtcedge binaries

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current run has exited
	waitErr error
}

// newProc starts bin and kills it at cleanup, printing its log when the
// test failed.
func newProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, bin: bin, args: args, log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- %s (%s %s) log, last lines ----\n%s", name, filepath.Base(bin), strings.Join(p.args, " "), tailLines(p.logs(), 80))
		}
	})
	p.start()
	return p
}

// newServiceProc is newProc for an rtcedge binary: it adds -ready-file, so
// waitReadyFile can learn the addresses the process bound.
func newServiceProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	ready := filepath.Join(t.TempDir(), name+".ready.json")
	p := newProc(t, name, bin, append([]string{"-" + cli.ReadyFileFlag, ready}, args...)...)
	p.readyFile = ready
	return p
}

// waitReadyFile waits up to d for the process to write its ready file and
// returns it, failing the test with the process's name and the tail of
// its log when it exits first or the deadline passes.
func (p *proc) waitReadyFile(d time.Duration) cli.Ready {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err := cli.ReadReadyFile(p.readyFile)
		if err == nil {
			return r
		}
		if !errors.Is(err, os.ErrNotExist) {
			p.t.Fatalf("%s: %v", p.name, err)
		}
		if !p.running() {
			p.t.Fatalf("%s exited before it reported its addresses (%s):\n%s", p.name, p.exitStatus(), tailLines(p.logs(), 30))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not report its addresses within %s:\n%s", p.name, d, tailLines(p.logs(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pin sets the value of flag in the command line (adding it when absent),
// so the next start uses it: a restart binds the address the first run
// reported.
func (p *proc) pin(flag, value string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i+1 < len(p.args); i++ {
		if p.args[i] == flag {
			p.args[i+1] = value
			return
		}
	}
	p.args = append(p.args, flag, value)
}

// exitStatus describes how the current run ended.
func (p *proc) exitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// start runs the process (again).
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			p.t.Fatalf("%s: start while running", p.name)
		}
	}
	if p.readyFile != "" {
		// A killed run leaves its file behind; the next run writes anew.
		if err := os.Remove(p.readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.t.Fatal(err)
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	// The child dies with the test process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("%s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited
}

// signal sends sig to the running process; false if it is not running.
func (p *proc) signal(sig syscall.Signal) bool {
	cmd, exited := p.current()
	if cmd == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
	}
	return cmd.Process.Signal(sig) == nil
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	if p.signal(syscall.SIGKILL) {
		_, exited := p.current()
		<-exited
	}
}

// stop sends SIGTERM and waits up to 30 s for the exit (the binaries give
// in-flight work 10 s), then kills.
func (p *proc) stop() {
	if !p.signal(syscall.SIGTERM) {
		return
	}
	_, exited := p.current()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s did not exit within 30s of SIGTERM; killing it", p.name)
		p.kill()
	}
}

// pause freezes the process (SIGSTOP); resume thaws it (SIGCONT).
func (p *proc) pause()  { p.signal(syscall.SIGSTOP) }
func (p *proc) resume() { p.signal(syscall.SIGCONT) }

// waitExit waits up to d for the process to exit by itself and returns its
// exit code (-1: still running after d, killed).
func (p *proc) waitExit(d time.Duration) int {
	_, exited := p.current()
	select {
	case <-exited:
	case <-time.After(d):
		p.kill()
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		return -1
	}
	return 0
}

// running reports whether the current run has not exited.
func (p *proc) running() bool {
	_, exited := p.current()
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// logs returns the process's output so far.
func (p *proc) logs() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls url until it answers 200, failing the test after d or when
// the process exits.
func (p *proc) waitHTTP(url string, client *http.Client, d time.Duration) {
	p.t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	deadline := time.Now().Add(d)
	last := ""
	for {
		if !p.running() {
			p.t.Fatalf("%s exited (%s) while waiting for %s:\n%s", p.name, p.exitStatus(), url, tailLines(p.logs(), 30))
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready after %s at %s: %s", p.name, d, url, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// etcdProc is an etcd server process on loopback with its own data dir.
type etcdProc struct {
	*proc
	endpoint string // http(s)://127.0.0.1:port
	certs    *testcerts.Files
}

// startEtcdProc starts a single-member etcd on port 0 and learns its
// client and peer addresses from its log; a restart (start) binds the
// same ones. With certs it serves clients over TLS and requires client
// certificates signed by certs.CA.
//
// The peer URL etcd advertises (and records in its data dir) stays
// http://127.0.0.1:0: a single member never dials it. The gRPC gateway is
// off, because it would dial the configured client address, port 0.
func startEtcdProc(t *testing.T, b procBinaries, certs *testcerts.Files) *etcdProc {
	t.Helper()
	scheme := "http"
	if certs != nil {
		scheme = "https"
	}
	client := scheme + "://" + anyPort
	peer := "http://" + anyPort
	args := []string{"--name", "e2e", "--data-dir", filepath.Join(t.TempDir(), "etcd-data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "e2e=" + peer,
		"--enable-grpc-gateway=false", "--unsafe-no-fsync", "--log-level", "info"}
	if certs != nil {
		args = append(args, "--cert-file", certs.ServerCert, "--key-file", certs.ServerKey,
			"--client-cert-auth", "--trusted-ca-file", certs.CA)
	}
	e := &etcdProc{proc: newProc(t, "etcd", b.etcd, args...), certs: certs}
	clientAddr, peerAddr := e.waitListening(startDeadline)
	e.endpoint = scheme + "://" + clientAddr
	e.pin("--listen-client-urls", e.endpoint)
	e.pin("--advertise-client-urls", e.endpoint)
	e.pin("--listen-peer-urls", "http://"+peerAddr)
	e.waitReady(startDeadline)
	return e
}

// waitListening waits until etcd's log names the client and peer
// addresses it serves on (the run's own lines: the log is appended to
// across restarts).
func (e *etcdProc) waitListening(d time.Duration) (client, peer string) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		logs := e.logs()
		if i := strings.LastIndex(logs, "\n==== "); i >= 0 {
			logs = logs[i:]
		}
		for _, l := range strings.Split(logs, "\n") {
			var line struct {
				Msg     string `json:"msg"`
				Address string `json:"address"`
			}
			if json.Unmarshal([]byte(l), &line) != nil || line.Address == "" {
				continue
			}
			switch {
			case strings.HasPrefix(line.Msg, "serving client traffic"):
				client = line.Address
			case line.Msg == "serving peer traffic":
				peer = line.Address
			}
		}
		if client != "" && peer != "" {
			return client, peer
		}
		if !e.running() {
			e.t.Fatalf("etcd exited before it served (%s):\n%s", e.exitStatus(), tailLines(e.logs(), 30))
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("etcd did not report its listeners within %s:\n%s", d, tailLines(e.logs(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsConfig is the client side of the etcd TLS (nil without TLS).
func (e *etcdProc) tlsConfig() *tls.Config {
	if e.certs == nil {
		return nil
	}
	cfg, err := registry.LoadTLS(e.certs.CA, e.certs.ClientCert, e.certs.ClientKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// waitReady polls etcd's /health.
func (e *etcdProc) waitReady(d time.Duration) {
	e.t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: e.tlsConfig()}}
	defer hc.CloseIdleConnections()
	e.waitHTTP(e.endpoint+"/health", hc, d)
}

// client returns an etcd client (TLS when etcd has it; user may be empty),
// closed at cleanup.
func (e *etcdProc) client(user, pass string) *clientv3.Client {
	e.t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.endpoint}, DialTimeout: 5 * time.Second,
		TLS: e.tlsConfig(), Username: user, Password: pass, Logger: zap.NewNop()})
	if err != nil {
		e.t.Fatalf("etcd client: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// registry returns a registry client on this etcd (default prefix, as the
// binaries use), closed at cleanup.
func (e *etcdProc) registry(user, pass string) *registry.Client {
	e.t.Helper()
	r, err := registry.New(registry.Config{Endpoints: []string{e.endpoint}, TLS: e.tlsConfig(), Username: user, Password: pass,
		DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second})
	if err != nil {
		e.t.Fatalf("registry client: %v", err)
	}
	e.t.Cleanup(func() { _ = r.Close() })
	return r
}

// etcdArgs are the -etcd-* flags of the service binaries for this etcd:
// TLS with the client certificate when it has TLS, and the user if set.
func (e *etcdProc) etcdArgs(user, pass string) []string {
	args := []string{"-etcd-endpoints", e.endpoint}
	if e.certs != nil {
		args = append(args, "-etcd-ca", e.certs.CA, "-etcd-cert", e.certs.ClientCert, "-etcd-key", e.certs.ClientKey)
	}
	if user != "" {
		args = append(args, "-etcd-username", user, "-etcd-password", pass)
	}
	return args
}

// relayProc is a mediarelay process.
type relayProc struct {
	*proc
	id    string
	udp   string // the public UDP address
	http  string // base URL of REST, /metrics, /readyz
	admin relayv1.RelayServiceClient
}

// startRelayProc starts a relay on loopback port 0 (UDP, gRPC and HTTP)
// and waits until it is registered (/readyz). It advertises the UDP
// address it bound (no -public-addr: a specific -udp-listen IP is what it
// advertises), and a restart (start) binds the same three addresses.
// etcdArgs are its -etcd-* flags.
func startRelayProc(t *testing.T, b procBinaries, id, zone string, etcdArgs []string) *relayProc {
	t.Helper()
	args := append([]string{"-relay-id", id, "-zone", zone, "-udp-listen", anyPort,
		"-grpc-listen", anyPort, "-http-listen", anyPort, "-socket-buffer", "1048576", "-log-level", "debug"}, etcdArgs...)
	p := newServiceProc(t, id, b.relay, args...)
	ready := p.waitReadyFile(startDeadline)
	if len(ready.UDP) != 1 || len(ready.Public) != 1 || ready.Public[0] != ready.UDP[0] || ready.GRPCAdvertise != ready.GRPC {
		t.Fatalf("%s reported %+v; want it to advertise the UDP and gRPC addresses it bound", id, ready)
	}
	p.pin("-udp-listen", ready.UDP[0])
	p.pin("-grpc-listen", ready.GRPC)
	p.pin("-http-listen", ready.HTTP)
	if len(ready.TCP) == 1 {
		// A restart binds the ICE-TCP port it had too (by default the UDP
		// port's number, which another process may hold).
		p.pin("-tcp-listen", ready.TCP[0])
	}
	cc, err := grpc.NewClient(ready.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	r := &relayProc{proc: p, id: id, udp: ready.UDP[0], http: "http://" + ready.HTTP,
		admin: relayv1.NewRelayServiceClient(cc)}
	t.Cleanup(func() {
		// Runs before the process is killed: what the relay saw.
		if t.Failed() && r.running() {
			ss, err := r.sessions(context.Background())
			for _, s := range ss {
				t.Logf("%s session %s %s %s client %s origin %s via %s: c2o %d o2c %d drops %v", id, s.Id, s.Direction, s.State,
					s.ClientAddress, s.OriginAddress, s.RelayAddress, s.ClientToOrigin.GetPackets(), s.OriginToClient.GetPackets(), s.Drops)
			}
			if err != nil {
				t.Logf("%s ListSessions: %v", id, err)
			}
		}
	})
	r.waitReady(startDeadline)
	return r
}

func (r *relayProc) waitReady(d time.Duration) { r.t.Helper(); r.waitHTTP(r.http+"/readyz", nil, d) }

// sessions lists the relay's sessions by id.
func (r *relayProc) sessions(ctx context.Context) (map[string]*relayv1.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := r.admin.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]*relayv1.Session{}
	for _, s := range resp.Sessions {
		out[s.Id] = s
	}
	return out, nil
}

// sigProc is a signaling process.
type sigProc struct {
	*proc
	url  string // http://127.0.0.1:port
	grpc string // host:port of the OriginRegistry
}

// startSignalingProc starts signaling without rate limit (every request of
// the test comes from 127.0.0.1), with a 1 s reaper that leaves orphans for
// 10 minutes (so they stay visible), and waits for /readyz.
// Extra flags come last and override.
func startSignalingProc(t *testing.T, b procBinaries, name, zone string, etcdArgs []string, extra ...string) *sigProc {
	t.Helper()
	args := append([]string{"-http-listen", anyPort, "-grpc-listen", anyPort, "-zone", zone, "-rate-limit", "0",
		"-reap-interval", "1s", "-orphan-grace", "10m", "-no-demo-page"}, etcdArgs...)
	args = append(args, extra...)
	p := newServiceProc(t, name, b.signaling, args...)
	ready := p.waitReadyFile(startDeadline)
	p.pin("-http-listen", ready.HTTP)
	p.pin("-grpc-listen", ready.GRPC)
	s := &sigProc{proc: p, url: "http://" + ready.HTTP, grpc: ready.GRPC}
	s.waitHTTP(s.url+"/readyz", nil, startDeadline)
	return s
}

// metric reads one unlabelled sample of signaling's /metrics (-1 when
// absent).
func (s *sigProc) metric(name string) float64 {
	s.t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// originProc is a demo-origin process registered through a signaling
// instance.
type originProc struct {
	*proc
	url string
}

// startOriginProc starts a demo origin with a 15 s lease, or ttl.
func startOriginProc(t *testing.T, b procBinaries, id string, registerVia *sigProc, ttl ...time.Duration) *originProc {
	t.Helper()
	lease := 15 * time.Second
	if len(ttl) > 0 {
		lease = ttl[0]
	}
	p := newServiceProc(t, id, b.origin, "-http-listen", anyPort, "-media-listen", anyPort,
		"-signaling-grpc", registerVia.grpc, "-origin-id", id, "-ttl", lease.String())
	ready := p.waitReadyFile(startDeadline)
	p.pin("-http-listen", ready.HTTP)
	p.pin("-media-listen", ready.UDP[0])
	o := &originProc{proc: p, url: "http://" + ready.HTTP}
	o.waitHTTP(o.url+"/healthz", nil, startDeadline)
	return o
}

// procStack is a running multi-process edge.
type procStack struct {
	bins   procBinaries
	etcd   *etcdProc
	reg    *registry.Client
	relays []*relayProc
	sigs   []*sigProc
	origin *originProc
}

// startProcStack starts etcd, the relays (relay-1 in zone a, relay-2 in
// zone b, ...), the signaling instances (sig-a, sig-b, ...) and one demo
// origin registered through the first signaling, and waits until the
// registry shows every relay and the origin.
func startProcStack(t *testing.T, relays, sigs int) *procStack {
	t.Helper()
	b := buildBinaries(t)
	s := &procStack{bins: b, etcd: startEtcdProc(t, b, nil)}
	s.reg = s.etcd.registry("", "")
	zones := []string{"a", "b", "c"}
	for i := range relays {
		s.relays = append(s.relays, startRelayProc(t, b, fmt.Sprintf("relay-%d", i+1), zones[i], s.etcd.etcdArgs("", "")))
	}
	for i := range sigs {
		s.sigs = append(s.sigs, startSignalingProc(t, b, "sig-"+zones[i], zones[i], s.etcd.etcdArgs("", "")))
	}
	s.origin = startOriginProc(t, b, "demo-origin", s.sigs[0])
	waitFor(t, startDeadline, "every relay and the origin registered", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		rs, err := s.reg.ListRelays(ctx)
		origins, err2 := s.reg.ListOrigins(ctx)
		return err == nil && err2 == nil && len(rs) == relays && len(origins) == 1
	})
	return s
}

// postOffer POSTs a fresh (never connected) offer and returns the status,
// the Retry-After header and the Location.
func postOffer(t *testing.T, ctx context.Context, endpoint string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(offerSDP(t, ctx)))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if loc != "" && strings.HasPrefix(loc, "/") {
		i := strings.Index(endpoint[len("http://"):], "/")
		loc = endpoint[:len("http://")+i] + loc
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), loc
}
