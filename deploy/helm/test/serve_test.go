package charttest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/internal/cli"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// pod is a rendered container run as a process: its resolved environment
// with the listeners moved to loopback port 0, its ready file and addresses.
type pod struct {
	bin   string
	c     corev1.Container
	env   map[string]string
	ready cli.Ready
	proc  *proc
	grace time.Duration
}

// TestRenderedPodsServe starts the real binaries with the environment the
// chart renders (listeners on loopback port 0, a real embedded etcd),
// calls every rendered probe on the port it names, runs the relay's
// rendered preStop command against the relay with a session, and checks
// that each process exits within its rendered grace period after SIGTERM.
func TestRenderedPodsServe(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	// A short grace period, so that the drain's deadline comes within the
	// test: the rendered command is otherwise the same.
	short := []string{"--set", "relay.terminationGracePeriodSeconds=40,relay.drainMarginSeconds=35"}
	tests := []rendering{
		{name: "default with the demo origin", args: append([]string{"--set", "demoOrigin.enabled=true"}, short...)},
		{name: "examples/host-network.yaml, drain", args: append([]string{"-f", filepath.Join(examplesDir, "host-network.yaml"), "--set", "relay.upgrade=drain"}, short...)},
	}
	binary(t, "mediarelay") // built once, before the subtests run side by side
	for i, r := range tests {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel() // the drains wait for their deadlines side by side
			objs := render(t, r)
			node := fmt.Sprintf("node-%d", i)
			secrets := chartSecrets(objs)
			containers := rtcedgeContainers(objs)
			sig := startPod(t, objs, containers["signaling"][0], "signaling", node, secrets, etcd.Endpoints()[0], nil)
			relay := startPod(t, objs, containers["mediarelay"][0], "mediarelay", node, secrets, etcd.Endpoints()[0], nil)
			var origin *pod
			if cs := containers["demo-origin"]; len(cs) == 1 {
				// The Service name the chart gives it is signaling's gRPC here.
				origin = startPod(t, objs, cs[0], "demo-origin", node, secrets, etcd.Endpoints()[0],
					map[string]string{"RTCEDGE_SIGNALING_GRPC": sig.ready.GRPC})
			}
			for _, p := range []*pod{sig, relay, origin} {
				if p != nil {
					checkProbes(t, p)
				}
			}
			if origin != nil {
				checkRegistered(t, sig, origin)
			}
			checkPreStopDrains(t, relay, i)
			for _, p := range []*pod{origin, relay, sig} {
				if p == nil {
					continue
				}
				if err := p.proc.stop(p.grace); err != nil {
					t.Errorf("%s after SIGTERM (grace period %s): %v", p.bin, p.grace, err)
				}
			}
		})
	}
}

// startPod starts a rendered container's binary as the kubelet would,
// except where a cluster is needed: listeners on 127.0.0.1 port 0, the
// embedded etcd, emptyDir mounts in a temporary directory, the public
// address 127.0.0.1 instead of a Node's ExternalIP (no API server here:
// cmd/mediarelay's tests read a Node), and what the relay would advertise
// for gRPC (the pod IP and the rendered port) left to the bound address.
// override replaces variables after that.
func startPod(t *testing.T, objs []object, c corev1.Container, bin, node string, secrets map[string]map[string]string, etcd string, override map[string]string) *pod {
	t.Helper()
	env, err := resolveEnv(c, podFields(node), secrets)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range listeners[bin] {
		if v, set := env[l.env]; set && v != "off" {
			env[l.env] = "127.0.0.1:0"
		}
	}
	env["RTCEDGE_ETCD_ENDPOINTS"] = etcd
	if _, ok := env["RTCEDGE_PUBLIC_ADDR_FROM_NODE"]; ok {
		delete(env, "RTCEDGE_PUBLIC_ADDR_FROM_NODE")
		env["RTCEDGE_PUBLIC_ADDR"] = "127.0.0.1"
	}
	delete(env, "RTCEDGE_GRPC_ADVERTISE")
	delete(env, "RTCEDGE_ADVERTISE_URL")
	// emptyDir mounts become temporary directories.
	spec := podOf(t, objs, c.Name)
	dir := t.TempDir()
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				for k, val := range env {
					if rest, ok := strings.CutPrefix(val, m.MountPath+"/"); ok {
						env[k] = filepath.Join(dir, m.Name, rest)
					}
				}
			}
		}
	}
	if env["RTCEDGE_READY_FILE"] == "" {
		env["RTCEDGE_READY_FILE"] = filepath.Join(dir, "ready.json")
	}
	maps.Copy(env, override)
	if err := os.MkdirAll(filepath.Dir(env["RTCEDGE_READY_FILE"]), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &pod{bin: bin, c: c, env: env, grace: 30 * time.Second}
	if spec.TerminationGracePeriodSeconds != nil {
		p.grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	p.proc = start(t, bin, binary(t, bin), c.Args, env)
	p.ready = waitReadyFile(t, p.proc, env["RTCEDGE_READY_FILE"])
	return p
}

// podOf finds the pod spec holding the container named name.
func podOf(t *testing.T, objs []object, name string) *corev1.PodSpec {
	t.Helper()
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			if c.Name == name {
				return p.spec
			}
		}
	}
	t.Fatalf("no pod has container %s", name)
	return nil
}

