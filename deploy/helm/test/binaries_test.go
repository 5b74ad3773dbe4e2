package charttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rtcedge/rtcedge/internal/cli"
)

// binDir holds the binaries built for this test process (TestMain removes
// it).
var binDir string

var (
	buildOnce sync.Once
	buildErr  error
)

// binary returns the path of an rtcedge binary built from this checkout
// (signaling, mediarelay, demo-origin: the images' /app).
func binary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/signaling", "./cmd/mediarelay", "./cmd/demo-origin")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/...: %w\n%s", err, out)
			return
		}
		t.Logf("built signaling, mediarelay and demo-origin in %s", time.Since(start).Round(100*time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

var (
	flagsMu    sync.Mutex
	flagsCache = map[string]map[string]bool{}
	envInUsage = regexp.MustCompile(`\(env (RTCEDGE_[A-Z0-9_]+)\)`)
)

// flagEnv is the set of RTCEDGE_* variables a binary reads: the "(env X)"
// of every flag in its -help.
func flagEnv(t *testing.T, name string) map[string]bool {
	t.Helper()
	flagsMu.Lock()
	defer flagsMu.Unlock()
	if m, ok := flagsCache[name]; ok {
		return m
	}
	cmd := exec.Command(binary(t, name), "-help")
	cmd.Env = []string{} // nothing from this process's environment
	out, _ := cmd.CombinedOutput()
	m := map[string]bool{}
	for _, match := range envInUsage.FindAllStringSubmatch(string(out), -1) {
		m[match[1]] = true
	}
	if len(m) < 5 {
		t.Fatalf("%s -help lists %d variables:\n%s", name, len(m), out)
	}
	flagsCache[name] = m
	return m
}

// listener is what one named container port is on a binary: the variable
// (flag) that sets its address, its protocol, and its key in the ready file.
type listener struct {
	env      string
	protocol corev1.Protocol
	ready    func(cli.Ready) string
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// listeners maps each binary's container port names to its flags. A port
// the chart declares that is not here fails the test.
var listeners = map[string]map[string]listener{
	"signaling": {
		"http": {env: "RTCEDGE_HTTP_LISTEN", protocol: corev1.ProtocolTCP, ready: func(r cli.Ready) string { return r.HTTP }},
		"grpc": {env: "RTCEDGE_GRPC_LISTEN", protocol: corev1.ProtocolTCP, ready: func(r cli.Ready) string { return r.GRPC }},
	},
	"mediarelay": {
		"media-udp": {env: "RTCEDGE_UDP_LISTEN", protocol: corev1.ProtocolUDP, ready: func(r cli.Ready) string { return first(r.UDP) }},
		"media-tcp": {env: "RTCEDGE_TCP_LISTEN", protocol: corev1.ProtocolTCP, ready: func(r cli.Ready) string { return first(r.TCP) }},
		"grpc":      {env: "RTCEDGE_GRPC_LISTEN", protocol: corev1.ProtocolTCP, ready: func(r cli.Ready) string { return r.GRPC }},
		"http":      {env: "RTCEDGE_HTTP_LISTEN", protocol: corev1.ProtocolTCP, ready: func(r cli.Ready) string { return r.HTTP }},
	},
	"demo-origin": {
		"http":  {env: "RTCEDGE_HTTP_LISTEN", protocol: corev1.ProtocolTCP, ready: func(r cli.Ready) string { return r.HTTP }},
		"media": {env: "RTCEDGE_MEDIA_LISTEN", protocol: corev1.ProtocolUDP, ready: func(r cli.Ready) string { return first(r.UDP) }},
	},
}

// podFields are the downward-API values of the pod the tests pretend to
// be: everything on loopback.
func podFields(node string) map[string]string {
	return map[string]string{"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "spec.nodeName": node, "metadata.name": "pod-0"}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// resolveEnv computes a container's environment as the kubelet does:
// downward-API fields from fields, secret keys from secrets (name → key →
// value; a Secret not in it is not the chart's, and its variables are
// left out), and $(VAR) references to variables defined earlier. A
// reference to an undefined or later variable, or a missing key of a
// chart's Secret that is not optional, is an error.
func resolveEnv(c corev1.Container, fields map[string]string, secrets map[string]map[string]string) (map[string]string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			var bad error
			env[e.Name] = varRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				name := varRef.FindStringSubmatch(ref)[1]
				v, ok := env[name]
				if !ok {
					bad = fmt.Errorf("%s=%q refers to $(%s), which is not defined before it (the kubelet would leave it as is)", e.Name, e.Value, name)
				}
				return v
			})
			if bad != nil {
				return nil, bad
			}
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("%s: field %s is not one the tests know", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			data, ours := secrets[ref.Name]
			if !ours {
				continue
			}
			v, ok := data[ref.Key]
			switch {
			case ok:
				env[e.Name] = v
			case ref.Optional == nil || !*ref.Optional:
				return nil, fmt.Errorf("%s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
		default:
			return nil, fmt.Errorf("%s: a valueFrom the tests do not know", e.Name)
		}
	}
	return env, nil
}

// portOf returns the port of a listen address with $(VAR)s already
// resolved: ":8000", "127.0.0.1:9090".
func portOf(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return int32(n), err
}

// proc is a binary started by a test.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// lockedBuffer is a bytes.Buffer written by a child's output copier and
// read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs bin with exactly env (and no other RTCEDGE_* variable) and
// stops it at cleanup, printing its output when the test failed.
func start(t *testing.T, name, bin string, args []string, env map[string]string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(env)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.stop(30 * time.Second)
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, out.String())
		}
	})
	return p
}

