package signaling_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	statusv1 "github.com/rtcedge/rtcedge/proto/status/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling"
)

// startSignaling runs a signaling instance over HTTP and gRPC on loopback.
func startSignaling(t *testing.T, reg *registry.Client, tweak ...func(*signaling.Config)) (httpURL string, grpcAddr string, s *signaling.Server) {
	t.Helper()
	cfg := signaling.Config{Registry: reg, RetryAfter: 3 * time.Second}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := signaling.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.RegisterGRPC(gs)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done; hs.Close(); s.Close() })
	return hs.URL, lis.Addr().String(), s
}

func getStreams(t *testing.T, url string, header ...string) *statusv1.ListStreamsResponse {
	t.Helper()
	r := do(t, http.MethodGet, url+"/v1/streams", "", "", header...)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/streams = %d %s", r.status, r.body)
	}
	var out statusv1.ListStreamsResponse
	if err := protojson.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("GET /v1/streams: %v in %s", err, r.body)
	}
	return &out
}

func getStatus(t *testing.T, url string) *statusv1.GetStatusResponse {
	t.Helper()
	r := do(t, http.MethodGet, url+"/v1/status", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/status = %d %s", r.status, r.body)
	}
	var out statusv1.GetStatusResponse
	if err := protojson.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("GET /v1/status: %v in %s", err, r.body)
	}
	return &out
}

// sampleValue returns the value of the sample whose line starts with
// prefix (name and labels), or -1.
func sampleValue(t *testing.T, url, prefix string) string {
	t.Helper()
	r := do(t, http.MethodGet, url+"/metrics", "", "")
	for _, l := range strings.Split(r.body, "\n") {
		if v, ok := strings.CutPrefix(l, prefix+" "); ok {
			return v
		}
	}
	return "absent"
}

