package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/clitest"
	"github.com/rtcedge/rtcedge/internal/testcerts"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "no etcd", wantErr: "-etcd-endpoints is required"},
		{name: "env etcd", env: map[string]string{"RTCEDGE_ETCD_ENDPOINTS": "127.0.0.1:2379"}},
		{name: "bad sockets", args: []string{"-etcd-endpoints", "x", "-reuseport-sockets", "0"}, wantErr: "reuseport-sockets"},
		{name: "bad data plane", args: []string{"-etcd-endpoints", "x", "-data-plane", "fast"}, wantErr: "-data-plane"},
		{name: "negative threads", args: []string{"-etcd-endpoints", "x", "-data-plane-threads", "-1"}, wantErr: "-data-plane-threads -1"},
		{name: "too many threads", args: []string{"-etcd-endpoints", "x", "-data-plane-threads", "257"}, wantErr: "-data-plane-threads 257"},
		{name: "threads from env", env: map[string]string{"RTCEDGE_ETCD_ENDPOINTS": "x", "RTCEDGE_DATA_PLANE_THREADS": "4"}},
		{name: "short lease", args: []string{"-etcd-endpoints", "x", "-registration-ttl", "1s"}, wantErr: "-registration-ttl 1s"},
		{name: "lease from env", env: map[string]string{"RTCEDGE_ETCD_ENDPOINTS": "x", "RTCEDGE_REGISTRATION_TTL": "30s"}},
		{name: "tls half", args: []string{"-etcd-endpoints", "x", "-grpc-tls-cert", "c.pem"}, wantErr: "go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestRun starts the binary's run function against a real etcd and checks
// what the README's grpcurl commands show: the services through reflection
// and GetStatus; plus REST and readiness on the HTTP port.
func TestRun(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	ctx := t.Context()
	env := map[string]string{"RTCEDGE_ETCD_ENDPOINTS": etcd.Endpoints()[0]}
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
			"-public-addr", "127.0.0.1", "-relay-id", "test-relay", "-log-level", "warn"}, func(k string) string { return env[k] }, ready)
	})

	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := relayv1.NewRelayServiceClient(conn).GetStatus(ctx, &relayv1.GetStatusRequest{})
	if err != nil || st.RelayId != "test-relay" || len(st.PublicAddresses) != 1 {
		t.Fatalf("GetStatus: %v %v", st, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"relay.v1.RelayService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("services %v lack %s", names, want)
		}
	}
	_ = rs.CloseSend()

	for _, path := range []string{"/v1/status", "/healthz", "/readyz", "/metrics"} {
		var code int
		for attempt := 0; attempt < 50; attempt++ {
			resp, err := http.Get("http://" + addrs[1] + path)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if code = resp.StatusCode; code == 200 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code != 200 {
			t.Errorf("GET %s = %d", path, code)
		}
	}
}

