//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// composeStack is one run of the repo's docker-compose.yml under a
// project name of its own (rtcedge-e2e-<pid>), with its own subnet and
// host ports, so it runs beside a developer's stack, another test run, or
// a stack a killed run left behind.
type composeStack struct {
	project string
	env     []string // the variables docker-compose.yml reads
}

// compose runs docker-compose (v1) or docker compose (v2) on the repo's
// docker-compose.yml for this stack.
func (c *composeStack) compose(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	base := []string{"-p", c.project, "-f", filepath.Join(root, "docker-compose.yml")}
	var cmd *exec.Cmd
	if _, err := exec.LookPath("docker-compose"); err == nil {
		cmd = exec.CommandContext(ctx, "docker-compose", append(base, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, "docker", append(append([]string{"compose"}, base...), args...)...)
	}
	cmd.Dir = root
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// port returns the host address Docker published a service's TCP port on.
func (c *composeStack) port(t *testing.T, ctx context.Context, service string, port int) string {
	t.Helper()
	out, err := c.compose(t, ctx, "port", service, strconv.Itoa(port))
	addr := strings.TrimSpace(out)
	if err != nil || addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("compose port %s %d: %v %q", service, port, err, out)
	}
	return addr
}

// composeProjectPrefix starts the compose project name of every test run;
// the test process's pid follows.
const composeProjectPrefix = "rtcedge-e2e-"

// removeStaleComposeStacks takes down the stacks of test runs whose process
// is gone (killed before its cleanup ran). They would not collide with this
// run, but they hold containers, ports and a network.
func removeStaleComposeStacks(t *testing.T, ctx context.Context) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "ps", "-a", "--filter", "label=com.docker.compose.project",
		"--format", `{{.Label "com.docker.compose.project"}}`).Output()
	if err != nil {
		t.Logf("listing compose projects: %v", err)
		return
	}
	seen := map[string]bool{}
	for _, project := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(strings.TrimPrefix(project, composeProjectPrefix))
		if seen[project] || !strings.HasPrefix(project, composeProjectPrefix) || err != nil || pid == os.Getpid() ||
			syscall.Kill(pid, 0) == nil {
			continue
		}
		seen[project] = true
		stale := &composeStack{project: project}
		if out, err := stale.compose(t, ctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Logf("taking down the stale stack %s: %v\n%s", project, err, out)
		} else {
			t.Logf("took down the stack %s of a test run that is gone", project)
		}
	}
}

// upComposeStack starts the stack (`up -d --no-build`) and takes it down at
// cleanup, checking nothing of it is left running. Docker picks the host
// TCP ports. The relays' UDP ports cannot be picked by Docker (each relay
// must advertise its port before it starts), nor can the /24 subnet, so
// they are drawn at random (UDP from 20000-32767, below Linux's ephemeral
// range) and drawn again when Docker refuses them as taken.
func upComposeStack(t *testing.T, ctx context.Context) (c *composeStack, relay1UDP, relay2UDP string) {
	t.Helper()
	c = &composeStack{project: composeProjectPrefix + strconv.Itoa(os.Getpid())}
	removeStaleComposeStacks(t, ctx)
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := c.compose(t, dctx, "logs", "--tail", "40")
			t.Logf("compose logs (project %s):\n%s", c.project, out)
		}
		if out, err := c.compose(t, dctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		out, _ := exec.CommandContext(dctx, "docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+c.project).CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("containers left running after down: %s", out)
		}
	})
	for attempt := 1; ; attempt++ {
		u1 := 20000 + rand.IntN(12768)
		u2 := 20000 + (u1-20000+1+rand.IntN(12767))%12768
		relay1UDP, relay2UDP = "127.0.0.1:"+strconv.Itoa(u1), "127.0.0.1:"+strconv.Itoa(u2)
		c.env = []string{
			fmt.Sprintf("RTCEDGE_SUBNET=172.%d.%d", 20+rand.IntN(12), rand.IntN(256)),
			"SIGNALING1_HTTP_PORT=", "SIGNALING1_GRPC_PORT=", "SIGNALING2_HTTP_PORT=", "SIGNALING2_GRPC_PORT=",
			"RELAY1_GRPC_PORT=", "RELAY1_HTTP_PORT=", "RELAY2_GRPC_PORT=", "RELAY2_HTTP_PORT=",
			"RELAY1_UDP_PORT=" + strconv.Itoa(u1), "RELAY1_PUBLIC_ADDR=" + relay1UDP,
			"RELAY2_UDP_PORT=" + strconv.Itoa(u2), "RELAY2_PUBLIC_ADDR=" + relay2UDP,
		}
		out, err := c.compose(t, ctx, "up", "-d", "--no-build")
		if err == nil {
			t.Logf("compose project %s up (%v)", c.project, c.env)
			return c, relay1UDP, relay2UDP
		}
		taken := strings.Contains(out, "already allocated") || strings.Contains(out, "address already in use") ||
			strings.Contains(out, "overlaps") || strings.Contains(out, "Pool overlaps")
		if !taken || attempt == 5 {
			t.Fatalf("compose up (attempt %d, %v): %v\n%s", attempt, c.env, err, out)
		}
		t.Logf("compose up (attempt %d): a port or the subnet is taken; drawing again:\n%s", attempt, out)
		if out, err := c.compose(t, ctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Fatalf("compose down after a failed up: %v\n%s", err, out)
		}
	}
}

