package main

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/clitest"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func TestParseDrain(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    drainConfig
		wantErr string
	}{
		{name: "defaults", want: drainConfig{httpListen: ":9091", poll: time.Second}},
		{name: "the relay's environment", args: []string{"-deadline", "1h", "-wait"},
			env:  map[string]string{"RTCEDGE_READY_FILE": "/run/r.json", "RTCEDGE_ADMIN_TOKEN": "tok", "RTCEDGE_HTTP_LISTEN": "10.0.0.5:9191"},
			want: drainConfig{readyFile: "/run/r.json", adminToken: "tok", httpListen: "10.0.0.5:9191", deadline: time.Hour, wait: true, poll: time.Second}},
		{name: "a flag beats the variable", args: []string{"-admin-token", "flagged"}, env: map[string]string{"RTCEDGE_ADMIN_TOKEN": "tok"},
			want: drainConfig{adminToken: "flagged", httpListen: ":9091", poll: time.Second}},
		{name: "other variables are not read", env: map[string]string{"RTCEDGE_DEADLINE": "1h", "RTCEDGE_WAIT": "true"},
			want: drainConfig{httpListen: ":9091", poll: time.Second}},
		{name: "wait without deadline", args: []string{"-wait"}, wantErr: "-wait needs -deadline"},
		{name: "short deadline", args: []string{"-deadline", "10ms"}, wantErr: "want 0 or at least 1s"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDrain(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDrainRelayHTTP(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready.json")
	if err := cli.WriteReadyFile(ready, cli.Ready{HTTP: "[::]:4242"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    drainConfig
		want string
	}{
		{name: "wildcard listen", c: drainConfig{httpListen: ":9091"}, want: "http://127.0.0.1:9091"},
		{name: "pod IP", c: drainConfig{httpListen: "10.0.0.5:9091"}, want: "http://10.0.0.5:9091"},
		{name: "ready file wins", c: drainConfig{httpListen: ":9091", readyFile: ready}, want: "http://127.0.0.1:4242"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := tc.c.relayHTTP(); err != nil || got != tc.want {
				t.Fatalf("relayHTTP = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := (drainConfig{readyFile: ready + ".missing"}).relayHTTP(); err == nil || !strings.Contains(err.Error(), "is the relay running") {
		t.Errorf("missing ready file: %v", err)
	}
}

// TestDrainCommand runs `mediarelay drain -deadline 1s -wait` against the
// relay's run() with a session: with only the relay's environment (ready
// file, admin token), it drains the relay, /readyz turns 503, and it
// returns once the deadline released the session. Without the token the
// relay refuses it.
func TestDrainCommand(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	ready := filepath.Join(t.TempDir(), "ready.json")
	env := map[string]string{"RTCEDGE_ETCD_ENDPOINTS": etcd.Endpoints()[0], "RTCEDGE_READY_FILE": ready, "RTCEDGE_ADMIN_TOKEN": "drain-token"}
	getenv := func(k string) string { return env[k] }
	addrs := clitest.Run(t, func(ctx context.Context, readyc chan<- [2]string) error {
		return run(ctx, []string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
			"-relay-id", "drain-relay", "-log-level", "warn"}, getenv, readyc)
	})
	waitStatus(t, "http://"+addrs[1]+"/readyz", http.StatusOK)

	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer.Token("drain-token")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := relayv1.NewRelayServiceClient(conn)
	if _, err := client.AllocateSession(t.Context(), &relayv1.AllocateSessionRequest{
		Stream: "v/live/drain", Direction: relayv1.Direction_DIRECTION_PUBLISH,
		ClientIce:       &relayv1.IceCredentials{Ufrag: "clid", Pwd: "clientpasswordclientpassword"},
		OriginIce:       &relayv1.IceCredentials{Ufrag: "orid", Pwd: "originpasswordoriginpassword"},
		OriginAddresses: []string{"127.0.0.1:9"},
	}); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	noToken := func(k string) string {
		if k == "RTCEDGE_ADMIN_TOKEN" {
			return ""
		}
		return env[k]
	}
	// Loopback callers need the token too once the relay has one.
	if err := runDrain(t.Context(), []string{"-deadline", "1s"}, noToken, &out); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("drain without the token: %v, want 401", err)
	}
	start := time.Now()
	if err := runDrain(t.Context(), []string{"-deadline", "1s", "-wait", "-poll", "50ms"}, getenv, &out); err != nil {
		t.Fatalf("drain: %v\n%s", err, out.String())
	}
	t.Logf("drained in %s:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	st, err := client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil || st.GetSessionCount() != 0 || !st.GetDraining() {
		t.Fatalf("after drain: %v %v, want draining with no session", st, err)
	}
	if !strings.Contains(out.String(), "draining with 1 sessions") || !strings.Contains(out.String(), "no session left") {
		t.Errorf("output %q", out.String())
	}
	waitStatus(t, "http://"+addrs[1]+"/readyz", http.StatusServiceUnavailable)
}

// waitStatus polls url until it answers want, for at most 30 s.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if got = resp.StatusCode; got == want {
			return
		}
	}
	t.Fatalf("GET %s = %d, want %d", url, got, want)
}
