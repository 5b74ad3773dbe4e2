package signaling_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// startRelayWith starts a relay whose gRPC server has opts (and stops it at
// cleanup).
func startRelayWith(t *testing.T, reg *registry.Client, id string, opts ...grpc.ServerOption) *mediarelay.Relay {
	t.Helper()
	r, _ := startStoppableRelay(t, reg, id, opts...)
	return r
}

// TestRelayToken: a relay whose gRPC API requires a bearer token serves
// signaling configured with it (allocation, ICE restart, release) and
// refuses signaling without it or with another, whose clients get a 503
// that names no relay.
func TestRelayToken(t *testing.T) {
	const token = "relay-s3cret"
	etcd := embedetcd.StartForTest(t)
	offer := fixture(t, "chrome-whip-offer.sdp")
	tests := []struct {
		name       string
		relayToken string
		want       int
	}{
		{name: "the token", relayToken: token, want: http.StatusCreated},
		{name: "no token", want: http.StatusServiceUnavailable},
		{name: "another token", relayToken: "guess", want: http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := embedetcd.NewClientForTest(t, etcd)
			relay := startRelayWith(t, reg, "relay-tok", bearer.Policy{Token: token}.ServerOptions()...)
			origin := newFakeOrigin(t, registry.OriginKindWHIP)
			origin.register(t, reg)
			logs := &syncBuffer{}
			srv, err := signaling.New(signaling.Config{Registry: reg, RelayToken: tc.relayToken,
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv.Handler())
			defer func() { hs.Close(); srv.Close() }()

			r := do(t, http.MethodPost, hs.URL+"/whip/live/tok", "application/sdp", offer)
			if r.status != tc.want {
				t.Fatalf("POST = %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.want != http.StatusCreated {
				if strings.Contains(r.body, "relay-tok") || strings.Contains(r.body, "Unauthenticated") || strings.Contains(r.body, "bearer") {
					t.Errorf("the refusal names the relay or its error: %s", r.body)
				}
				if len(logs.lines("request_id="+r.header.Get(signaling.RequestIDHeader), "Unauthenticated")) == 0 {
					t.Errorf("the relay's refusal is not logged with the request id")
				}
				if n := int(relay.Status().GetSessionCount()); n != 0 {
					t.Errorf("the relay holds %d sessions", n)
				}
				return
			}
			loc := r.header.Get("Location")
			if n := int(relay.Status().GetSessionCount()); n != 1 {
				t.Fatalf("the relay holds %d sessions, want 1", n)
			}
			p := do(t, http.MethodPatch, hs.URL+loc, "application/trickle-ice-sdpfrag",
				restartFrag("Tok00001", "tokenpasswordtokenpasswordtoken"), "If-Match", "*")
			if p.status != http.StatusOK {
				t.Fatalf("ICE restart = %d %s", p.status, p.body)
			}
			if d := do(t, http.MethodDelete, hs.URL+loc, "", ""); d.status != http.StatusOK {
				t.Fatalf("DELETE = %d %s", d.status, d.body)
			}
			if n := int(relay.Status().GetSessionCount()); n != 0 {
				t.Fatalf("the relay holds %d sessions after DELETE, want 0", n)
			}
		})
	}
}