// probeURL is the URL a rendered HTTP probe calls on p.
func probeURL(t *testing.T, p *pod, probe *corev1.Probe) string {
	t.Helper()
	g := probe.HTTPGet
	// The rendered environment says which listener a port number is; the
	// process listens on port 0 of loopback instead.
	env, err := resolveEnv(p.c, podFields("node-a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	name, err := probePort(p.bin, env, g.Port)
	if err != nil {
		t.Fatalf("%s probe: %v", p.bin, err)
	}
	l := listeners[p.bin][name]
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + l.ready(p.ready) + g.Path
}

// checkProbes calls every probe of p until it answers 200 (readiness may
// wait for the registration in etcd).
func checkProbes(t *testing.T, p *pod) {
	t.Helper()
	for _, pr := range probes(p.c) {
		url := probeURL(t, p, pr.probe)
		if code := waitHTTP(t, url, http.StatusOK); code != http.StatusOK {
			t.Errorf("%s %s probe GET %s = %d, want 200", p.bin, pr.kind, url, code)
		} else {
			t.Logf("%s %s probe: GET %s: 200", p.bin, pr.kind, url)
		}
	}
}

// waitHTTP GETs url until it answers want, for at most 60 s, and returns
// the last status.
func waitHTTP(t *testing.T, url string, want int) int {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	got := 0
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := hc.Get(url)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if got = resp.StatusCode; got == want {
			break
		}
	}
	return got
}

// checkPreStopDrains allocates a session on the relay and runs the
// rendered preStop command with the container's environment: the relay
// turns unready, takes no new session, and the command returns once the
// drain deadline released the session. tag keeps its sessions' ICE
// credentials apart from other relays' in the shared etcd.
func checkPreStopDrains(t *testing.T, relay *pod, tag int) {
	t.Helper()
	conn, err := grpc.NewClient(relay.ready.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer.Token(relay.env["RTCEDGE_ADMIN_TOKEN"])))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := relayv1.NewRelayServiceClient(conn)
	alloc := func(n int) error { return allocSession(t, client, tag, n) }
	if err := alloc(1); err != nil {
		t.Fatalf("AllocateSession: %v", err)
	}
	readyz := probeURL(t, relay, relay.c.ReadinessProbe)

	cmd := relay.c.Lifecycle.PreStop.Exec.Command
	argv := append([]string{binary(t, "mediarelay")}, cmd[1:]...) // /app is the image's binary
	deadline, _ := time.ParseDuration(cmd[len(cmd)-2])
	ctx, cancel := context.WithTimeout(t.Context(), relay.grace)
	defer cancel()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		out, err := runCmd(ctx, argv, relay.env)
		done <- result{out, err}
	}()
	// Unready from the drain on, while the session stays until the deadline.
	if code := waitHTTP(t, readyz, http.StatusServiceUnavailable); code != http.StatusServiceUnavailable {
		t.Fatalf("readiness %s = %d while draining, want 503", readyz, code)
	}
	st, err := client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil || !st.GetDraining() {
		t.Fatalf("GetStatus while the preStop runs: %v %v", st, err)
	}
	t.Logf("readiness 503 after %s with %d sessions open", time.Since(start).Round(time.Millisecond), st.GetSessionCount())
	if err := alloc(2); err == nil {
		t.Error("the draining relay took a new session")
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("preStop %v: %v\n%s", cmd, res.err, res.out)
	}
	took := time.Since(start)
	t.Logf("preStop %v returned after %s:\n%s", cmd, took.Round(time.Millisecond), res.out)
	if !strings.Contains(res.out, "draining with 1 sessions") || !strings.Contains(res.out, "no session left") {
		t.Errorf("preStop output %q: want the session it found and its end", res.out)
	}
	if took < deadline {
		t.Errorf("preStop returned after %s, before its -deadline %s released the session", took, deadline)
	}
	st, err = client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil || st.GetSessionCount() != 0 {
		t.Fatalf("after the preStop: %v %v, want no session", st, err)
	}
}

