package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// composeProject keeps the test's stack apart from a developer's own.
const composeProject = "rtcedge-e2e"

// compose runs docker-compose (v1) or docker compose (v2) on the repo's
// docker-compose.yml.
func compose(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	base := []string{"-p", composeProject, "-f", filepath.Join(root, "docker-compose.yml")}
	var cmd *exec.Cmd
	if _, err := exec.LookPath("docker-compose"); err == nil {
		cmd = exec.CommandContext(ctx, "docker-compose", append(base, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, "docker", append(append([]string{"compose"}, base...), args...)...)
	}
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// grpcurl runs the grpcurl pinned in tools/go.mod.
func grpcurl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "-modfile=tools/go.mod", "grpcurl"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
	}
	return string(out)
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
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	_, _ = compose(t, ctx, "down", "-v", "--remove-orphans")
	if out, err := compose(t, ctx, "up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := compose(t, dctx, "logs", "--tail", "40")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := compose(t, dctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		out, _ := exec.CommandContext(dctx, "docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+composeProject).CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("containers left running after down: %s", out)
		}
	})
	waitFor(t, 90*time.Second, "the stack healthy with the origin registered", func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:8080/v1/origins", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Origins []struct{ ID string } `json:"origins"`
		}
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&body) == nil && len(body.Origins) == 1 &&
			httpGet(t, "http://127.0.0.1:8081/readyz") == 200 && httpGet(t, "http://127.0.0.1:9091/readyz") == 200 &&
			httpGet(t, "http://127.0.0.1:9095/readyz") == 200
	})

	// Scenario (a) through the containers: publish via signaling-1 (zone a,
	// relay-1), play via signaling-2 (zone b, relay-2).
	pub := publish(t, ctx, "http://127.0.0.1:8080/whip/live/compose")
	pl := play(t, ctx, "http://127.0.0.1:8081/whep/live/compose")
	waitFor(t, 30*time.Second, "the publisher's payloads at the player", func() bool {
		m, _ := pl.received()
		return m >= 20
	})
	waitFor(t, 10*time.Second, "the player's selected pair", func() bool { return selectedRemote(pl.pc) != "" })
	if got := selectedRemote(pl.pc); got != "127.0.0.1:8001" {
		t.Errorf("player's media goes to %s, want relay-2 at 127.0.0.1:8001", got)
	}

	// grpcurl against relay-1: list (reflection), then list and release the
	// publisher's session.
	if out := grpcurl(t, ctx, "-plaintext", "127.0.0.1:9090", "list"); !strings.Contains(out, "relay.v1.RelayService") {
		t.Fatalf("grpcurl list: %s", out)
	}
	var list struct {
		Sessions []struct{ ID string } `json:"sessions"`
	}
	out := grpcurl(t, ctx, "-plaintext", "127.0.0.1:9090", "relay.v1.RelayService/ListSessions")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Sessions) != 1 {
		t.Fatalf("ListSessions on relay-1: %v\n%s", err, out)
	}
	grpcurl(t, ctx, "-plaintext", "-d", `{"id":"`+list.Sessions[0].ID+`"}`, "127.0.0.1:9090", "relay.v1.RelayService/ReleaseSession")
	out = grpcurl(t, ctx, "-plaintext", "127.0.0.1:9090", "relay.v1.RelayService/GetStatus")
	if strings.Contains(out, `"sessionCount"`) {
		t.Errorf("relay-1 still counts sessions after release: %s", out)
	}
	// The player ends through signaling-2.
	if code, err := deleteResource(ctx, pl.res.Location); err != nil || code != http.StatusOK {
		t.Errorf("player DELETE: %d %v", code, err)
	}
	pub.close()
}
