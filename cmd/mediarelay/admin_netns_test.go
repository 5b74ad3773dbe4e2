package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/internal/clitest"
	"github.com/rtcedge/rtcedge/internal/netnstest"
	"github.com/rtcedge/rtcedge/internal/testcerts"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// Environment of the re-executed admin gRPC client.
const (
	envAdminAddr  = "RTCEDGE_TEST_ADMIN_GRPC_ADDR"
	envAdminToken = "RTCEDGE_TEST_ADMIN_GRPC_TOKEN"
	envAdminTLS   = "RTCEDGE_TEST_ADMIN_GRPC_TLS" // "" (plaintext), "cert" or "no-cert"
	envAdminCA    = "RTCEDGE_TEST_ADMIN_GRPC_CA"
	envAdminCert  = "RTCEDGE_TEST_ADMIN_GRPC_CERT"
	envAdminKey   = "RTCEDGE_TEST_ADMIN_GRPC_KEY"
	envAdminCalls = "RTCEDGE_TEST_ADMIN_GRPC_CALLS" // comma-separated, in order
)

const adminSecret = "adm1n-s3cret"

// TestAdminGRPCClient is the client half of TestAdminFromAnotherHost:
// re-executed inside the test's network namespace, it makes the admin calls
// it is told to (status, list, release, reflection, health, drain) on one
// connection and prints each one's status. Run directly, it skips.
func TestAdminGRPCClient(t *testing.T) {
	addr := os.Getenv(envAdminAddr)
	if addr == "" {
		t.Skip("the client half of TestAdminFromAnotherHost")
	}
	creds := insecure.NewCredentials()
	var opts []grpc.DialOption
	if mode := os.Getenv(envAdminTLS); mode != "" {
		cert, key := os.Getenv(envAdminCert), os.Getenv(envAdminKey)
		if mode == "no-cert" {
			cert, key = "", ""
		}
		var err error
		if creds, err = cli.ClientTLS(os.Getenv(envAdminCA), cert, key); err != nil {
			t.Fatal(err)
		}
		// The test server certificate names 127.0.0.1, ::1 and localhost,
		// not the veth address.
		opts = append(opts, grpc.WithAuthority("localhost"))
	}
	if tok := os.Getenv(envAdminToken); tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer.Token(tok)))
	}
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	relay := relayv1.NewRelayServiceClient(cc)
	for _, call := range strings.Split(os.Getenv(envAdminCalls), ",") {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		switch call {
		case "status":
			_, err = relay.GetStatus(ctx, &relayv1.GetStatusRequest{})
		case "list":
			_, err = relay.ListSessions(ctx, &relayv1.ListSessionsRequest{})
		case "release":
			_, err = relay.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: "no-such-session"})
		case "drain":
			_, err = relay.Drain(ctx, &relayv1.DrainRequest{})
		case "health":
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		case "reflection":
			err = listServices(ctx, cc)
		default:
			t.Fatalf("unknown call %q", call)
		}
		cancel()
		netnstest.PrintResult(call, err)
	}
}

// listServices is grpcurl's "list": the reflection stream's
// ListServices.
func listServices(ctx context.Context, cc *grpc.ClientConn) error {
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return err
	}
	// A refused stream may end before Send: then Send says io.EOF and
	// Recv the status.
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	resp, err := rs.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetListServicesResponse().GetService()) == 0 {
		return errors.New("reflection listed no service")
	}
	return rs.CloseSend()
}

// grpcClient is how the namespace's client connects.
type grpcClient struct {
	tls   string // "", "cert", "no-cert"
	token string
}

// grpcCalls are calls of one client and the status each must get, made in
// order on one connection.
type grpcCalls struct {
	client grpcClient
	calls  []string
	want   []codes.Code
}

// restCall is an HTTP request from the namespace and its expected status.
type restCall struct {
	method, path, token string
	want                int
}

