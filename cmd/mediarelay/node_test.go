package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/clitest"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// fakeNodeAPI serves GET /api/v1/nodes/NAME over TLS like the Kubernetes
// API server, for a bearer token: the nodes map holds each node's JSON, a
// status code answers instead when negative (-503: 503).
type fakeNodeAPI struct {
	srv   *httptest.Server
	calls atomic.Int32
}

func newFakeNodeAPI(t *testing.T, token string, nodes map[string]string) *fakeNodeAPI {
	t.Helper()
	f := &fakeNodeAPI{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, "/api/v1/nodes/")
		body, found := nodes[name]
		switch {
		case r.Method != http.MethodGet || !ok:
			http.Error(w, "bad request", http.StatusBadRequest)
		case !found:
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
		case strings.HasPrefix(body, "-"):
			var code int
			_, _ = fmt.Sscanf(body, "-%d", &code)
			http.Error(w, "status", code)
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// serviceAccount writes a token and the fake server's CA like Kubernetes
// mounts them, points serviceAccountDir at them, and returns the
// environment a pod sees.
func (f *fakeNodeAPI) serviceAccount(t *testing.T, token string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := serviceAccountDir
	serviceAccountDir = dir
	t.Cleanup(func() { serviceAccountDir = old })
	host, port, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	return map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
}

const nodeWithExternal = `{"kind":"Node","apiVersion":"v1","metadata":{"name":"node-a"},
"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.5"},{"type":"ExternalIP","address":"203.0.113.7"},
{"type":"ExternalIP","address":"2001:db8::7"},{"type":"Hostname","address":"node-a"}],"images":[{"names":["x"],"sizeBytes":1}]}}`

func TestNodeExternalIPs(t *testing.T) {
	f := newFakeNodeAPI(t, "sa-token", map[string]string{
		"node-a":        nodeWithExternal,
		"internal-only": `{"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.6"},{"type":"Hostname","address":"internal-only"}]}}`,
		"bad-ip":        `{"status":{"addresses":[{"type":"ExternalIP","address":"not-an-ip"}]}}`,
		"forbidden":     "-403",
		"garbage":       `{"status":`,
	})
	env := f.serviceAccount(t, "sa-token")
	tests := []struct {
		name      string
		node      string
		env       map[string]string
		want      []string
		wantErr   string
		wantCalls int32
	}{
		{name: "external IPs", node: "node-a", env: env, want: []string{"203.0.113.7", "2001:db8::7"}, wantCalls: 1},
		{name: "no ExternalIP", node: "internal-only", env: env, wantErr: "has no ExternalIP address (it has: InternalIP 10.0.0.6, Hostname internal-only)", wantCalls: 1},
		{name: "bad address", node: "bad-ip", env: env, wantErr: `ExternalIP "not-an-ip"`, wantCalls: 1},
		{name: "RBAC missing", node: "forbidden", env: env, wantErr: "may not get nodes", wantCalls: 1},
		{name: "no such node", node: "node-b", env: env, wantErr: "404", wantCalls: 1},
		{name: "truncated JSON", node: "garbage", env: env, wantErr: "decoding node garbage", wantCalls: 1},
		{name: "not a node name", node: "../secrets", env: env, wantErr: "not a Kubernetes node name"},
		{name: "not in a pod", node: "node-a", wantErr: "not in a Kubernetes pod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.calls.Load()
			var got []string
			api, err := inClusterNodeAPI(func(k string) string { return tc.env[k] })
			if err == nil {
				got, err = api.externalIPs(t.Context(), tc.node)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			if calls := f.calls.Load() - before; calls != tc.wantCalls {
				t.Errorf("%d calls to the API, want %d", calls, tc.wantCalls)
			}
		})
	}
}

// TestNodeRetry: 5xx answers are retried a bounded number of times.
func TestNodeRetry(t *testing.T) {
	f := newFakeNodeAPI(t, "sa-token", map[string]string{"down": "-503"})
	env := f.serviceAccount(t, "sa-token")
	api, err := inClusterNodeAPI(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.externalIPs(t.Context(), "down"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want 503", err)
	}
	if n := f.calls.Load(); n != nodeAttempts {
		t.Errorf("%d calls, want %d", n, nodeAttempts)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := api.externalIPs(ctx, "down"); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("canceled: %v", err)
	}
}

// TestRunPublicAddrFromNode: run() with -public-addr-from-node advertises
// the node's ExternalIP addresses with the bound UDP port.
func TestRunPublicAddrFromNode(t *testing.T) {
	f := newFakeNodeAPI(t, "sa-token", map[string]string{"node-a": nodeWithExternal})
	env := f.serviceAccount(t, "sa-token")
	etcd := embedetcd.StartForTest(t)
	env["RTCEDGE_ETCD_ENDPOINTS"] = etcd.Endpoints()[0]
	env["RTCEDGE_PUBLIC_ADDR_FROM_NODE"] = "node-a"
	if _, err := parseConfig([]string{"-public-addr", "192.0.2.1"}, func(k string) string { return env[k] }); err == nil ||
		!strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("-public-addr with -public-addr-from-node: %v", err)
	}
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
			"-relay-id", "node-relay", "-log-level", "warn"}, func(k string) string { return env[k] }, ready)
	})
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := relayv1.NewRelayServiceClient(conn).GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.PublicAddresses) != 2 {
		t.Fatalf("public addresses %v, want the two ExternalIPs", st.PublicAddresses)
	}
	port := netip.MustParseAddrPort(st.PublicAddresses[0]).Port()
	want := []string{netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), port).String(), netip.AddrPortFrom(netip.MustParseAddr("2001:db8::7"), port).String()}
	if !slices.Equal(st.PublicAddresses, want) || port == 0 {
		t.Errorf("public addresses %v, want %v", st.PublicAddresses, want)
	}
}
