package signaling_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// fixture reads a captured SDP from ../shared/reference/sdp.
func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "shared", "reference", "sdp", name))
	if err != nil {
		t.Skipf("fixture %s not available: %v", name, err)
	}
	return string(b)
}

// env is one test's edge: etcd, a relay and signaling instances.
type env struct {
	t     testing.TB
	reg   *registry.Client
	relay *mediarelay.Relay
	sig   []*httptest.Server
}

func newEnv(t testing.TB, signalings int, tweak ...func(*signaling.Config)) *env {
	t.Helper()
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	e := &env{t: t, reg: reg}
	e.relay = startRelay(t, reg, "relay-1")
	for i := 0; i < signalings; i++ {
		cfg := signaling.Config{Registry: reg, RetryAfter: 3 * time.Second}
		for _, f := range tweak {
			f(&cfg)
		}
		s, err := signaling.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s.Handler())
		t.Cleanup(func() { hs.Close(); s.Close() })
		e.sig = append(e.sig, hs)
	}
	// Wait until signaling's relay cache sees the relay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := reg.PickRelay(t.Context(), ""); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay never registered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

func startRelay(t testing.TB, reg *registry.Client, id string) *mediarelay.Relay {
	t.Helper()
	r, _ := startStoppableRelay(t, reg, id)
	return r
}