// adminMode is a relay configuration and what the namespace sees of it.
type adminMode struct {
	name  string
	flags []string
	grpc  []grpcCalls
	rest  []restCall // drain, which changes state, comes last
}

// each repeats code for every call.
func each(code codes.Code, calls ...string) []codes.Code {
	out := make([]codes.Code, len(calls))
	for i := range out {
		out[i] = code
	}
	return out
}

// adminCalls are the gRPC admin calls a refused caller tries: all of them,
// the mutating ones included.
var adminCalls = []string{"status", "list", "release", "reflection", "drain"}

// refusedREST are the REST admin calls a refused caller tries, each
// expected to get status.
func refusedREST(token string, status int) []restCall {
	return []restCall{
		{method: http.MethodGet, path: "/v1/status", token: token, want: status},
		{method: http.MethodGet, path: "/v1/sessions", token: token, want: status},
		{method: http.MethodDelete, path: "/v1/sessions/no-such-session", token: token, want: status},
		{method: http.MethodPost, path: "/v1/drain", token: token, want: status},
	}
}

// acceptedREST are the REST admin calls of an allowed caller: a release of
// an unknown session reaches the relay (404), and drain, last, succeeds.
func acceptedREST(token string) []restCall {
	return []restCall{
		{method: http.MethodGet, path: "/v1/status", token: token, want: http.StatusOK},
		{method: http.MethodGet, path: "/v1/sessions", token: token, want: http.StatusOK},
		{method: http.MethodDelete, path: "/v1/sessions/no-such-session", token: token, want: http.StatusNotFound},
		{method: http.MethodPost, path: "/v1/drain", token: token, want: http.StatusOK},
	}
}

// acceptedGRPC: every admin call of an allowed client reaches the relay
// (the release of an unknown session is NotFound); drain last.
var acceptedGRPC = []string{"status", "list", "release", "reflection", "health", "drain"}
var acceptedCodes = []codes.Code{codes.OK, codes.OK, codes.NotFound, codes.OK, codes.OK, codes.OK}

func adminModes(certs testcerts.Files) []adminMode {
	mtls := []string{"-grpc-tls-cert", certs.ServerCert, "-grpc-tls-key", certs.ServerKey, "-grpc-client-ca", certs.CA}
	return []adminMode{
		{
			name: "default flags",
			grpc: []grpcCalls{
				{client: grpcClient{}, calls: append(adminCalls, "health"), want: append(each(codes.PermissionDenied, adminCalls...), codes.OK)},
				{client: grpcClient{token: "guess"}, calls: adminCalls, want: each(codes.PermissionDenied, adminCalls...)},
			},
			rest: append(refusedREST("", http.StatusForbidden), refusedREST("guess", http.StatusForbidden)...),
		},
		{
			name:  "admin token",
			flags: []string{"-admin-token", adminSecret},
			grpc: []grpcCalls{
				{client: grpcClient{}, calls: append(adminCalls, "health"), want: append(each(codes.Unauthenticated, adminCalls...), codes.OK)},
				{client: grpcClient{token: "guess"}, calls: adminCalls, want: each(codes.Unauthenticated, adminCalls...)},
				{client: grpcClient{token: adminSecret}, calls: acceptedGRPC, want: acceptedCodes},
			},
			rest: append(append(refusedREST("", http.StatusUnauthorized), refusedREST("guess", http.StatusUnauthorized)...), acceptedREST(adminSecret)...),
		},
		{
			// The client certificate opens gRPC only: the HTTP port has no
			// TLS, so REST stays closed to other hosts.
			name:  "mTLS",
			flags: mtls,
			grpc: []grpcCalls{
				{client: grpcClient{}, calls: []string{"status"}, want: []codes.Code{codes.Unavailable}},
				{client: grpcClient{tls: "no-cert"}, calls: []string{"status"}, want: []codes.Code{codes.Unavailable}},
				{client: grpcClient{tls: "cert"}, calls: acceptedGRPC, want: acceptedCodes},
			},
			rest: append(refusedREST("", http.StatusForbidden), refusedREST("guess", http.StatusForbidden)...),
		},
		{
			name:  "mTLS and admin token",
			flags: append([]string{"-admin-token", adminSecret}, mtls...),
			grpc: []grpcCalls{
				{client: grpcClient{tls: "cert"}, calls: adminCalls, want: each(codes.Unauthenticated, adminCalls...)},
				{client: grpcClient{tls: "no-cert", token: adminSecret}, calls: []string{"status"}, want: []codes.Code{codes.Unavailable}},
				{client: grpcClient{tls: "cert", token: adminSecret}, calls: acceptedGRPC, want: acceptedCodes},
			},
			rest: append(refusedREST("", http.StatusUnauthorized), acceptedREST(adminSecret)...),
		},
		{
			name:  "insecure opt-in",
			flags: []string{"-insecure-admin-api"},
			grpc: []grpcCalls{
				{client: grpcClient{}, calls: acceptedGRPC, want: acceptedCodes},
			},
			rest: acceptedREST(""),
		},
	}
}

