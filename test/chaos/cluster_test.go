package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// projectPrefix starts the compose project of every harness run; the test
// process's pid follows, so a stale project of a killed run is recognised.
const projectPrefix = "rtcedge-chaos-"

// The cluster's development tokens (cluster.yml's defaults).
const (
	adminToken        = "rtcedge-dev-admin-token"
	registrationToken = "rtcedge-dev-registration-token"
)

// Timers the harness gives the cluster (cluster.yml's CLUSTER_* variables):
// shorter than production so that orphans are reaped within a run, longer
// than fault 5's partition (30 s) plus the relay lease (10 s).
const (
	orphanGrace  = 45 * time.Second
	reapInterval = 5 * time.Second
	relayTTL     = 10 * time.Second
	// setupDeadline is signaling's -origin-timeout + -relay-timeout +
	// -setup-margin (defaults): a setup pending longer is undone.
	setupDeadline = 25 * time.Second
)

// relayNames are the relays; each is a pod (cluster.yml): the relay process
// runs in a container that joins the network namespace of relayNet(relay),
// which owns the networks, the static media address and the published ports.
var relayNames = []string{"relay-1", "relay-2", "relay-3"}
var etcdNames = []string{"etcd-1", "etcd-2", "etcd-3"}
var signalingNames = []string{"signaling-1", "signaling-2"}
var originNames = []string{"origin-a", "origin-b"}

// relayNet is the service of a relay's pod that holds its network
// namespace (rtcedge/pause).
func relayNet(relay string) string { return relay + "-net" }

// relayNets are the pods' net services.
func relayNets() []string {
	var out []string
	for _, r := range relayNames {
		out = append(out, relayNet(r))
	}
	return out
}

// otherColour is the pod's other relay service: relay-N-b (profile
// upgrade) for relay-N, and back.
func otherColour(relay, current string) string {
	if current == relay {
		return relay + "-b"
	}
	return relay
}

// cluster is one run of deploy/compose/cluster.yml.
type cluster struct {
	t          *testing.T
	project    string
	file       string
	env        []string
	signaling  map[string]string // service -> http://127.0.0.1:port
	relayHTTP  map[string]string // service -> http://127.0.0.1:port (admin REST)
	originHTTP map[string]string // service -> http://127.0.0.1:port
	relayUDP   map[string]string // service -> 127.0.0.1:port it advertises
	// ids maps services to container ids; a relay's name (relay-N) maps to
	// the container of its running relay process, whichever of the pod's
	// two services (relay-N, relay-N-b) that is: colour names it.
	ids    map[string]string
	colour map[string]string // relay-N -> relay-N or relay-N-b
}

func repoRoot() string {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	return root
}

// run runs a command with a timeout and returns its combined output.
func run(ctx context.Context, d time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// compose runs docker-compose (v1) or docker compose (v2) on cluster.yml.
func (c *cluster) compose(ctx context.Context, d time.Duration, args ...string) (string, error) {
	base := []string{"-p", c.project, "-f", c.file}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return run(ctx, d, c.env, "docker-compose", append(base, args...)...)
	}
	return run(ctx, d, c.env, "docker", append(append([]string{"compose"}, base...), args...)...)
}

// docker runs a docker command on this cluster's containers.
func (c *cluster) docker(ctx context.Context, args ...string) (string, error) {
	return run(ctx, 90*time.Second, nil, "docker", args...)
}

// removeStaleProjects takes down the stacks of harness runs whose process
// is gone.
func removeStaleProjects(t *testing.T, ctx context.Context, file string) {
	out, err := run(ctx, 30*time.Second, nil, "docker", "ps", "-a", "--filter", "label=com.docker.compose.project",
		"--format", `{{.Label "com.docker.compose.project"}}`)
	if err != nil {
		t.Logf("listing compose projects: %v", err)
		return
	}
	seen := map[string]bool{}
	for _, p := range strings.Fields(out) {
		pid, err := strconv.Atoi(strings.TrimPrefix(p, projectPrefix))
		if seen[p] || !strings.HasPrefix(p, projectPrefix) || err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		seen[p] = true
		stale := &cluster{project: p, file: file}
		if out, err := stale.compose(ctx, 3*time.Minute, "down", "-v", "--remove-orphans"); err != nil {
			t.Logf("taking down the stale stack %s: %v\n%s", p, err, out)
		} else {
			t.Logf("took down the stack %s of a harness run that is gone", p)
		}
	}
}