// stop sends SIGTERM (what the kubelet sends) and waits up to grace for
// the process to exit, killing it then; it returns the exit error, or an
// error saying it had to be killed.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, grace)
	}
}

// waitReadyFile waits for a process's ready file.
func waitReadyFile(t *testing.T, p *proc, path string) cli.Ready {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if r, err := cli.ReadReadyFile(path); err == nil {
			return r
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s ready file: %v", p.name, err)
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready: %v", p.name, p.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s wrote no ready file within 60s", p.name)
		}
	}
}

// runCmd runs a command to its end, bounded by ctx, with exactly env's
// RTCEDGE_* variables.
func runCmd(ctx context.Context, argv []string, env map[string]string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = childEnv(env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// childEnv is this process's environment without its RTCEDGE_* variables,
// plus env.
func childEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RTCEDGE_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// probePort finds the listener of bin a rendered probe port names: a
// declared port's name, or a number, which must be the port of a listener
// the rendered environment env configures (a pod that declares no ports:
// relay.upgrade=takeover). It returns the listener's name.
func probePort(bin string, env map[string]string, port intstr.IntOrString) (string, error) {
	if port.Type == intstr.String {
		if _, ok := listeners[bin][port.StrVal]; !ok {
			return "", fmt.Errorf("port %q is no listener of %s", port.StrVal, bin)
		}
		return port.StrVal, nil
	}
	for name, l := range listeners[bin] {
		if v, set := env[l.env]; set && v != "off" {
			if n, err := portOf(v); err == nil && n == port.IntVal {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("port %d is not where any listener of %s is (%s)", port.IntVal, bin, strings.Join(listenerEnv(bin, env), ", "))
}

// listenerEnv lists the listen variables env sets for bin, for messages.
func listenerEnv(bin string, env map[string]string) []string {
	var out []string
	for _, l := range listeners[bin] {
		if v, set := env[l.env]; set {
			out = append(out, l.env+"="+v)
		}
	}
	slices.Sort(out)
	return out
}

// listenPorts are the ports a container's binary listens on by its
// rendered environment env (ICE-TCP off is none), as container ports named
// like the chart names them: what a container that declares no ports
// (relay.upgrade=takeover) still serves on the node.
func listenPorts(bin string, env map[string]string) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for name, l := range listeners[bin] {
		v, set := env[l.env]
		if !set || v == "off" {
			continue
		}
		if n, err := portOf(v); err == nil {
			out = append(out, corev1.ContainerPort{Name: name, ContainerPort: n, Protocol: l.protocol})
		}
	}
	slices.SortFunc(out, func(a, b corev1.ContainerPort) int { return strings.Compare(a.Name, b.Name) })
	return out
}
