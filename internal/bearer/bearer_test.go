package bearer_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/rtcedge/rtcedge/internal/bearer"
)

func TestPolicyAllow(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}
	local6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 4000}
	tests := []struct {
		name   string
		policy bearer.Policy
		authz  string
		addr   net.Addr
		cert   bool // the caller presented a verified client certificate
		want   error
	}{
		{name: "no token, loopback", addr: local, want: nil},
		{name: "no token, ipv6 loopback", addr: local6, want: nil},
		{name: "no token, remote", addr: remote, want: bearer.ErrForbidden},
		{name: "no token, unknown peer", addr: nil, want: bearer.ErrForbidden},
		{name: "no token, remote, insecure opt-in", policy: bearer.Policy{Insecure: true}, addr: remote, want: nil},
		{name: "no token, remote, verified client certificate", policy: bearer.Policy{VerifiedTLS: true}, addr: remote, cert: true, want: nil},
		{name: "no token, remote, mTLS configured but no certificate on this call", policy: bearer.Policy{VerifiedTLS: true}, addr: remote, want: bearer.ErrForbidden},
		{name: "no token, remote, certificate but mTLS not accepted", addr: remote, cert: true, want: bearer.ErrForbidden},
		{name: "token, remote, right token", policy: bearer.Policy{Token: "s3cret"}, authz: "Bearer s3cret", addr: remote, want: nil},
		{name: "token, remote, wrong token", policy: bearer.Policy{Token: "s3cret"}, authz: "Bearer nope", addr: remote, want: bearer.ErrUnauthenticated},
		{name: "token, remote, no token", policy: bearer.Policy{Token: "s3cret"}, addr: remote, want: bearer.ErrUnauthenticated},
		{name: "token, loopback, no token", policy: bearer.Policy{Token: "s3cret"}, addr: local, want: bearer.ErrUnauthenticated},
		{name: "token, basic scheme", policy: bearer.Policy{Token: "s3cret"}, authz: "Basic s3cret", addr: remote, want: bearer.ErrUnauthenticated},
		{name: "token and insecure: the token wins", policy: bearer.Policy{Token: "s3cret", Insecure: true}, addr: remote, want: bearer.ErrUnauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.Allow(tc.authz, tc.addr, tc.cert); got != tc.want {
				t.Fatalf("Allow = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIsLoopbackListen(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "127.0.0.2:0": true, "[::1]:9090": true, "localhost:9090": true,
		":9090": false, "0.0.0.0:9090": false, "[::]:9090": false, "10.0.0.7:9090": false, "relay:9090": false, "garbage": false,
	} {
		if got := bearer.IsLoopbackListen(addr); got != want {
			t.Errorf("IsLoopbackListen(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestMiddleware(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := httptest.NewServer(bearer.Policy{Token: "s3cret"}.Middleware(ok))
	defer srv.Close()
	tests := []struct {
		name  string
		authz string
		want  int
	}{
		{name: "no token", want: http.StatusUnauthorized},
		{name: "wrong token", authz: "Bearer x", want: http.StatusUnauthorized},
		{name: "token", authz: "Bearer s3cret", want: http.StatusTeapot},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/v1/sessions/x", nil)
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

// TestInterceptors runs a real gRPC server with the policy: calls without
// the token are refused (reflection included), health stays open.
func TestInterceptors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(bearer.Policy{Token: "s3cret"}.ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	reflection.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient(lis.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	list := func(cc *grpc.ClientConn) error {
		st, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
		if err != nil {
			return err
		}
		// A refused stream ends the send side (io.EOF); Recv has the status.
		if err := st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			return err
		}
		_, err = st.Recv()
		return err
	}
	anon, authed := dial(), dial(grpc.WithPerRPCCredentials(bearer.Token("s3cret")))
	if err := list(anon); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without the token: %v", err)
	}
	if err := list(authed); err != nil {
		t.Fatalf("reflection with the token: %v", err)
	}
	if _, err := healthpb.NewHealthClient(anon).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without the token: %v", err)
	}
}
