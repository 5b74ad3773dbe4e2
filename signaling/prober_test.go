package signaling_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// TestParseOriginsErrors: a bad origins file is refused with the line and
// the field named; YAML and JSON both work.
func TestParseOriginsErrors(t *testing.T) {
	tests := []struct {
		name, file string
		wantErr    string // "" = valid
		want       string // for valid files: id/kind/url/api/capacity/zone of each
	}{
		{name: "yaml", file: "origins:\n  - id: srs-1\n    kind: srs\n    url: http://10.0.0.5:1985\n    capacity: 10\n    zone: eu\n" +
			"  - id: mtx-1\n    kind: mediamtx\n    url: http://10.0.0.6:8889\n    api_url: http://10.0.0.6:9997\n    token: t0k\n" +
			"  - id: w\n    kind: whip\n    whip_url: https://o/in/{stream}\n    whep_url: https://o/out/{stream}\n    media_addresses: [\"10.0.0.7:8189\"]\n",
			want: "srs-1/srs/http://10.0.0.5:1985//10/eu mtx-1/mediamtx/http://10.0.0.6:8889/http://10.0.0.6:9997/0/ w/whip///0/"},
		{name: "json", file: "{\"origins\": [\n  {\"id\": \"a\", \"kind\": \"srs\", \"url\": \"http://h:1985\"}\n]}\n", want: "a/srs/http://h:1985//0/"},
		{name: "empty list", file: "origins: []\n", want: ""},
		{name: "json error line", file: "{\"origins\": [\n  {\"id\": \"a\", \"kind\": \"srs\", \"url\": \"http://h:1985\"}\n  {\"id\": \"b\"}\n]}\n", wantErr: "origins.yaml: line 2: did not find expected ','"},
		{name: "yaml syntax", file: "origins:\n  - id: a\n   kind: srs\n", wantErr: "origins.yaml: line 1"},
		{name: "unknown field", file: "origins:\n  - id: a\n    kind: srs\n    url: http://h:1985\n    capcity: 3\n", wantErr: "origins.yaml:5: origins[0].capcity: unknown field"},
		{name: "bad kind", file: "origins:\n  - id: a\n    kind: janus\n    url: http://h\n", wantErr: "origins.yaml:3: origins[0].kind: \"janus\""},
		{name: "bad url", file: "origins:\n  - id: a\n    kind: srs\n    url: ftp://h\n", wantErr: "origins.yaml:4: origins[0].url"},
		{name: "missing url", file: "origins:\n  - id: a\n    kind: mediamtx\n", wantErr: "origins.yaml:2: origins[0].url: missing"},
		{name: "missing kind", file: "origins:\n  - id: a\n    url: http://h\n", wantErr: "origins.yaml:2: origins[0].kind: missing"},
		{name: "bad id", file: "origins:\n  - id: a/b\n    kind: srs\n    url: http://h\n", wantErr: "origins.yaml:2: origins[0].id"},
		{name: "duplicate id", file: "origins:\n  - {id: a, kind: srs, url: \"http://h\"}\n  - {id: a, kind: srs, url: \"http://i\"}\n", wantErr: "origins.yaml:3: origins[1].id: \"a\" is also the id of the origin at line 2"},
		{name: "negative capacity", file: "origins:\n  - id: a\n    kind: srs\n    url: http://h\n    capacity: -1\n", wantErr: "origins.yaml:5: origins[0].capacity"},
		{name: "whip without templates", file: "origins:\n  - id: a\n    kind: whip\n    url: http://h\n", wantErr: "origins[0].whip_url"},
		{name: "template without {stream}", file: "origins:\n  - id: a\n    kind: whip\n    whip_url: http://h/in\n    whep_url: http://h/out/{stream}\n", wantErr: "origins.yaml:4: origins[0].whip_url"},
		{name: "bad media address", file: "origins:\n  - id: a\n    kind: srs\n    url: http://h\n    media_addresses: [h:1]\n", wantErr: "origins.yaml:5: origins[0].media_addresses"},
		{name: "not a list", file: "origins: {id: a}\n", wantErr: "origins.yaml:1: origins: want a list"},
		{name: "unknown top level", file: "origin:\n  - id: a\n", wantErr: "origins.yaml:1: origin: unknown field"},
		{name: "empty", file: "", wantErr: "empty"},
		{name: "id a number", file: "origins:\n  - id: [1]\n    kind: srs\n    url: http://h\n", wantErr: "origins.yaml:2: origins[0].id: want a string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := signaling.ParseOrigins("origins.yaml", []byte(tc.file))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range cfg.Origins {
				got = append(got, fmt.Sprintf("%s/%s/%s/%s/%d/%s", o.ID, o.Kind, o.URL, o.APIURL, o.Capacity, o.Zone))
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("got %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
}

// mtxAPI is a real HTTP server answering /v3/paths/list like MediaMTX,
// with the streams it is told and a switch that makes it fail.
type mtxAPI struct {
	srv     *httptest.Server
	mu      sync.Mutex
	streams []string
	failing bool
	calls   atomic.Int64
}

func newMTXAPI(t *testing.T, streams ...string) *mtxAPI {
	t.Helper()
	m := &mtxAPI{streams: streams}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.calls.Add(1)
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.failing || r.URL.Path != "/v3/paths/list" {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		var items []string
		for _, s := range m.streams {
			items = append(items, fmt.Sprintf(`{"name":%q,"confName":"all_others","ready":true,"tracks":["VP8"],"readers":[]}`, s))
		}
		fmt.Fprintf(w, `{"pageCount":1,"itemCount":%d,"items":[%s]}`, len(items), strings.Join(items, ","))
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mtxAPI) set(failing bool) {
	m.mu.Lock()
	m.failing = failing
	m.mu.Unlock()
}

// startProber runs a prober of a new signaling instance on reg until the
// test ends (or stop is called).
func startProber(t *testing.T, reg *registry.Client, cfg signaling.ProbeConfig) (*signaling.Prober, func()) {
	t.Helper()
	s, err := signaling.New(signaling.Config{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.NewProber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; s.Close() }) }
	t.Cleanup(stop)
	return p, stop
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func originIDs(t *testing.T, reg *registry.Client) string {
	t.Helper()
	os, err := reg.ListOrigins(t.Context())
	if err != nil {
		return "error"
	}
	var ids []string
	for _, o := range os {
		ids = append(ids, o.ID)
	}
	return strings.Join(ids, ",")
}

// TestProberLifecycle (issue 17 items 1-3): configured origins are
// registered while they answer, their live streams recorded; one that
// fails -probe-failures probes in a row is deregistered (its discovered
// streams go) and registered again when it answers; the file is reloaded
// when it changes, and a broken file leaves the configuration in force.
func TestProberLifecycle(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	a, b := newMTXAPI(t, "live/cam1", "cam-unaddressable"), newMTXAPI(t)
	file := filepath.Join(t.TempDir(), "origins.yaml")
	writeFile(t, file, fmt.Sprintf("origins:\n  - id: a\n    kind: mediamtx\n    url: %s\n    api_url: %s\n", a.srv.URL, a.srv.URL))
	p, _ := startProber(t, reg, signaling.ProbeConfig{File: file, Interval: 100 * time.Millisecond, Timeout: time.Second,
		Failures: 3, LeaderTTL: time.Second, WatchInterval: 50 * time.Millisecond})
	waitUntil(t, "origin a registered", func() bool { return originIDs(t, reg) == "a" })
	waitUntil(t, "a's stream discovered", func() bool {
		ls, err := reg.LiveOrigins(t.Context(), "__defaultVhost__/live/cam1")
		return err == nil && len(ls) == 1 && ls[0].OriginID == "a" && ls[0].Source == registry.StreamSourceProbe
	})
	if !p.Leading() {
		t.Fatal("the only prober does not lead")
	}

	// a fails: deregistered after the configured failures, never before.
	before := a.calls.Load()
	a.set(true)
	waitUntil(t, "origin a deregistered", func() bool { return originIDs(t, reg) == "" })
	if n := a.calls.Load() - before; n < 3 {
		t.Fatalf("deregistered after %d probes, want at least 3", n)
	}
	if ls, err := reg.ListLiveStreams(t.Context()); err != nil || len(ls) != 0 {
		t.Fatalf("discovered streams of a down origin: %+v %v", ls, err)
	}
	a.set(false)
	waitUntil(t, "origin a back", func() bool { return originIDs(t, reg) == "a" })

	// The file changes: b is added.
	writeFile(t, file, fmt.Sprintf("origins:\n  - {id: a, kind: mediamtx, url: %q, api_url: %q}\n  - {id: b, kind: mediamtx, url: %q, api_url: %q, capacity: 7}\n",
		a.srv.URL, a.srv.URL, b.srv.URL, b.srv.URL))
	waitUntil(t, "origin b registered", func() bool { return originIDs(t, reg) == "a,b" })
	// A broken file: the configuration in force stays, named errors.
	writeFile(t, file, "origins:\n  - id: a\n    kind: nope\n")
	if err := p.Reload(); err == nil || !strings.Contains(err.Error(), "origins.yaml:3: origins[0].kind") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if n := len(p.Origins()); n != 2 {
		t.Fatalf("%d origins in force after a failed reload, want 2", n)
	}
	// b removed from the file: deregistered.
	writeFile(t, file, fmt.Sprintf("origins:\n  - {id: a, kind: mediamtx, url: %q, api_url: %q}\n", a.srv.URL, a.srv.URL))
	waitUntil(t, "origin b deregistered", func() bool { return originIDs(t, reg) == "a" })
}

// TestProberElection: of two signaling instances exactly one probes; when
// it stops, the other takes over.
func TestProberElection(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	a := newMTXAPI(t, "live/x")
	file := filepath.Join(t.TempDir(), "origins.yaml")
	writeFile(t, file, fmt.Sprintf("origins:\n  - {id: a, kind: mediamtx, url: %q, api_url: %q}\n", a.srv.URL, a.srv.URL))
	cfg := signaling.ProbeConfig{File: file, Interval: 100 * time.Millisecond, LeaderTTL: time.Second}
	p1, stop1 := startProber(t, reg, cfg)
	p2, stop2 := startProber(t, reg, cfg)
	var both atomic.Bool
	waitUntil(t, "a leader", func() bool {
		l1, l2 := p1.Leading(), p2.Leading()
		if l1 && l2 {
			both.Store(true)
		}
		return l1 || l2
	})
	waitUntil(t, "origin a registered", func() bool { return originIDs(t, reg) == "a" })
	if both.Load() || p1.Leading() == p2.Leading() {
		t.Fatalf("leaders: %v %v", p1.Leading(), p2.Leading())
	}
	leader, other, stopLeader := p1, p2, stop1
	if p2.Leading() {
		leader, other, stopLeader = p2, p1, stop2
	}
	stopLeader()
	if leader.Leading() {
		t.Fatal("a stopped prober still leads")
	}
	waitUntil(t, "the other instance leads", other.Leading)
	before := a.calls.Load()
	waitUntil(t, "the new leader probes", func() bool { return a.calls.Load() > before+2 })
}

// TestSRSHooks: SRS's on_publish pins the stream to the calling origin and
// records it live at once; on_unpublish undoes both; hooks are authorised
// like registration.
func TestSRSHooks(t *testing.T) {
	e := newEnv(t, 1, func(c *signaling.Config) { c.RegistrationToken = "regtok" })
	for _, id := range []string{"srs-a", "srs-b"} {
		if _, _, err := e.reg.RegisterOrigin(t.Context(), registry.Origin{ID: id, Kind: registry.OriginKindSRS,
			APIBaseURL: "http://127.0.0.1:1985", TTL: 30 * time.Second, Labels: map[string]string{"srs_server": "vid-" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	hook := func(action, query string) response {
		body := fmt.Sprintf(`{"server_id":"vid-srs-b","service_id":"x","action":%q,"client_id":"c1","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://127.0.0.1/live","stream":"obs","param":"","stream_url":"/live/obs","stream_id":"vid-s"}`, action)
		return do(t, http.MethodPost, e.sig[0].URL+"/api/v1/srs/hooks"+query, "application/json", body)
	}
	if r := hook("on_publish", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("hook without the token = %d %s", r.status, r.body)
	}
	if r := hook("on_publish", "?token=regtok"); r.status != http.StatusOK || !strings.Contains(r.body, `"code":0`) {
		t.Fatalf("on_publish = %d %s", r.status, r.body)
	}
	const stream = "__defaultVhost__/live/obs"
	if got := pinnedTo(t, e.reg, stream); got != "srs-b" {
		t.Fatalf("pinned to %q, want srs-b (by server_id)", got)
	}
	if ls, err := e.reg.LiveOrigins(t.Context(), stream); err != nil || len(ls) != 1 || ls[0].OriginID != "srs-b" {
		t.Fatalf("live %+v %v", ls, err)
	}
	if r := hook("on_unpublish", "?token=regtok"); r.status != http.StatusOK {
		t.Fatalf("on_unpublish = %d %s", r.status, r.body)
	}
	if got := pinnedTo(t, e.reg, stream); got != "" {
		t.Fatalf("still pinned to %q", got)
	}
	if ls, err := e.reg.LiveOrigins(t.Context(), stream); err != nil || len(ls) != 0 {
		t.Fatalf("live %+v %v", ls, err)
	}
	// ?origin= names the origin; other actions are acknowledged.
	if r := hook("on_publish", "?token=regtok&origin=srs-a"); r.status != http.StatusOK {
		t.Fatalf("on_publish = %d %s", r.status, r.body)
	}
	if got := pinnedTo(t, e.reg, stream); got != "srs-a" {
		t.Fatalf("pinned to %q, want srs-a", got)
	}
	if r := hook("on_play", "?token=regtok"); r.status != http.StatusOK {
		t.Fatalf("on_play = %d %s", r.status, r.body)
	}
}

// TestHeartbeatSRSDiscovery reproduces issue 17's measurement: two
// SRS-like origins registered by their own heartbeat, a stream live on the
// second only (it answers WHEP for absent streams with 201, as SRS does).
// The prober reads both stream lists, and 10 of 10 plays go to the second
// (before: 0 of 10).
func TestHeartbeatSRSDiscovery(t *testing.T) {
	e := newEnv(t, 1)
	type srs struct {
		o   *fakeOrigin
		api *httptest.Server
	}
	start := func(id, live string) srs {
		o := newFakeOrigin(t, registry.OriginKindSRS)
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/api/v1/versions":
				fmt.Fprint(w, `{"code":0,"server":"vid-`+id+`","data":{"version":"7.0.18"}}`)
			case "/api/v1/streams/":
				var streams []string
				if live != "" {
					streams = append(streams, fmt.Sprintf(`{"name":%q,"app":"live","url":"/live/%s","publish":{"active":true}}`, live, live))
				}
				fmt.Fprintf(w, `{"code":0,"streams":[%s]}`, strings.Join(streams, ","))
			default:
				o.serve(w, r)
			}
		}))
		t.Cleanup(api.Close)
		port := api.Listener.Addr().(*net.TCPAddr).Port
		body := fmt.Sprintf(`{"device_id":%q,"ip":"127.0.0.1","server":"vid-%s","service":"s","pid":"1","api":["%d"]}`, id, id, port)
		if r := do(t, http.MethodPost, e.sig[0].URL+"/api/v1/srs/register", "application/json", body); r.status != http.StatusOK {
			t.Fatalf("heartbeat %s = %d %s", id, r.status, r.body)
		}
		return srs{o: o, api: api}
	}
	a := start("srs-a", "")
	b := start("srs-b", "cam1")
	startProber(t, e.reg, signaling.ProbeConfig{Interval: 200 * time.Millisecond})
	waitUntil(t, "cam1 discovered on srs-b", func() bool {
		ls, err := e.reg.LiveOrigins(t.Context(), "__defaultVhost__/live/cam1")
		return err == nil && len(ls) == 1 && ls[0].OriginID == "srs-b"
	})
	for i := range 10 {
		r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/cam1", "application/sdp", fixture(t, "chrome-whep-offer.sdp"))
		if r.status != http.StatusCreated {
			t.Fatalf("play %d = %d %s", i, r.status, r.body)
		}
	}
	na, _, _ := a.o.counts()
	nb, _, _ := b.o.counts()
	if na != 0 || nb != 10 {
		t.Fatalf("plays: srs-a %d, srs-b %d; want 0 and 10", na, nb)
	}
}