// TestRunMTLS: with -grpc-client-ca the admin API takes only clients with a
// certificate the CA signed.
func TestRunMTLS(t *testing.T) {
	certs := testcerts.Write(t)
	etcd := embedetcd.StartForTest(t)
	ctx := t.Context()
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
			"-public-addr", "127.0.0.1", "-relay-id", "tls-relay", "-log-level", "warn", "-etcd-endpoints", etcd.Endpoints()[0],
			"-grpc-tls-cert", certs.ServerCert, "-grpc-tls-key", certs.ServerKey, "-grpc-client-ca", certs.CA}, func(string) string { return "" }, ready)
	})

	withCert, err := cli.ClientTLS(certs.CA, certs.ClientCert, certs.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	withoutCert, err := cli.ClientTLS(certs.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{name: "client certificate", creds: withCert, ok: true},
		{name: "no client certificate", creds: withoutCert},
		{name: "plaintext", creds: insecure.NewCredentials()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err = relayv1.NewRelayServiceClient(conn).GetStatus(cctx, &relayv1.GetStatusRequest{})
			if (err == nil) != tc.ok {
				t.Fatalf("GetStatus err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestPublicAddrs(t *testing.T) {
	bound := netip.MustParseAddrPort("127.0.0.1:41234")
	tests := []struct {
		name    string
		flagged []string
		bound   netip.AddrPort
		want    []string // nil: derived from the interfaces, not checked
		wantErr string
	}{
		{name: "explicit", flagged: []string{"203.0.113.7:8000"}, bound: bound, want: []string{"203.0.113.7:8000"}},
		{name: "bare IP takes the bound port", flagged: []string{"203.0.113.7"}, bound: bound, want: []string{"203.0.113.7:41234"}},
		{name: "unset, specific bound IP", bound: bound, want: []string{"127.0.0.1:41234"}},
		{name: "unset, IPv4-mapped bound IP", bound: netip.MustParseAddrPort("[::ffff:127.0.0.1]:41234"), want: []string{"127.0.0.1:41234"}},
		{name: "unset, wildcard", bound: netip.MustParseAddrPort("[::]:41234")},
		{name: "bad", flagged: []string{"nope"}, bound: bound, wantErr: "want ip or ip:port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := publicAddrs(tc.flagged, tc.bound)
			if tc.wantErr != "" {
				if err == nil || !contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				for _, a := range got {
					if a.Port() != tc.bound.Port() || a.Addr().IsUnspecified() {
						t.Errorf("derived %s: want a usable address with port %d", a, tc.bound.Port())
					}
				}
				return
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if !slices.Equal(s, tc.want) {
				t.Errorf("got %v, want %v", s, tc.want)
			}
		})
	}
}

// TestReadyFile starts the relay on port 0 everywhere with -ready-file and
// no -public-addr: the file names the ports it bound, it advertises the UDP
// and gRPC addresses it bound, and the file is gone after the exit.
func TestReadyFile(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	path := filepath.Join(t.TempDir(), "ready.json")
	env := map[string]string{"RTCEDGE_ETCD_ENDPOINTS": etcd.Endpoints()[0], "RTCEDGE_READY_FILE": path}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan [2]string, 1)
	go func() {
		done <- run(ctx, []string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
			"-relay-id", "ready-relay", "-log-level", "warn"}, func(k string) string { return env[k] }, ready)
	}()
	var addrs [2]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	r, err := cli.ReadReadyFile(path)
	if err != nil {
		cancel()
		<-done
		t.Fatal(err)
	}
	if r.GRPC != addrs[0] || r.HTTP != addrs[1] || r.GRPCAdvertise != r.GRPC || len(r.UDP) != 1 ||
		!slices.Equal(r.Public, r.UDP) || netip.MustParseAddrPort(r.UDP[0]).Port() == 0 || r.PID != os.Getpid() {
		t.Errorf("ready file %+v; listeners %v", r, addrs)
	}
	conn, err := grpc.NewClient(r.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := relayv1.NewRelayServiceClient(conn).GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil || !slices.Equal(st.PublicAddresses, r.UDP) {
		t.Errorf("GetStatus public addresses %v (%v), want the bound %v", st.GetPublicAddresses(), err, r.UDP)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ready file outlived the process: %v", err)
	}
}

// TestRunAdminToken: with -admin-token every admin call, gRPC (reflection
// included) and REST, needs the token, even from this host; health, probes
// and metrics stay open.
func TestRunAdminToken(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	ctx := t.Context()
	env := map[string]string{"RTCEDGE_ETCD_ENDPOINTS": etcd.Endpoints()[0], "RTCEDGE_ADMIN_TOKEN": "s3cret"}
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
			"-public-addr", "127.0.0.1", "-relay-id", "token-relay", "-log-level", "warn"}, func(k string) string { return env[k] }, ready)
	})
	dial := func(opts ...grpc.DialOption) relayv1.RelayServiceClient {
		conn, err := grpc.NewClient(addrs[0], append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return relayv1.NewRelayServiceClient(conn)
	}
	if _, err := dial().GetStatus(ctx, &relayv1.GetStatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetStatus without the token: %v", err)
	}
	if _, err := dial(grpc.WithPerRPCCredentials(bearer.Token("s3cret"))).GetStatus(ctx, &relayv1.GetStatusRequest{}); err != nil {
		t.Fatalf("GetStatus with the token: %v", err)
	}
	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{name: "status without token", method: http.MethodGet, path: "/v1/status", want: http.StatusUnauthorized},
		{name: "drain without token", method: http.MethodPost, path: "/v1/drain", want: http.StatusUnauthorized},
		{name: "release with a wrong token", method: http.MethodDelete, path: "/v1/sessions/x", token: "nope", want: http.StatusUnauthorized},
		{name: "status with the token", method: http.MethodGet, path: "/v1/status", token: "s3cret", want: http.StatusOK},
		{name: "healthz open", method: http.MethodGet, path: "/healthz", want: http.StatusOK},
		{name: "metrics open", method: http.MethodGet, path: "/metrics", want: http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tc.method, "http://"+addrs[1]+tc.path, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
		})
	}
}