// TestAdminFromAnotherHost is issue 20's proof for the relay: run() listens
// for gRPC and HTTP on the root side of a veth pair, and the admin API is
// called from a network namespace on the other side (curl for REST, this
// test binary re-executed there for gRPC). With default flags every admin
// call is refused (403, PermissionDenied, naming the flags that open it);
// with -admin-token only calls carrying it are accepted (401 and
// Unauthenticated otherwise); with -grpc-client-ca a client certificate
// opens gRPC but not REST; -insecure-admin-api opens both. /healthz,
// /readyz, /metrics and gRPC health answer in every mode.
func TestAdminFromAnotherHost(t *testing.T) {
	n := netnstest.New(t, "curl")
	certs := testcerts.Write(t)
	etcd := embedetcd.StartForTest(t)
	for i, mode := range adminModes(certs) {
		t.Run(mode.name, func(t *testing.T) {
			args := append([]string{"-udp-listen", "127.0.0.1:0", "-public-addr", "127.0.0.1",
				"-grpc-listen", net.JoinHostPort(n.Host, "0"), "-http-listen", net.JoinHostPort(n.Host, "0"),
				"-relay-id", "netns-relay-" + string(rune('a'+i)), "-log-level", "error", "-etcd-endpoints", etcd.Endpoints()[0]}, mode.flags...)
			addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
				return run(ctx, args, func(string) string { return "" }, ready)
			})
			base := "http://" + addrs[1]
			// Open in every mode; /readyz once the relay registered.
			for _, path := range []string{"/healthz", "/metrics", "/readyz"} {
				var resp netnstest.Response
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
					if resp = n.Curl(t, http.MethodGet, base+path, nil, ""); resp.Status == http.StatusOK || time.Now().After(deadline) {
						break
					}
				}
				if resp.Status != http.StatusOK {
					t.Errorf("GET %s = %d, want 200: %s", path, resp.Status, resp.Body)
				}
			}
			for _, gc := range mode.grpc {
				checkGRPC(t, n, addrs[0], certs, gc)
			}
			for _, rc := range mode.rest {
				checkREST(t, n, base, rc)
			}
		})
	}
}

