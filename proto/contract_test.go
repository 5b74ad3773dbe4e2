// Package proto_test checks that the generated contracts register and serve:
// the gRPC services with reflection on a loopback port, and the grpc-gateway
// REST routes mapped from the HTTP rules YAML files.
package proto_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	statusv1 "github.com/rtcedge/rtcedge/proto/status/v1"
)

// unimplementedRelay and unimplementedRegistry are the generated defaults:
// this test checks registration and routing, not behaviour.
type unimplementedRelay struct {
	relayv1.UnimplementedRelayServiceServer
}

type unimplementedRegistry struct {
	originv1.UnimplementedOriginRegistryServer
}

type unimplementedStatus struct {
	statusv1.UnimplementedStatusServiceServer
}

func TestServicesRegisterWithReflection(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	relayv1.RegisterRelayServiceServer(srv, unimplementedRelay{})
	originv1.RegisterOriginRegistryServer(srv, unimplementedRegistry{})
	reflection.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"relay.v1.RelayService", "origin.v1.OriginRegistry", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

func TestGatewayRoutes(t *testing.T) {
	// The relay's REST port serves RelayService; signaling's serves
	// OriginRegistry and StatusService (both have a GET /v1/status, so
	// they cannot share one mux).
	relayMux := runtime.NewServeMux()
	if err := relayv1.RegisterRelayServiceHandlerServer(t.Context(), relayMux, unimplementedRelay{}); err != nil {
		t.Fatal(err)
	}
	signalingMux := runtime.NewServeMux()
	if err := originv1.RegisterOriginRegistryHandlerServer(t.Context(), signalingMux, unimplementedRegistry{}); err != nil {
		t.Fatal(err)
	}
	if err := statusv1.RegisterStatusServiceHandlerServer(t.Context(), signalingMux, unimplementedStatus{}); err != nil {
		t.Fatal(err)
	}
	relaySrv := httptest.NewServer(relayMux)
	t.Cleanup(relaySrv.Close)
	signalingSrv := httptest.NewServer(signalingMux)
	t.Cleanup(signalingSrv.Close)

	tests := []struct {
		name, method, path, body string
		signaling                bool // signaling's mux, else the relay's
		want                     int
	}{
		// A mapped route reaches the service, which answers UNIMPLEMENTED (501).
		{name: "relay status", method: http.MethodGet, path: "/v1/status", want: http.StatusNotImplemented},
		{name: "relay allocate", method: http.MethodPost, path: "/v1/sessions", body: `{"stream":"a/b/c"}`, want: http.StatusNotImplemented},
		{name: "relay get session", method: http.MethodGet, path: "/v1/sessions/abc", want: http.StatusNotImplemented},
		{name: "relay release", method: http.MethodDelete, path: "/v1/sessions/abc", want: http.StatusNotImplemented},
		{name: "relay restart", method: http.MethodPost, path: "/v1/sessions/abc:restart", body: `{}`, want: http.StatusNotImplemented},
		{name: "relay drain", method: http.MethodPost, path: "/v1/drain", body: `{}`, want: http.StatusNotImplemented},
		{name: "origin register", signaling: true, method: http.MethodPost, path: "/v1/origins", body: `{"origin":{"id":"o1"}}`, want: http.StatusNotImplemented},
		{name: "origin list", signaling: true, method: http.MethodGet, path: "/v1/origins", want: http.StatusNotImplemented},
		{name: "origin deregister", signaling: true, method: http.MethodDelete, path: "/v1/origins/o1", want: http.StatusNotImplemented},
		{name: "streams list", signaling: true, method: http.MethodGet, path: "/v1/streams", want: http.StatusNotImplemented},
		// An unmapped route is the gateway's 404; a malformed body its 400.
		{name: "signaling status", signaling: true, method: http.MethodGet, path: "/v1/status", want: http.StatusNotImplemented},
		{name: "unknown route", method: http.MethodGet, path: "/v1/nothing", want: http.StatusNotFound},
		{name: "malformed body", method: http.MethodPost, path: "/v1/sessions", body: `{`, want: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := relaySrv
			if tc.signaling {
				srv = signalingSrv
			}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
		})
	}
}
