package signaling_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/internal/netnstest"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// Registration configurations of the tests.
const (
	regNone     = "no token"
	regToken    = "token"
	regInsecure = "insecure opt-in"
	regSecret   = "reg-s3cret"
)

func regConfig(mode string, reg *registry.Client) signaling.Config {
	cfg := signaling.Config{Registry: reg}
	switch mode {
	case regToken:
		cfg.RegistrationToken = regSecret
	case regInsecure:
		cfg.InsecureOpenRegistration = true
	}
	return cfg
}

// regRequest is one registration attempt over HTTP.
type regRequest struct {
	method, path, authz, body string
}

func srsHeartbeat(id, query string) regRequest {
	return regRequest{method: http.MethodPost, path: "/api/v1/srs/register" + query,
		body: fmt.Sprintf(`{"device_id":%q,"ip":"10.0.0.5","api":["1985"],"rtc":["8000"]}`, id)}
}

func restRegistration(id, authz string) regRequest {
	return regRequest{method: http.MethodPost, path: "/v1/origins", authz: authz,
		body: fmt.Sprintf(`{"origin":{"id":%q,"kind":"ORIGIN_KIND_MEDIAMTX","apiBaseUrl":"http://10.0.0.5:8889"}}`, id)}
}

// regCase is a registration attempt and its expected outcome.
type regCase struct {
	name   string
	mode   string // regNone, regToken, regInsecure
	req    func(id string) regRequest
	status int
}

// regCases are the attempts from a peer on another host.
var regCases = []regCase{
	{name: "SRS heartbeat, no token configured", mode: regNone, req: func(id string) regRequest { return srsHeartbeat(id, "") }, status: http.StatusForbidden},
	{name: "REST, no token configured", mode: regNone, req: func(id string) regRequest { return restRegistration(id, "") }, status: http.StatusForbidden},
	{name: "REST, no token configured, a token sent anyway", mode: regNone, req: func(id string) regRequest { return restRegistration(id, "Bearer guess") }, status: http.StatusForbidden},
	{name: "SRS heartbeat, token configured, none sent", mode: regToken, req: func(id string) regRequest { return srsHeartbeat(id, "") }, status: http.StatusUnauthorized},
	{name: "SRS heartbeat, wrong token", mode: regToken, req: func(id string) regRequest { return srsHeartbeat(id, "?token=guess") }, status: http.StatusUnauthorized},
	{name: "SRS heartbeat, token in the query", mode: regToken, req: func(id string) regRequest { return srsHeartbeat(id, "?token="+regSecret) }, status: http.StatusOK},
	{name: "REST, token configured, none sent", mode: regToken, req: func(id string) regRequest { return restRegistration(id, "") }, status: http.StatusUnauthorized},
	{name: "REST, wrong token", mode: regToken, req: func(id string) regRequest { return restRegistration(id, "Bearer guess") }, status: http.StatusUnauthorized},
	{name: "REST, the token", mode: regToken, req: func(id string) regRequest { return restRegistration(id, "Bearer "+regSecret) }, status: http.StatusOK},
	{name: "SRS heartbeat, insecure opt-in", mode: regInsecure, req: func(id string) regRequest { return srsHeartbeat(id, "") }, status: http.StatusOK},
	{name: "REST, insecure opt-in", mode: regInsecure, req: func(id string) regRequest { return restRegistration(id, "") }, status: http.StatusOK},
}

// checkRegistered asserts that origin id was written to the registry, or
// that nothing was.
func checkRegistered(t *testing.T, reg *registry.Client, id string, want bool) {
	t.Helper()
	origins, err := reg.ListOrigins(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case want && (len(origins) != 1 || origins[0].ID != id):
		t.Fatalf("registry holds %+v, want origin %s", origins, id)
	case !want && len(origins) != 0:
		t.Fatalf("a refused registration wrote %+v to the registry", origins)
	}
}

// checkRefusal asserts what a refusal says: 401 with WWW-Authenticate, 403
// naming the flags that open registration.
func checkRefusal(t *testing.T, status int, header http.Header, body string) {
	t.Helper()
	switch status {
	case http.StatusUnauthorized:
		if header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	case http.StatusForbidden:
		for _, flag := range []string{"-registration-token", "-insecure-open-registration"} {
			if !strings.Contains(body, flag) {
				t.Errorf("403 body does not name %s: %s", flag, body)
			}
		}
	}
}

