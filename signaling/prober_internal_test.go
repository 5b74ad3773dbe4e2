package signaling

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// Fixtures in the shapes SRS 6/7 and MediaMTX v1 answer with.
const (
	srsVersions = `{"code":0,"server":"vid-k3k1990","service":"0n4w6z30","pid":"1","data":{"major":7,"minor":0,"revision":18,"version":"7.0.18"}}`
	srsStreams  = `{"code":0,"server":"vid-k3k1990","service":"0n4w6z30","pid":"1","streams":[` +
		`{"id":"vid-1","name":"livestream","vhost":"vid-h","app":"live","tcUrl":"rtmp://127.0.0.1/live","url":"/live/livestream","live_ms":1,"clients":1,"frames":9,"send_bytes":1,"recv_bytes":2,"kbps":{"recv_30s":0,"send_30s":0},"publish":{"active":true,"cid":"c1"},"video":null,"audio":null},` +
		`{"id":"vid-2","name":"gone","vhost":"vid-h","app":"live","url":"/live/gone","publish":{"active":false}},` +
		`{"id":"vid-3","name":"cam","vhost":"vid-v","app":"live","url":"v.example/live/cam","publish":{"active":true,"cid":"c3"}}]}`
	mtxPaths = `{"pageCount":1,"itemCount":4,"items":[` +
		`{"name":"live/cam1","confName":"all_others","source":{"type":"rtmpConn","id":"x"},"ready":true,"readyTime":"2026-12-06T09:00:00Z","tracks":["H264"],"bytesReceived":1,"bytesSent":0,"readers":[]},` +
		`{"name":"live/waiting","confName":"all_others","source":null,"ready":false,"readyTime":null,"tracks":[],"bytesReceived":0,"bytesSent":0,"readers":[]},` +
		`{"name":"cam2","confName":"all_others","source":{"type":"rtmpConn","id":"y"},"ready":true,"tracks":["H264"],"readers":[]},` +
		`{"name":"app/sub/cam3","confName":"all_others","source":{"type":"srtConn","id":"z"},"ready":true,"tracks":["H264"],"readers":[]}]}`
)

// apiServer serves path → body (200, JSON) and records the requests.
func apiServer(t *testing.T, routes map[string]http.HandlerFunc) (*httptest.Server, *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.RequestURI()+" auth="+r.Header.Get("Authorization"))
		if h, ok := routes[r.URL.Path]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func jsonBody(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, body)
	}
}

func testProber(t *testing.T, tweak func(*ProbeConfig)) *Prober {
	t.Helper()
	cfg := ProbeConfig{Timeout: 500 * time.Millisecond, MaxBody: 1 << 20, MaxStreams: 100}
	if tweak != nil {
		tweak(&cfg)
	}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cfg.HTTPClient.CloseIdleConnections() })
	return &Prober{cfg: cfg}
}

// TestProbeKinds: what each kind's probe calls and which streams it finds.
func TestProbeKinds(t *testing.T) {
	srs, srsSeen := apiServer(t, map[string]http.HandlerFunc{"/api/v1/versions": jsonBody(srsVersions), "/api/v1/streams/": jsonBody(srsStreams)})
	mtx, _ := apiServer(t, map[string]http.HandlerFunc{"/v3/paths/list": jsonBody(mtxPaths)})
	whip, whipSeen := apiServer(t, map[string]http.HandlerFunc{"/in/live/rtcedge-probe": func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}})
	tests := []struct {
		name        string
		spec        OriginSpec
		wantStreams []string
		inventory   bool
	}{
		{name: "srs", spec: OriginSpec{ID: "s", Kind: registry.OriginKindSRS, URL: srs.URL, Token: "tok"}, inventory: true,
			wantStreams: []string{"__defaultVhost__/live/livestream", "v.example/live/cam"}},
		{name: "mediamtx", spec: OriginSpec{ID: "m", Kind: registry.OriginKindMediaMTX, URL: "http://127.0.0.1:1", APIURL: mtx.URL}, inventory: true,
			wantStreams: []string{"__defaultVhost__/live/cam1", "app/sub/cam3"}},
		{name: "whip", spec: OriginSpec{ID: "w", Kind: registry.OriginKindWHIP, WHIPURL: whip.URL + "/in/{stream}", WHEPURL: whip.URL + "/out/{stream}"}},
	}
	p := testProber(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := p.probe(t.Context(), tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(res.streams)
			if res.inventory != tc.inventory || fmt.Sprint(res.streams) != fmt.Sprint(tc.wantStreams) {
				t.Fatalf("inventory %v streams %v, want %v %v", res.inventory, res.streams, tc.inventory, tc.wantStreams)
			}
		})
	}
	// SRS is asked for more than its default 10 streams, with the token.
	if got := strings.Join(*srsSeen, "\n"); !strings.Contains(got, "GET /api/v1/streams/?count=101 auth=Bearer tok") {
		t.Fatalf("SRS requests:\n%s", got)
	}
	if got := strings.Join(*whipSeen, "\n"); !strings.HasPrefix(got, "OPTIONS /in/live/rtcedge-probe") {
		t.Fatalf("WHIP requests:\n%s", got)
	}
}