// checkRegistered: the demo origin registered with signaling, with the
// token the chart gives both (signaling's REST lists it to that token).
func checkRegistered(t *testing.T, sig, origin *pod) {
	t.Helper()
	id := origin.env["RTCEDGE_ORIGIN_ID"]
	req, err := http.NewRequest(http.MethodGet, "http://"+sig.ready.HTTP+"/v1/origins", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+sig.env["RTCEDGE_REGISTRATION_TOKEN"])
	hc := &http.Client{Timeout: 5 * time.Second}
	var body []byte
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"`+id+`"`) {
			t.Logf("origin %s registered with signaling", id)
			return
		}
	}
	t.Errorf("signaling's /v1/origins does not list %s: %s", id, body)
}

// allocSession allocates a publishing session on a relay; tag and n make
// its ICE credentials unique in the shared etcd.
func allocSession(t *testing.T, client relayv1.RelayServiceClient, tag, n int) error {
	_, err := client.AllocateSession(t.Context(), &relayv1.AllocateSessionRequest{
		Stream: "v/live/chart", Direction: relayv1.Direction_DIRECTION_PUBLISH,
		ClientIce:       &relayv1.IceCredentials{Ufrag: fmt.Sprintf("cli%d%d", tag, n), Pwd: "clientpasswordclientpassword"},
		OriginIce:       &relayv1.IceCredentials{Ufrag: fmt.Sprintf("ori%d%d", tag, n), Pwd: "originpasswordoriginpassword"},
		OriginAddresses: []string{"127.0.0.1:9"},
	})
	return err
}

// relayClient dials a relay's gRPC address with the pod's admin token.
func relayClient(t *testing.T, relay *pod) relayv1.RelayServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(relay.ready.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer.Token(relay.env["RTCEDGE_ADMIN_TOKEN"])))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return relayv1.NewRelayServiceClient(conn)
}

// TestRenderedTakeover is a node's relay upgraded the way the chart's
// relay.upgrade=takeover (examples/host-network.yaml) does it, with the
// real binary and the rendered environment: the old pod serves a session;
// the new pod, the same rendered container on the same node (relay id) and
// ports, starts beside it and takes the session and the registration over;
// the old pod is stopped as the kubelet stops it (its rendered preStop, if
// any, then SIGTERM) and exits cleanly within its rendered grace period;
// the new relay then answers alone on the node's ports with the session,
// not draining, and its rendered probes answer 200.
func TestRenderedTakeover(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	objs := render(t, rendering{name: "examples/host-network.yaml", args: []string{"-f", filepath.Join(examplesDir, "host-network.yaml")}})
	_, c := relayPod(t, objs)
	secrets := chartSecrets(objs)
	const node = "node-takeover"
	old := startPod(t, objs, c, "mediarelay", node, secrets, etcd.Endpoints()[0], nil)
	if old.env["RTCEDGE_TAKEOVER"] != "true" {
		t.Fatalf("examples/host-network.yaml renders RTCEDGE_TAKEOVER=%q, want true", old.env["RTCEDGE_TAKEOVER"])
	}
	checkProbes(t, old)
	if err := allocSession(t, relayClient(t, old), 7, 1); err != nil {
		t.Fatalf("AllocateSession on the old relay: %v", err)
	}

	// The new pod: on the node's ports, which the old relay holds.
	next := startPod(t, objs, c, "mediarelay", node, secrets, etcd.Endpoints()[0], map[string]string{
		"RTCEDGE_UDP_LISTEN": old.ready.UDP[0], "RTCEDGE_GRPC_LISTEN": old.ready.GRPC, "RTCEDGE_HTTP_LISTEN": old.ready.HTTP,
	})
	if next.ready.UDP[0] != old.ready.UDP[0] || next.ready.HTTP != old.ready.HTTP || next.ready.GRPC != old.ready.GRPC {
		t.Fatalf("the new relay bound %+v, want the old one's ports %+v", next.ready, old.ready)
	}
	waitLog(t, next, `"msg":"relay: sessions reloaded from the registry","sessions":1`)
	waitLog(t, next, `"msg":"relay: registered"`)

	// The kubelet stops the old pod: its preStop hook, then SIGTERM.
	if h := old.c.Lifecycle; h != nil && h.PreStop != nil {
		t.Fatalf("takeover renders a preStop hook %+v: a drain there reaches either relay on the shared port", h.PreStop)
	}
	start := time.Now()
	if err := old.proc.stop(old.grace); err != nil {
		t.Fatalf("the old relay after SIGTERM (grace period %s): %v", old.grace, err)
	}
	t.Logf("the old relay exited %s after SIGTERM (grace period %s)", time.Since(start).Round(time.Millisecond), old.grace)

	// Only the new relay listens now.
	st, err := relayClient(t, next).GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil || st.GetSessionCount() != 1 || st.GetDraining() {
		t.Fatalf("the new relay after the old one exited: %v %v; want the session, not draining", st, err)
	}
	checkProbes(t, next)
	if err := next.proc.stop(next.grace); err != nil {
		t.Errorf("the new relay after SIGTERM (grace period %s): %v", next.grace, err)
	}
}

// waitLog waits up to 60 s for a line containing want in p's output.
func waitLog(t *testing.T, p *pod, want string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(p.proc.out.String(), want) {
			return
		}
	}
	t.Fatalf("%s logged no %s within 60 s", p.bin, want)
}