// TestRegistrationPolicyHTTP runs the registration cases through the
// handler with requests whose RemoteAddr is on another host (192.0.2.7),
// and from loopback.
func TestRegistrationPolicyHTTP(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	cases := append([]regCase{
		{name: "SRS heartbeat from loopback, no token configured", mode: regNone, req: func(id string) regRequest { return srsHeartbeat(id, "") }, status: http.StatusOK},
		{name: "REST from loopback, no token configured", mode: regNone, req: func(id string) regRequest { return restRegistration(id, "") }, status: http.StatusOK},
		{name: "REST from loopback, token configured, none sent", mode: regToken, req: func(id string) regRequest { return restRegistration(id, "") }, status: http.StatusUnauthorized},
	}, regCases...)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := embedetcd.NewClientForTest(t, etcd)
			srv, err := signaling.New(regConfig(tc.mode, reg))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			id := fmt.Sprintf("origin-%d", i)
			rr := tc.req(id)
			req := httptest.NewRequest(rr.method, rr.path, strings.NewReader(rr.body))
			req.Header.Set("Content-Type", "application/json")
			// X-Forwarded-For is not trusted.
			req.Header.Set("X-Forwarded-For", "127.0.0.1")
			if rr.authz != "" {
				req.Header.Set("Authorization", rr.authz)
			}
			req.RemoteAddr = "192.0.2.7:40000"
			if strings.Contains(tc.name, "from loopback") {
				req.RemoteAddr = "127.0.0.1:40000"
			}
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			checkRefusal(t, rec.Code, rec.Header(), rec.Body.String())
			checkRegistered(t, reg, id, tc.status == http.StatusOK)
		})
	}
}

// Environment of the re-executed gRPC registration client.
const (
	envRegGRPCAddr  = "RTCEDGE_TEST_REG_GRPC_ADDR"
	envRegGRPCToken = "RTCEDGE_TEST_REG_GRPC_TOKEN"
	envRegGRPCID    = "RTCEDGE_TEST_REG_GRPC_ID"
)

// TestRegistrationGRPCClient is the client half of
// TestRegistrationFromAnotherHost: re-executed inside the test's network
// namespace, it registers an origin over gRPC and prints the status code.
// Run directly, it skips.
func TestRegistrationGRPCClient(t *testing.T) {
	addr := os.Getenv(envRegGRPCAddr)
	if addr == "" {
		t.Skip("the client half of TestRegistrationFromAnotherHost")
	}
	var opts []grpc.DialOption
	if tok := os.Getenv(envRegGRPCToken); tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer.Token(tok)))
	}
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = originv1.NewOriginRegistryClient(cc).RegisterOrigin(ctx, &originv1.RegisterOriginRequest{Origin: &originv1.Origin{
		Id: os.Getenv(envRegGRPCID), Kind: originv1.OriginKind_ORIGIN_KIND_MEDIAMTX, ApiBaseUrl: "http://10.0.0.5:8889"}})
	netnstest.PrintResult("register", err)
}

// curl makes an HTTP request from inside the namespace.
func curl(t *testing.T, n *netnstest.Netns, url string, rr regRequest) (int, http.Header, string) {
	t.Helper()
	headers := []string{"Content-Type: application/json"}
	if rr.authz != "" {
		headers = append(headers, "Authorization: "+rr.authz)
	}
	resp := n.Curl(t, rr.method, url+rr.path, headers, rr.body)
	return resp.Status, resp.Header, resp.Body
}

// grpcRegister registers origin id over gRPC from inside the namespace
// (the test binary, re-executed there) and returns the status code.
func grpcRegister(t *testing.T, n *netnstest.Netns, addr, token, id string) (codes.Code, string) {
	t.Helper()
	out := n.RunTest(t, "TestRegistrationGRPCClient", envRegGRPCAddr+"="+addr, envRegGRPCToken+"="+token, envRegGRPCID+"="+id)
	res, ok := netnstest.Results(t, out)["register"]
	if !ok {
		t.Fatalf("gRPC client in the namespace printed no result: %s", out)
	}
	return res.Code, res.Message
}

// regInstance is a signaling instance serving HTTP and gRPC on one
// address.
type regInstance struct {
	reg      *registry.Client
	httpURL  string
	grpcAddr string
}