// TestProbeHostileAPIs: an API that hangs, answers garbage, 10 MB of JSON,
// the wrong shape or an error fails the probe, in bounded time (the
// probe's context) and memory (MaxBody).
func TestProbeHostileAPIs(t *testing.T) {
	big := func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, `{"pageCount":1,"items":[`)
		item := `{"name":"live/x","ready":true},`
		for i := 0; i < 10<<20/len(item); i++ {
			if _, err := fmt.Fprint(w, item); err != nil {
				return // the prober stopped reading
			}
		}
		_, _ = fmt.Fprint(w, `{"name":"live/y","ready":true}]}`)
	}
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	slowBody := func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprint(w, `{"pageCount":1,`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	// Hanging APIs get a short probe timeout (whichever of the client's
	// timers fires first names it); the others a long one, so that only
	// what they send can fail them.
	tests := []struct {
		name    string
		handler http.HandlerFunc
		timeout time.Duration
		wantErr []string // any of
	}{
		{name: "hangs before answering", handler: hang, timeout: 500 * time.Millisecond, wantErr: []string{"deadline", "timeout"}},
		{name: "hangs in the body", handler: slowBody, timeout: 500 * time.Millisecond, wantErr: []string{"deadline", "timeout"}},
		{name: "garbage", handler: jsonBody(`<html>not json`), timeout: time.Minute, wantErr: []string{"not the expected JSON"}},
		{name: "10 MB of JSON", handler: big, timeout: time.Minute, wantErr: []string{"exceeds 1048576 bytes"}},
		{name: "wrong shape", handler: jsonBody(`{"items":"x"}`), timeout: time.Minute, wantErr: []string{"not the expected JSON"}},
		{name: "no pageCount", handler: jsonBody(`{"foo":1}`), timeout: time.Minute, wantErr: []string{"no pageCount"}},
		{name: "error status", handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }, timeout: time.Minute, wantErr: []string{"500"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testProber(t, func(c *ProbeConfig) { c.Timeout = tc.timeout })
			srv, _ := apiServer(t, map[string]http.HandlerFunc{"/v3/paths/list": tc.handler})
			ctx, cancel := context.WithTimeout(t.Context(), p.cfg.Timeout)
			defer cancel()
			_, err := p.probe(ctx, OriginSpec{ID: "m", Kind: registry.OriginKindMediaMTX, URL: srv.URL, APIURL: srv.URL})
			if err == nil || !slices.ContainsFunc(tc.wantErr, func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Fatalf("err = %v, want one of %q", err, tc.wantErr)
			}
		})
	}
	p := testProber(t, nil)
	// SRS answering something else than its code 0.
	srs, _ := apiServer(t, map[string]http.HandlerFunc{"/api/v1/versions": jsonBody(`{"code":1000}`)})
	if _, err := p.probe(t.Context(), OriginSpec{ID: "s", Kind: registry.OriginKindSRS, URL: srs.URL}); err == nil {
		t.Fatal("an SRS answering code 1000 passed")
	}
}

// TestProberRecordTTL: a configured origin's lease outlives a leader
// handover and the failed probes before it is deregistered.
func TestProberRecordTTL(t *testing.T) {
	tests := []struct {
		name string
		cfg  ProbeConfig
		want time.Duration
	}{
		{name: "defaults", cfg: ProbeConfig{Interval: 2 * time.Second, Timeout: 2 * time.Second, Failures: 3, LeaderTTL: 5 * time.Second}, want: 11 * time.Second},
		{name: "fast", cfg: ProbeConfig{Interval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond, Failures: 2, LeaderTTL: time.Second}, want: 5 * time.Second},
		{name: "many failures", cfg: ProbeConfig{Interval: 5 * time.Second, Timeout: time.Second, Failures: 10, LeaderTTL: 5 * time.Second}, want: 56 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.recordTTL(); got != tc.want {
				t.Fatalf("%s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzParseOrigins: any file either fails with a message naming the file,
// or yields origins that satisfy every rule of the format.
func FuzzParseOrigins(f *testing.F) {
	f.Add([]byte("origins:\n  - id: a\n    kind: srs\n    url: http://h:1985\n"))
	f.Add([]byte(`{"origins":[{"id":"m","kind":"mediamtx","url":"http://h:8889","api_url":"http://h:9997","capacity":3,"token":"t"}]}`))
	f.Add([]byte("origins:\n  - {id: w, kind: whip, whip_url: \"http://h/{stream}\", whep_url: \"http://h/o/{stream}\", media_addresses: [\"1.2.3.4:5\"]}\n"))
	f.Add([]byte("origins: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseOrigins("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		ids := map[string]bool{}
		for _, o := range cfg.Origins {
			if registry.CheckOriginID(o.ID) != nil || ids[o.ID] || o.Line <= 0 {
				t.Fatalf("accepted origin %+v", o)
			}
			ids[o.ID] = true
			switch o.Kind {
			case registry.OriginKindWHIP:
				if !strings.Contains(o.WHIPURL, "{stream}") || !strings.Contains(o.WHEPURL, "{stream}") {
					t.Fatalf("whip origin without templates: %+v", o)
				}
			case registry.OriginKindSRS, registry.OriginKindMediaMTX:
				if checkBaseURL(o.URL) != nil {
					t.Fatalf("bad url accepted: %+v", o)
				}
			default:
				t.Fatalf("kind %q accepted", o.Kind)
			}
		}
	})
}