// checkGRPC makes the calls from the namespace and checks their codes.
func checkGRPC(t *testing.T, n *netnstest.Netns, addr string, certs testcerts.Files, gc grpcCalls) {
	t.Helper()
	out := n.RunTest(t, "TestAdminGRPCClient", envAdminAddr+"="+addr, envAdminToken+"="+gc.client.token,
		envAdminTLS+"="+gc.client.tls, envAdminCA+"="+certs.CA, envAdminCert+"="+certs.ClientCert, envAdminKey+"="+certs.ClientKey,
		envAdminCalls+"="+strings.Join(gc.calls, ","))
	results := netnstest.Results(t, out)
	for i, call := range gc.calls {
		res, ok := results[call]
		switch {
		case !ok:
			t.Errorf("client %+v: %s: no result: %s", gc.client, call, out)
		case res.Code != gc.want[i]:
			t.Errorf("client %+v: %s = %s (%s), want %s", gc.client, call, res.Code, res.Message, gc.want[i])
		case res.Code == codes.PermissionDenied:
			for _, flag := range []string{"-admin-token", "-grpc-client-ca", "-insecure-admin-api"} {
				if !strings.Contains(res.Message, flag) {
					t.Errorf("client %+v: %s: PermissionDenied does not name %s: %s", gc.client, call, flag, res.Message)
				}
			}
		}
	}
}

// checkREST makes the request from the namespace and checks its status and
// what a refusal says.
func checkREST(t *testing.T, n *netnstest.Netns, base string, rc restCall) {
	t.Helper()
	var headers []string
	if rc.token != "" {
		headers = append(headers, "Authorization: Bearer "+rc.token)
	}
	resp := n.Curl(t, rc.method, base+rc.path, headers, "")
	if resp.Status != rc.want {
		t.Errorf("%s %s (token %q) = %d, want %d: %s", rc.method, rc.path, rc.token, resp.Status, rc.want, resp.Body)
		return
	}
	switch resp.Status {
	case http.StatusUnauthorized:
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", rc.method, rc.path)
		}
	case http.StatusForbidden:
		for _, flag := range []string{"-admin-token", "-insecure-admin-api"} {
			if !strings.Contains(resp.Body, flag) {
				t.Errorf("%s %s: 403 does not name %s: %s", rc.method, rc.path, flag, resp.Body)
			}
		}
	case http.StatusOK:
		if rc.path == "/v1/status" && !strings.Contains(resp.Body, "netns-relay-") {
			t.Errorf("GET /v1/status: %s", resp.Body)
		}
	}
}

// TestAdminPolicies: the gRPC policy lets mTLS clients in, the REST one
// (plain HTTP, no client certificate to verify) does not; neither lets
// another host in by default, both let loopback in.
func TestAdminPolicies(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	cfg := func(args ...string) config {
		c, err := parseConfig(append([]string{"-etcd-endpoints", "x"}, args...), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mtls := cfg("-grpc-tls-cert", "c.pem", "-grpc-tls-key", "k.pem", "-grpc-client-ca", "ca.pem")
	tests := []struct {
		name   string
		policy func() error
		want   error
	}{
		{name: "gRPC, default, remote", policy: func() error { return cfg().adminPolicy().Allow("", remote, false) }, want: bearer.ErrForbidden},
		{name: "REST, default, remote", policy: func() error { return cfg().restAdminPolicy().Allow("", remote, false) }, want: bearer.ErrForbidden},
		{name: "REST, default, loopback", policy: func() error { return cfg().restAdminPolicy().Allow("", local, false) }},
		{name: "gRPC, mTLS, verified remote", policy: func() error { return mtls.adminPolicy().Allow("", remote, true) }},
		{name: "REST, mTLS, remote", policy: func() error { return mtls.restAdminPolicy().Allow("", remote, false) }, want: bearer.ErrForbidden},
		{name: "REST, mTLS, loopback", policy: func() error { return mtls.restAdminPolicy().Allow("", local, false) }},
		{name: "REST, token, remote with it", policy: func() error {
			return cfg("-admin-token", "t").restAdminPolicy().Allow("Bearer t", remote, false)
		}},
		{name: "REST, insecure, remote", policy: func() error { return cfg("-insecure-admin-api").restAdminPolicy().Allow("", remote, false) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.policy(); !errors.Is(err, tc.want) {
				t.Fatalf("Allow = %v, want %v", err, tc.want)
			}
		})
	}
}