func startRegInstance(t *testing.T, etcd *embedetcd.Server, mode, host string) *regInstance {
	t.Helper()
	reg := embedetcd.NewClientForTest(t, etcd)
	srv, err := signaling.New(regConfig(mode, reg))
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer()
	srv.RegisterGRPC(gs)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = hs.Serve(hl) }()
	go func() { defer wg.Done(); _ = gs.Serve(gl) }()
	t.Cleanup(func() { _ = hs.Close(); gs.Stop(); wg.Wait(); srv.Close() })
	return &regInstance{reg: reg, httpURL: "http://" + hl.Addr().String(), grpcAddr: gl.Addr().String()}
}

// TestRegistrationFromAnotherHost is issue 20's proof: signaling listens
// on the root side of a veth pair, and registrations come from a network
// namespace on the other side (curl for HTTP, this test binary re-executed
// there for gRPC). Without a configured token they are refused (403,
// PermissionDenied) and nothing is written to etcd; with the token, or the
// insecure opt-in, they are accepted. The same registrations from
// loopback are accepted without a token.
func TestRegistrationFromAnotherHost(t *testing.T) {
	n := netnstest.New(t, "curl")
	etcd := embedetcd.StartForTest(t)
	t.Run("HTTP", func(t *testing.T) {
		for i, tc := range regCases {
			t.Run(tc.name, func(t *testing.T) {
				in := startRegInstance(t, etcd, tc.mode, n.Host)
				id := fmt.Sprintf("netns-origin-%d", i)
				status, header, body := curl(t, n, in.httpURL, tc.req(id))
				if status != tc.status {
					t.Fatalf("status %d, want %d: %s", status, tc.status, body)
				}
				checkRefusal(t, status, header, body)
				checkRegistered(t, in.reg, id, tc.status == http.StatusOK)
			})
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		tests := []struct {
			name  string
			mode  string
			token string
			want  codes.Code
		}{
			{name: "no token configured", mode: regNone, want: codes.PermissionDenied},
			{name: "no token configured, a token sent anyway", mode: regNone, token: "guess", want: codes.PermissionDenied},
			{name: "token configured, none sent", mode: regToken, want: codes.Unauthenticated},
			{name: "wrong token", mode: regToken, token: "guess", want: codes.Unauthenticated},
			{name: "the token", mode: regToken, token: regSecret, want: codes.OK},
			{name: "insecure opt-in", mode: regInsecure, want: codes.OK},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				in := startRegInstance(t, etcd, tc.mode, n.Host)
				id := fmt.Sprintf("netns-grpc-origin-%d", i)
				code, msg := grpcRegister(t, n, in.grpcAddr, tc.token, id)
				if code != tc.want {
					t.Fatalf("RegisterOrigin = %s (%s), want %s", code, msg, tc.want)
				}
				if code == codes.PermissionDenied && (!strings.Contains(msg, "-registration-token") || !strings.Contains(msg, "-insecure-open-registration")) {
					t.Errorf("PermissionDenied does not name the flags: %s", msg)
				}
				checkRegistered(t, in.reg, id, tc.want == codes.OK)
			})
		}
	})
	t.Run("loopback", func(t *testing.T) {
		in := startRegInstance(t, etcd, regNone, "127.0.0.1")
		rr := restRegistration("loopback-rest", "")
		resp, err := tryDo(t.Context(), rr.method, in.httpURL+rr.path, "application/json", rr.body)
		if err != nil || resp.status != http.StatusOK {
			t.Fatalf("REST from loopback: %v %d %s", err, resp.status, resp.body)
		}
		checkRegistered(t, in.reg, "loopback-rest", true)
		if err := in.reg.DeregisterOrigin(t.Context(), "loopback-rest"); err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if _, err := originv1.NewOriginRegistryClient(cc).RegisterOrigin(t.Context(), &originv1.RegisterOriginRequest{Origin: &originv1.Origin{
			Id: "loopback-grpc", Kind: originv1.OriginKind_ORIGIN_KIND_MEDIAMTX, ApiBaseUrl: "http://10.0.0.5:8889"}}); err != nil {
			t.Fatalf("gRPC from loopback: %v", err)
		}
		checkRegistered(t, in.reg, "loopback-grpc", true)
	})
}