// TestStatusAPI: one WHIP publisher and three WHEP players of a stream, a
// discovered stream, a stream pinned to an origin that has gone, an
// unreachable relay: the streams API, the status API (REST and gRPC) and
// the gauges say so.
func TestStatusAPI(t *testing.T) {
	e := newEnv(t, 0)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	url, grpcAddr, _ := startSignaling(t, e.reg)
	ctx := t.Context()

	pub := do(t, http.MethodPost, url+"/whip/live/cam1", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if pub.status != http.StatusCreated {
		t.Fatalf("publish = %d %s", pub.status, pub.body)
	}
	pubID := strings.TrimPrefix(pub.header.Get("Location"), "/sessions/")
	for i := range 3 {
		if r := do(t, http.MethodPost, url+"/whep/live/cam1", "application/sdp", fixture(t, "chrome-whep-offer.sdp")); r.status != http.StatusCreated {
			t.Fatalf("play %d = %d %s", i, r.status, r.body)
		}
	}
	// A stream live on the origin that nobody published through the edge.
	w, err := e.reg.NewInventoryWriter("origin-mediamtx", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, []string{"__defaultVhost__/live/cam1", "__defaultVhost__/live/direct"}, false); err != nil {
		t.Fatal(err)
	}
	// An origin that went away with a stream still pinned to it.
	gone := registry.Origin{ID: "origin-gone", Kind: registry.OriginKindMediaMTX, APIBaseURL: "http://127.0.0.1:9", TTL: 30 * time.Second}
	if _, _, err := e.reg.RegisterOrigin(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.reg.PinStreamTo(ctx, "__defaultVhost__/live/old", "origin-gone"); err != nil || !ok {
		t.Fatalf("pin: %v %v", ok, err)
	}
	if err := e.reg.DeregisterOrigin(ctx, "origin-gone"); err != nil {
		t.Fatal(err)
	}
	// A relay whose admin API does not answer.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	rr, err := e.reg.RegisterRelay(ctx, registry.Relay{ID: "relay-dead", GRPCAddress: deadAddr, PublicAddresses: []string{"127.0.0.1:9"}}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rr.Close(context.Background()) })

	streams := getStreams(t, url)
	want := map[string]struct {
		origin      string
		source      statusv1.StreamSource
		alive       bool
		pubs, views uint32
	}{
		"__defaultVhost__/live/cam1":   {"origin-mediamtx", statusv1.StreamSource_STREAM_SOURCE_EDGE, true, 1, 3},
		"__defaultVhost__/live/direct": {"origin-mediamtx", statusv1.StreamSource_STREAM_SOURCE_DISCOVERED, true, 0, 0},
		"__defaultVhost__/live/old":    {"origin-gone", statusv1.StreamSource_STREAM_SOURCE_PINNED, false, 0, 0},
	}
	if len(streams.Streams) != len(want) || !streams.Partial {
		t.Fatalf("streams %v (partial %v), want %d and partial (a relay is unreachable)", streams.Streams, streams.Partial, len(want))
	}
	for _, st := range streams.Streams {
		w, ok := want[st.Stream]
		if !ok || st.OriginId != w.origin || st.Source != w.source || st.OriginAlive != w.alive || st.Publishers != w.pubs || st.Viewers != w.views {
			t.Errorf("stream %v, want %+v", st, w)
		}
	}
	if cam := streams.Streams[0]; cam.PublisherSessionId != pubID || cam.PinTime == nil ||
		len(cam.LiveOriginIds) != 1 || cam.LiveOriginIds[0] != "origin-mediamtx" {
		t.Errorf("live/cam1: %v, want publisher %s, pinned, live on origin-mediamtx", cam, pubID)
	}
	r := do(t, http.MethodGet, url+"/v1/streams?origin_id=origin-gone", "", "")
	var filtered statusv1.ListStreamsResponse
	if err := protojson.Unmarshal([]byte(r.body), &filtered); err != nil || len(filtered.Streams) != 1 || filtered.Streams[0].Stream != "__defaultVhost__/live/old" {
		t.Fatalf("origin_id filter: %s", r.body)
	}

	st := getStatus(t, url)
	if st.Streams != 3 || st.Publishers != 1 || st.Viewers != 3 || !st.Partial || st.Time == nil {
		t.Fatalf("status totals %v", st)
	}
	origins := map[string]*statusv1.OriginStatus{}
	for _, o := range st.Origins {
		origins[o.Id] = o
	}
	if o := origins["origin-mediamtx"]; o == nil || o.Health != statusv1.OriginHealth_ORIGIN_HEALTH_HEALTHY || o.Streams != 1 ||
		o.Viewers != 3 || o.Publishers != 1 || o.Kind != registry.OriginKindMediaMTX {
		t.Errorf("origin-mediamtx %v", o)
	}
	if o := origins["origin-gone"]; o == nil || o.Health != statusv1.OriginHealth_ORIGIN_HEALTH_GONE || o.Streams != 1 {
		t.Errorf("origin-gone %v", o)
	}
	relays := map[string]*statusv1.RelayStatus{}
	for _, rl := range st.Relays {
		relays[rl.Id] = rl
	}
	if rl := relays["relay-1"]; rl == nil || !rl.Reachable || rl.Sessions != 4 {
		t.Errorf("relay-1 %v, want reachable with 4 sessions", rl)
	}
	if rl := relays["relay-dead"]; rl == nil || rl.Reachable {
		t.Errorf("relay-dead %v, want unreachable", rl)
	}

	// A suspect origin.
	if err := e.reg.MarkOriginSuspect(ctx, "origin-mediamtx", "test", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, o := range getStatus(t, url).Origins {
		if o.Id == "origin-mediamtx" && o.Health != statusv1.OriginHealth_ORIGIN_HEALTH_SUSPECT {
			t.Errorf("suspect origin reads %v", o.Health)
		}
	}

	// gRPC says the same.
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gs, err := statusv1.NewStatusServiceClient(cc).ListStreams(ctx, &statusv1.ListStreamsRequest{OriginId: "origin-mediamtx"})
	if err != nil || len(gs.Streams) != 2 || gs.Streams[0].Viewers != 3 {
		t.Fatalf("gRPC ListStreams: %v %v", gs, err)
	}

	// The gauges, by origin.
	for prefix, want := range map[string]string{
		`rtcedge_signaling_streams{origin="origin-mediamtx"}`:    "2",
		`rtcedge_signaling_viewers{origin="origin-mediamtx"}`:    "3",
		`rtcedge_signaling_publishers{origin="origin-mediamtx"}`: "1",
		`rtcedge_signaling_streams{origin="origin-gone"}`:        "1",
		`rtcedge_signaling_status_up`:                            "1",
	} {
		if got := sampleValue(t, url, prefix); got != want {
			t.Errorf("%s = %s, want %s", prefix, got, want)
		}
	}
}

// TestStatusAuth: who may read the status API, over REST and gRPC.
func TestStatusAuth(t *testing.T) {
	e := newEnv(t, 0)
	const statusTok, regTok = "status-secret", "registration-secret"
	for _, tc := range []struct {
		name         string
		statusToken  string
		regToken     string
		authz        string
		remote       string // "" is the loopback test client
		wantHTTP     int
		wantGRPCCode codes.Code
	}{
		{name: "no tokens, this host", wantHTTP: 200, wantGRPCCode: codes.OK},
		{name: "no tokens, another host", remote: "192.0.2.7:4000", wantHTTP: 403},
		{name: "status token required", statusToken: statusTok, wantHTTP: 401, wantGRPCCode: codes.Unauthenticated},
		{name: "wrong token", statusToken: statusTok, authz: "Bearer nope", wantHTTP: 401, wantGRPCCode: codes.Unauthenticated},
		{name: "status token", statusToken: statusTok, authz: "Bearer " + statusTok, remote: "192.0.2.7:4000", wantHTTP: 200},
		{name: "status token over gRPC", statusToken: statusTok, authz: "Bearer " + statusTok, wantHTTP: 200, wantGRPCCode: codes.OK},
		{name: "registration token", statusToken: statusTok, regToken: regTok, authz: "Bearer " + regTok, remote: "192.0.2.7:4000", wantHTTP: 200},
		{name: "registration token, no status token", regToken: regTok, authz: "Bearer " + regTok, remote: "192.0.2.7:4000", wantHTTP: 200},
		{name: "the status token opens no registration", statusToken: statusTok, regToken: regTok, authz: "Bearer " + statusTok,
			wantHTTP: 200, wantGRPCCode: codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, grpcAddr, s := startSignaling(t, e.reg, func(c *signaling.Config) {
				c.StatusToken, c.RegistrationToken = tc.statusToken, tc.regToken
			})
			for _, path := range []string{"/v1/streams", "/v1/status"} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				if tc.remote != "" {
					req.RemoteAddr = tc.remote
				} else {
					req.RemoteAddr = "127.0.0.1:5000"
				}
				if tc.authz != "" {
					req.Header.Set("Authorization", tc.authz)
				}
				rec := httptest.NewRecorder()
				s.Handler().ServeHTTP(rec, req)
				if rec.Code != tc.wantHTTP {
					t.Fatalf("GET %s = %d %s, want %d", path, rec.Code, rec.Body, tc.wantHTTP)
				}
				if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
			}
			if tc.name == "the status token opens no registration" {
				// The status token does not list origins (registration API).
				if r := do(t, http.MethodGet, url+"/v1/origins", "", "", "Authorization", tc.authz); r.status != http.StatusUnauthorized {
					t.Fatalf("GET /v1/origins with the status token = %d", r.status)
				}
			}
			if tc.remote != "" {
				return // gRPC callers here are all on this host
			}
			cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx := t.Context()
			if tc.authz != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.authz)
			}
			_, err = statusv1.NewStatusServiceClient(cc).GetStatus(ctx, &statusv1.GetStatusRequest{})
			if status.Code(err) != tc.wantGRPCCode {
				t.Fatalf("gRPC GetStatus: %v, want %s", err, tc.wantGRPCCode)
			}
		})
	}
}