// upCluster starts the stack and takes it down at cleanup. The host ports
// and the two subnets are drawn at random and drawn again when taken.
func upCluster(t *testing.T, ctx context.Context) *cluster {
	c := &cluster{t: t, project: projectPrefix + strconv.Itoa(os.Getpid()),
		file: filepath.Join(repoRoot(), "deploy", "compose", "cluster.yml")}
	removeStaleProjects(t, ctx, c.file)
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := c.compose(dctx, time.Minute, "logs", "--tail", "30")
			t.Logf("compose logs (project %s):\n%s", c.project, out)
		}
		// Paused containers cannot be stopped: unpause whatever a failed
		// fault left paused first.
		for _, id := range c.ids {
			_, _ = c.docker(dctx, "unpause", id)
		}
		if out, err := c.compose(dctx, 3*time.Minute, "down", "-v", "--remove-orphans", "-t", "2"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		out, _ := run(dctx, 30*time.Second, nil, "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+c.project)
		if strings.TrimSpace(out) != "" {
			t.Errorf("containers left after down: %s", out)
		}
	})
	for attempt := 1; ; attempt++ {
		// Every host port is drawn (a block of 13 from 20000-32767, below
		// Linux's ephemeral range), not left to Docker: a container that a
		// fault restarts keeps its ports, where Docker would pick new ones.
		base := 20000 + rand.IntN(12000)
		port := func(i int) string { return strconv.Itoa(base + i) }
		c.relayUDP = map[string]string{}
		c.env = []string{
			"CLUSTER_MEDIA_SUBNET=" + fmt.Sprintf("172.%d.%d", 20+rand.IntN(12), rand.IntN(256)),
			"CLUSTER_CONTROL_SUBNET=" + fmt.Sprintf("172.%d.%d", 20+rand.IntN(12), rand.IntN(256)),
			"SIGNALING1_HTTP_PORT=" + port(9), "SIGNALING2_HTTP_PORT=" + port(10),
			"CLUSTER_ORPHAN_GRACE=" + orphanGrace.String(), "CLUSTER_REAP_INTERVAL=" + reapInterval.String(),
			"CLUSTER_RELAY_TTL=" + relayTTL.String(), "CLUSTER_RATE_LIMIT=0",
			"ORIGINA_HTTP_PORT=" + port(11), "ORIGINB_HTTP_PORT=" + port(12),
		}
		for i, r := range relayNames {
			n := i + 1
			c.relayUDP[r] = "127.0.0.1:" + port(i)
			c.env = append(c.env, fmt.Sprintf("RELAY%d_UDP_PORT=%s", n, port(i)), fmt.Sprintf("RELAY%d_PUBLIC_ADDR=127.0.0.1:%s", n, port(i)),
				fmt.Sprintf("RELAY%d_HTTP_PORT=%s", n, port(3+i)), fmt.Sprintf("RELAY%d_GRPC_PORT=%s", n, port(6+i)))
		}
		out, err := c.compose(ctx, 6*time.Minute, "up", "-d", "--no-build")
		if err == nil {
			break
		}
		taken := strings.Contains(out, "already allocated") || strings.Contains(out, "address already in use") ||
			strings.Contains(out, "overlaps")
		if !taken || attempt == 5 {
			t.Fatalf("compose up (attempt %d, %v): %v\n%s", attempt, c.env, err, out)
		}
		t.Logf("compose up (attempt %d): a port or a subnet is taken; drawing again", attempt)
		if out, err := c.compose(ctx, 3*time.Minute, "down", "-v", "--remove-orphans", "-t", "2"); err != nil {
			t.Fatalf("compose down after a failed up: %v\n%s", err, out)
		}
	}
	// docker itself, not docker-compose (v1 takes seconds per call on a
	// busy machine): the containers by their compose labels.
	out, err := c.docker(ctx, "ps", "-a", "--filter", "label=com.docker.compose.project="+c.project,
		"--format", `{{.ID}} {{.Label "com.docker.compose.service"}}`)
	if err != nil {
		t.Fatalf("listing the containers: %v\n%s", err, out)
	}
	c.ids = map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if id, svc, ok := strings.Cut(l, " "); ok {
			c.ids[svc] = id
		}
	}
	c.colour = map[string]string{}
	for _, r := range relayNames {
		c.colour[r] = r
	}
	for _, s := range slices.Concat(etcdNames, signalingNames, relayNames, relayNets(), originNames) {
		if c.ids[s] == "" {
			t.Fatalf("no container of %s in %q", s, out)
		}
	}
	c.signaling, c.relayHTTP, c.originHTTP = map[string]string{}, map[string]string{}, map[string]string{}
	for _, s := range signalingNames {
		c.signaling[s] = "http://" + c.port(ctx, s, 8080)
	}
	for _, r := range relayNames {
		c.relayHTTP[r] = "http://" + c.port(ctx, relayNet(r), 9091)
	}
	for _, o := range originNames {
		c.originHTTP[o] = "http://" + c.port(ctx, o, 8888)
	}
	t.Logf("cluster %s up: signaling %v relays %v (UDP %v) origins %v", c.project, c.signaling, c.relayHTTP, c.relayUDP, c.originHTTP)
	return c
}