// startStoppableRelay is startRelay with a stop function that kills the
// relay (its sockets close and its registration goes); the test's cleanup
// stops it too.
func startStoppableRelay(t testing.TB, reg *registry.Client, id string, opts ...grpc.ServerOption) (*mediarelay.Relay, func()) {
	t.Helper()
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := mediarelay.New(mediarelay.Config{RelayID: id, Registry: reg, GRPCAddress: lis.Addr().String(),
		PublicAddrs: []netip.AddrPort{conns[0].LocalAddr().(*net.UDPAddr).AddrPort()}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	mediarelay.RegisterGRPC(gs, r)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = r.Serve(ctx, conns...) }()
	var once sync.Once
	stop := func() { once.Do(func() { gs.Stop(); cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	// The relay registers in the background: tests use it at once, so wait
	// for the registration (generously: a busy machine is slow, never wrong).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := reg.GetRelay(t.Context(), id); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay %s did not register", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r, stop
}

// fakeOrigin answers like a real origin of one kind, with its candidates on
// a real UDP socket of the test.
type fakeOrigin struct {
	t     testing.TB
	kind  string
	srv   *httptest.Server
	media *net.UDPConn
	ufrag string
	pwd   string
	// answerSDP is the captured answer, read once (handlers must not use
	// t: they also run inside fuzz targets).
	answerSDP string

	mu       sync.Mutex
	offers   []string
	deletes  []string
	patches  []string
	sessions int
	noPub    bool // WHEP answers 404
	// counterOffer makes WHEP answer 406 with an SDP offer of its own.
	counterOffer bool
	// restartStatus, when not 0, is the status of an ICE-restart PATCH.
	restartStatus int
	patchTypes    []string
	// onPost, when set, runs (with mu held) before a POST is answered.
	onPost func(r *http.Request)
	// conns are the client addresses requests came from: one per TCP
	// connection.
	conns map[string]bool
}

const originUfrag, originPwd = "FZyiicmGsufJMKFN", "xFXicYKlhVqEHQuZBvPfOvnatTZGqdoX"

func newFakeOrigin(t testing.TB, kind string) *fakeOrigin {
	t.Helper()
	media, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = media.Close() })
	o := &fakeOrigin{t: t, kind: kind, media: media, ufrag: originUfrag, pwd: originPwd,
		answerSDP: fixture(t, "mediamtx-whip-answer-to-chrome.sdp")}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

// answer is MediaMTX's captured answer with the candidates moved to the
// test's socket and a ufrag of its own per session (as real origins do).
func (o *fakeOrigin) answer() string {
	port := o.media.LocalAddr().(*net.UDPAddr).Port
	a := o.answerSDP
	a = strings.ReplaceAll(a, "a=ice-ufrag:"+originUfrag, fmt.Sprintf("a=ice-ufrag:%s%d", originUfrag, o.sessions))
	return strings.ReplaceAll(a, "10.88.0.1 8189", fmt.Sprintf("127.0.0.1 %d", port))
}

func (o *fakeOrigin) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conns == nil {
		o.conns = map[string]bool{}
	}
	o.conns[r.RemoteAddr] = true
	switch r.Method {
	case http.MethodPost:
		o.offers = append(o.offers, string(body))
		if o.noPub && (strings.HasSuffix(r.URL.Path, "/whep") || strings.Contains(r.URL.Path, "/whep/")) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"status":"error","error":"no stream is available on path"}`)
			return
		}
		o.sessions++
		if o.onPost != nil {
			o.onPost(r)
		}
		switch o.kind {
		case registry.OriginKindSRS:
			w.Header().Set("Location", fmt.Sprintf("/rtc/v1/whip/?action=delete&token=t%d&app=%s&stream=%s", o.sessions, r.URL.Query().Get("app"), r.URL.Query().Get("stream")))
		case registry.OriginKindMediaMTX:
			// Relative Location, bare Etag: *, as MediaMTX sends.
			w.Header().Set("Location", fmt.Sprintf("%s/%08d-0000-0000-0000-000000000000", r.URL.Path, o.sessions))
			w.Header()["Etag"] = []string{"*"}
		default:
			w.Header().Set("Location", fmt.Sprintf("http://%s/resource/%d", r.Host, o.sessions))
			w.Header().Set("ETag", `"origin-etag"`)
		}
		w.Header().Set("Content-Type", "application/sdp")
		if o.counterOffer && strings.HasSuffix(r.URL.Path, "/whep") {
			w.WriteHeader(http.StatusNotAcceptable)
		} else {
			w.WriteHeader(http.StatusCreated)
		}
		_, _ = io.WriteString(w, o.answer())
	case http.MethodDelete:
		o.deletes = append(o.deletes, r.URL.String())
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		o.patches = append(o.patches, string(body))
		o.patchTypes = append(o.patchTypes, r.Header.Get("Content-Type"))
		if r.Header.Get("Content-Type") == "application/sdp" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if o.restartStatus != 0 && strings.Contains(string(body), "a=ice-ufrag:") {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(o.restartStatus)
			return
		}
		if strings.Contains(string(body), "a=ice-ufrag:") {
			o.ufrag, o.pwd = "NewOriginUfrag", "neworiginpasswordneworiginpw"
			port := o.media.LocalAddr().(*net.UDPAddr).Port
			w.Header().Set("Content-Type", "application/trickle-ice-sdpfrag")
			w.Header().Set("ETag", `"origin-etag-2"`)
			w.WriteHeader(http.StatusOK)
			fmt.Fprintf(w, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 %d typ host\r\na=end-of-candidates\r\n", o.ufrag, o.pwd, port)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (o *fakeOrigin) counts() (offers, deletes, patches int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.offers), len(o.deletes), len(o.patches)
}

func (o *fakeOrigin) lastOffer() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.offers[len(o.offers)-1]
}

// register puts the origin into the registry.
// register registers the origin, with capacity pinned streams at most when
// given.
func (o *fakeOrigin) register(t testing.TB, reg *registry.Client, capacity ...uint32) {
	t.Helper()
	rec := registry.Origin{ID: "origin-" + o.kind, Kind: o.kind, APIBaseURL: o.srv.URL, TTL: 30 * time.Second}
	if len(capacity) > 0 {
		rec.Capacity = capacity[0]
	}
	if o.kind == registry.OriginKindWHIP {
		rec.WHIPURLTemplate = o.srv.URL + "/{stream}/whip"
		rec.WHEPURLTemplate = o.srv.URL + "/{stream}/whep"
	}
	if _, _, err := reg.RegisterOrigin(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// receiveSTUN waits for a STUN Binding request at the origin's media socket
// and returns its USERNAME.
func (o *fakeOrigin) receiveSTUN(t testing.TB) string {
	t.Helper()
	buf := make([]byte, 1500)
	_ = o.media.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := o.media.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no STUN reached the origin: %v", err)
		}
		var m stun.Message
		m.Raw = buf[:n]
		if m.Decode() == nil {
			var u stun.Username
			if u.GetFrom(&m) == nil {
				return u.String()
			}
		}
	}
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t testing.TB, method, url, contentType, body string, header ...string) response {
	t.Helper()
	r, err := tryDo(t.Context(), method, url, contentType, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for other goroutines than the test's.
func tryDo(ctx context.Context, method, url, contentType, body string, header ...string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}, err
}