func TestStatusPage(t *testing.T) {
	e := newEnv(t, 0)
	url, _, _ := startSignaling(t, e.reg)
	for _, tc := range []struct {
		path, ctype, contains string
		status                int
	}{
		{"/status", "text/html; charset=utf-8", `<script src="/status/status.js">`, 200},
		{"/status/", "text/html; charset=utf-8", "rtcedge status", 200},
		{"/status/status.js", "text/javascript; charset=utf-8", "/v1/streams", 200},
		{"/status/other", "", "", 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := do(t, http.MethodGet, url+tc.path, "", "")
			if r.status != tc.status || !strings.Contains(r.body, tc.contains) {
				t.Fatalf("GET %s = %d %q", tc.path, r.status, r.body)
			}
			if tc.status == 200 && (r.header.Get("Content-Type") != tc.ctype || !strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'")) {
				t.Fatalf("GET %s headers %v", tc.path, r.header)
			}
		})
	}
}

// TestStreamGaugesBounded: with more origins than the gauge keeps, the
// label takes at most maxOriginLabels values, the rest summed as (other).
func TestStreamGaugesBounded(t *testing.T) {
	e := newEnv(t, 0)
	ctx := t.Context()
	const n = 60
	for i := range n {
		id := "o" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if _, _, err := e.reg.RegisterOrigin(ctx, registry.Origin{ID: id, Kind: registry.OriginKindWHIP, APIBaseURL: "http://127.0.0.1:9",
			WHIPURLTemplate: "http://127.0.0.1:9/{stream}/whip", WHEPURLTemplate: "http://127.0.0.1:9/{stream}/whep", TTL: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if ok, err := e.reg.PinStreamTo(ctx, "__defaultVhost__/live/s"+id, id); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	url, _, _ := startSignaling(t, e.reg)
	r := do(t, http.MethodGet, url+"/metrics", "", "")
	labels, total := 0, 0.0
	for _, l := range strings.Split(r.body, "\n") {
		if v, ok := strings.CutPrefix(l, "rtcedge_signaling_streams{"); ok {
			labels++
			var f float64
			if err := json.Unmarshal([]byte(v[strings.LastIndexByte(v, ' ')+1:]), &f); err != nil {
				t.Fatal(err)
			}
			total += f
		}
	}
	if labels != 50 || total != n || !strings.Contains(r.body, `rtcedge_signaling_streams{origin="(other)"} 11`) {
		t.Fatalf("%d origin labels summing to %v, want 50 summing to %d with (other) 11", labels, total, n)
	}
}