// port returns the host address Docker published a service's TCP port on.
func (c *cluster) port(ctx context.Context, service string, port int) string {
	out, err := c.docker(ctx, "port", c.ids[service], strconv.Itoa(port)+"/tcp")
	addr, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if err != nil || addr == "" || strings.HasSuffix(addr, ":0") {
		c.t.Fatalf("docker port %s %d: %v %q", service, port, err, out)
	}
	return addr
}

// health returns a service's container's state: running, paused, exited,
// and its health (healthy, starting, unhealthy) when running and it has a
// health check (the pods' net containers have none).
func (c *cluster) health(ctx context.Context, service string) string {
	return c.containerHealth(ctx, c.ids[service])
}

func (c *cluster) containerHealth(ctx context.Context, id string) string {
	out, err := c.docker(ctx, "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}

// healthy: running, and healthy if it has a health check.
func healthy(h string) bool { return h == "running healthy" || h == "running" }

// waitHealthy waits until every service is running and healthy.
func (c *cluster) waitHealthy(ctx context.Context, d time.Duration, services ...string) error {
	deadline := time.Now().Add(d)
	for {
		var bad []string
		for _, s := range services {
			if h := c.health(ctx, s); !healthy(h) {
				bad = append(bad, s+"="+h)
			}
		}
		if len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not healthy after %s: %v", d, bad)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// kill, start, pause, unpause act on one service's container.
func (c *cluster) kill(ctx context.Context, s string) error {
	_, err := c.docker(ctx, "kill", c.ids[s])
	return err
}
func (c *cluster) start(ctx context.Context, s string) error {
	_, err := c.docker(ctx, "start", c.ids[s])
	return err
}
func (c *cluster) pause(ctx context.Context, s string) error {
	_, err := c.docker(ctx, "pause", c.ids[s])
	return err
}
func (c *cluster) unpause(ctx context.Context, s string) error {
	_, err := c.docker(ctx, "unpause", c.ids[s])
	return err
}

// startColour starts a pod's other relay service with docker-compose
// (profile upgrade, without its dependencies) and returns its container.
func (c *cluster) startColour(ctx context.Context, service string) (string, error) {
	if out, err := c.compose(ctx, 2*time.Minute, "--profile", "upgrade", "up", "-d", "--no-deps", service); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	out, err := c.docker(ctx, "ps", "-aq", "--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.service="+service)
	id, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if err != nil || id == "" {
		return "", fmt.Errorf("no container of %s: %v %q", service, err, out)
	}
	return id, nil
}

// setColour records that relay's process now runs in service's container id.
func (c *cluster) setColour(relay, service, id string) {
	c.colour[relay] = service
	c.ids[relay] = id
}

// readyz is the status of GET /readyz on a relay's published HTTP port
// (0: no answer). While two relay processes share the pod's port, either
// answers.
func (c *cluster) readyz(ctx context.Context, relay string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.relayHTTP[relay]+"/readyz", nil)
	if err != nil {
		return 0
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// controlNetwork is the compose network etcd lives on.
func (c *cluster) controlNetwork() string {
	return c.project + "_control"
}

// etcdctl runs etcdctl inside a running etcd container against the given
// members.
func (c *cluster) etcdctl(ctx context.Context, via string, args ...string) (string, error) {
	return run(ctx, 20*time.Second, nil, "docker", append([]string{"exec", c.ids[via], "/usr/local/bin/etcdctl",
		"--command-timeout=5s", "--dial-timeout=3s"}, args...)...)
}

// etcdLeader returns the service that leads the etcd cluster, asking the
// members in running.
func (c *cluster) etcdLeader(ctx context.Context, running []string) (string, error) {
	var eps []string
	for _, s := range running {
		eps = append(eps, "http://"+s+":2379")
	}
	for _, via := range running {
		out, err := c.etcdctl(ctx, via, "--endpoints="+strings.Join(eps, ","), "endpoint", "status", "-w", "json")
		if err != nil {
			continue
		}
		var st []struct {
			Endpoint string `json:"Endpoint"`
			Status   struct {
				Header struct {
					MemberID uint64 `json:"member_id"`
				} `json:"header"`
				Leader uint64 `json:"leader"`
			} `json:"Status"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return "", fmt.Errorf("endpoint status: %w: %s", err, out)
		}
		for _, e := range st {
			if e.Status.Leader != 0 && e.Status.Leader == e.Status.Header.MemberID {
				for _, s := range running {
					if strings.Contains(e.Endpoint, s+":") {
						return s, nil
					}
				}
			}
		}
		return "", fmt.Errorf("no leader among %v", running)
	}
	return "", fmt.Errorf("no etcd member of %v answered", running)
}

// etcdKeys lists the registry's keys with their values (the ufrag index's
// values are session ids) through a running member.
func (c *cluster) etcdKeys(ctx context.Context, via string) (map[string]string, error) {
	out, err := c.etcdctl(ctx, via, "--endpoints=http://etcd-1:2379,http://etcd-2:2379,http://etcd-3:2379",
		"get", "--prefix", "/rtcedge/", "-w", "json")
	if err != nil {
		return nil, err
	}
	var resp struct {
		Kvs []struct {
			Key   []byte `json:"key"`
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("etcdctl get: %w", err)
	}
	m := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m, nil
}

// relaySession is what the harness reads of a relay's session list.
type relaySession struct {
	ID           string `json:"id"`
	Stream       string `json:"stream"`
	ClientUfrag  string `json:"clientUfrag"`
	ServerUfrag  string `json:"serverUfrag"`
	OriginUfrag  string `json:"originUfrag"`
	OriginID     string `json:"originId"`
	State        string `json:"state"`
	ClientUfrag2 string `json:"client_ufrag"`
	ServerUfrag2 string `json:"server_ufrag"`
	OriginID2    string `json:"origin_id"`
}

// username is the STUN USERNAME the relay demultiplexes the session by.
func (s relaySession) username() string {
	server, client := cmp(s.ServerUfrag, s.ServerUfrag2), cmp(s.ClientUfrag, s.ClientUfrag2)
	if server == "" {
		server = s.OriginUfrag
	}
	return server + ":" + client
}

func (s relaySession) origin() string { return cmp(s.OriginID, s.OriginID2) }

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

// relaySessions lists one relay's sessions through its admin REST API.
func (c *cluster) relaySessions(ctx context.Context, relay string) ([]relaySession, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.relayHTTP[relay]+"/v1/sessions", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/v1/sessions: %s", relay, resp.Status)
	}
	var list struct {
		Sessions []relaySession `json:"sessions"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", relay, err)
	}
	return list.Sessions, nil
}

// drainRelay calls the relay's Drain (no deadline: sessions go on).
func (c *cluster) drainRelay(ctx context.Context, relay string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.relayHTTP[relay]+"/v1/drain", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("drain %s: %s", relay, resp.Status)
	}
	return nil
}

// originSessions counts an origin's WHIP publishers and readers from its
// inventory (the built-in test pattern is not a session).
func (c *cluster) originSessions(ctx context.Context, origin string) (map[string]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.originHTTP[origin]+"/v3/paths/list?itemsPerPage=1000", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct {
			Name   string `json:"name"`
			Source *struct {
				Type string `json:"type"`
			} `json:"source"`
			Readers []struct{} `json:"readers"`
		} `json:"items"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&list); err != nil {
		return nil, err
	}
	m := map[string]int{}
	for _, it := range list.Items {
		n := len(it.Readers)
		if it.Source != nil && it.Source.Type != "testPattern" {
			n++
		}
		if n > 0 {
			m[it.Name] = n
		}
	}
	return m, nil
}

// streamOrigins returns each stream's origin from signaling's status API.
func (c *cluster) streamOrigins(ctx context.Context) (map[string]string, error) {
	for _, s := range signalingNames {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.signaling[s]+"/v1/streams", nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+registrationToken)
		resp, err := httpClient.Do(req)
		if err != nil {
			continue
		}
		var body struct {
			Streams []struct {
				Stream   string `json:"stream"`
				OriginID string `json:"originId"`
				Origin2  string `json:"origin_id"`
			} `json:"streams"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue
		}
		m := map[string]string{}
		for _, st := range body.Streams {
			m[st.Stream] = cmp(st.OriginID, st.Origin2)
		}
		return m, nil
	}
	return nil, fmt.Errorf("no signaling instance answered GET /v1/streams")
}

// logsSince returns a service's log lines since t (for the report).
func (c *cluster) logsSince(ctx context.Context, service string, since time.Time, max int) []string {
	out, _ := c.docker(ctx, "logs", "--since", since.UTC().Format(time.RFC3339), c.ids[service])
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() && len(lines) < max {
		if l := sc.Text(); strings.Contains(l, "ERROR") || strings.Contains(l, "WARN") {
			lines = append(lines, l)
		}
	}
	return lines
}