// The compose stack's development tokens (docker-compose.yml's defaults):
// its containers reach each other off loopback, so control APIs need them.
const (
	composeAdminToken        = "rtcedge-dev-admin-token"
	composeRegistrationToken = "rtcedge-dev-registration-token"
)

// grpcurl runs the grpcurl pinned in tools/go.mod.
func grpcurl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := grpcurlErr(ctx, args...)
	if err != nil {
		t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
	}
	return out
}

// grpcurlErr runs grpcurl and returns its output and error.
func grpcurlErr(ctx context.Context, args ...string) (string, error) {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "-modfile=tools/go.mod", "grpcurl"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestComposeStack is scenario (c): the docker-compose stack on the offline
// images (`make images`), scenario (a) through the containers, grpcurl
// against a relay container, then `down` with nothing left running. It
// runs when RTCEDGE_E2E_COMPOSE=1 (`make e2e` sets it after building the
// images).
func TestComposeStack(t *testing.T) {
	if os.Getenv("RTCEDGE_E2E_COMPOSE") != "1" {
		t.Skip("set RTCEDGE_E2E_COMPOSE=1 (make e2e does) to run the compose stack")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	c, _, relay2UDP := upComposeStack(t, ctx)
	sig1 := "http://" + c.port(t, ctx, "signaling-1", 8080)
	sig2 := "http://" + c.port(t, ctx, "signaling-2", 8080)
	relay1GRPC := c.port(t, ctx, "relay-1", 9090)
	relay1HTTP := "http://" + c.port(t, ctx, "relay-1", 9091)
	relay2HTTP := "http://" + c.port(t, ctx, "relay-2", 9091)
	waitFor(t, 90*time.Second, "the stack healthy with the origin registered", func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sig1+"/v1/origins", nil)
		req.Header.Set("Authorization", "Bearer "+composeRegistrationToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Origins []struct{ ID string } `json:"origins"`
		}
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&body) == nil && len(body.Origins) == 1 &&
			httpGet(t, sig2+"/readyz") == 200 && httpGet(t, relay1HTTP+"/readyz") == 200 &&
			httpGet(t, relay2HTTP+"/readyz") == 200
	})

	// Scenario (a) through the containers: publish via signaling-1 (zone a,
	// relay-1), play via signaling-2 (zone b, relay-2).
	pub := publish(t, ctx, sig1+"/whip/live/compose")
	pl := play(t, ctx, sig2+"/whep/live/compose")
	waitFor(t, 30*time.Second, "the publisher's payloads at the player", func() bool {
		m, _ := pl.received()
		return m >= 20
	})
	waitFor(t, 10*time.Second, "the player's selected pair", func() bool { return selectedRemote(pl.pc) != "" })
	if got := selectedRemote(pl.pc); got != relay2UDP {
		t.Errorf("player's media goes to %s, want relay-2 at %s", got, relay2UDP)
	}

	// grpcurl against relay-1: refused without the admin token (the
	// published port is not loopback to the container), then with it list
	// (reflection), list and release the publisher's session.
	if out, err := grpcurlErr(ctx, "-plaintext", relay1GRPC, "relay.v1.RelayService/ListSessions"); err == nil ||
		!strings.Contains(out, "Unauthenticated") && !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("grpcurl without the admin token: %v\n%s", err, out)
	}
	if code := httpGet(t, relay1HTTP+"/v1/sessions"); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Fatalf("REST admin without the token: %d", code)
	}
	auth := []string{"-plaintext", "-H", "authorization: Bearer " + composeAdminToken}
	if out := grpcurl(t, ctx, append(auth, relay1GRPC, "list")...); !strings.Contains(out, "relay.v1.RelayService") {
		t.Fatalf("grpcurl list: %s", out)
	}
	var list struct {
		Sessions []struct{ ID string } `json:"sessions"`
	}
	out := grpcurl(t, ctx, append(auth, relay1GRPC, "relay.v1.RelayService/ListSessions")...)
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Sessions) != 1 {
		t.Fatalf("ListSessions on relay-1: %v\n%s", err, out)
	}
	grpcurl(t, ctx, append(auth, "-d", `{"id":"`+list.Sessions[0].ID+`"}`, relay1GRPC, "relay.v1.RelayService/ReleaseSession")...)
	out = grpcurl(t, ctx, append(auth, relay1GRPC, "relay.v1.RelayService/GetStatus")...)
	if strings.Contains(out, `"sessionCount"`) {
		t.Errorf("relay-1 still counts sessions after release: %s", out)
	}
	// The player ends through signaling-2.
	if code, err := deleteResource(ctx, pl.res.Location); err != nil || code != http.StatusOK {
		t.Errorf("player DELETE: %d %v", code, err)
	}
	pub.close()
}
