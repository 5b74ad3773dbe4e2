//go:build linux

package e2e

// Issue 17's proof for configured origins, probes, discovery and failover,
// with real processes: two demo origins configured by file only (no
// heartbeat), signaling instances that elect one prober among them, a
// relay, etcd.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/rtcedge/rtcedge/internal/demoorigin"
	"github.com/rtcedge/rtcedge/registry"
)

// startBareOrigin starts a demo origin that does not register itself: it
// is known to signaling only through the origins file. extra are more
// demo-origin flags (-publish KEY).
func startBareOrigin(t *testing.T, b procBinaries, id string, extra ...string) *originProc {
	t.Helper()
	p := newServiceProc(t, id, b.origin, append([]string{"-http-listen", anyPort, "-media-listen", anyPort}, extra...)...)
	ready := p.waitReadyFile(startDeadline)
	p.pin("-http-listen", ready.HTTP)
	p.pin("-media-listen", ready.UDP[0])
	o := &originProc{proc: p, url: "http://" + ready.HTTP}
	o.waitHTTP(o.url+"/healthz", nil, startDeadline)
	return o
}

// writeOriginsFile configures the demo origins as MediaMTX-like origins:
// WHIP/WHEP under their base URL, the inventory at /v3/paths/list there.
func writeOriginsFile(t *testing.T, origins map[string]*originProc) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("origins:\n")
	for id, o := range origins {
		fmt.Fprintf(&b, "  - id: %s\n    kind: mediamtx\n    url: %s\n    api_url: %s\n", id, o.url, o.url)
	}
	path := filepath.Join(t.TempDir(), "origins.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fileStack is etcd, one relay, two demo origins configured by file and
// signaling instances with that file.
type fileStack struct {
	bins procBinaries
	etcd *etcdProc
	reg  *registry.Client
	a, b *originProc
	sigs []*sigProc
}

// startFileStack starts the stack; bExtra are origin-b's extra flags and
// probe the signaling instances' probe flags.
func startFileStack(t *testing.T, sigs int, bExtra []string, probe ...string) *fileStack {
	t.Helper()
	bins := buildBinaries(t)
	s := &fileStack{bins: bins, etcd: startEtcdProc(t, bins, nil)}
	s.reg = s.etcd.registry("", "")
	startRelayProc(t, bins, "relay-1", "a", s.etcd.etcdArgs("", ""))
	s.a = startBareOrigin(t, bins, "origin-a")
	s.b = startBareOrigin(t, bins, "origin-b", bExtra...)
	file := writeOriginsFile(t, map[string]*originProc{"origin-a": s.a, "origin-b": s.b})
	args := append([]string{"-origins-file", file}, probe...)
	for i := range sigs {
		s.sigs = append(s.sigs, startSignalingProc(t, bins, fmt.Sprintf("sig-%d", i+1), "a", s.etcd.etcdArgs("", ""), args...))
	}
	waitFor(t, 30*time.Second, "both configured origins registered by the prober", func() bool {
		return s.originIDs(t) == "origin-a,origin-b"
	})
	return s
}

func (s *fileStack) originIDs(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	os, err := s.reg.ListOrigins(ctx)
	if err != nil {
		return "error: " + err.Error()
	}
	var ids []string
	for _, o := range os {
		ids = append(ids, o.ID)
	}
	return strings.Join(ids, ",")
}

func (s *fileStack) pinOf(t *testing.T, stream string) string {
	t.Helper()
	pins, err := s.reg.ListPins(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pins {
		if p.Stream == stream {
			return p.OriginID
		}
	}
	return ""
}

// publishIdle publishes stream through the edge with a fresh offer, then
// ends the session: the stream stays pinned, idle. It returns the origin.
func (s *fileStack) publishIdle(t *testing.T, ctx context.Context, sig *sigProc, name string) string {
	t.Helper()
	status, _, loc := postOffer(t, ctx, sig.url+"/whip/live/"+name)
	if status != http.StatusCreated {
		t.Fatalf("publish %s: %d", name, status)
	}
	if code, err := deleteResource(ctx, loc); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE %s: %d %v", loc, code, err)
	}
	return s.pinOf(t, "__defaultVhost__/live/"+name)
}

// leaderOf returns the signaling instances whose prober leads now.
func leadersOf(sigs []*sigProc) []*sigProc {
	var out []*sigProc
	for _, s := range sigs {
		if s.running() && s.metric("rtcedge_signaling_prober_leader") == 1 {
			out = append(out, s)
		}
	}
	return out
}

// TestProcConfiguredOriginsProbed (issue 17 items 1 and 2): two demo
// origins configured by file only, two signaling instances. Exactly one
// instance probes. When origin-a stops, after the configured probe
// failures it is deregistered: new streams and its idle streams go to
// origin-b; when it comes back it is registered and used again. When the
// probing instance dies, the other one takes over.
func TestProcConfiguredOriginsProbed(t *testing.T) {
	s := startFileStack(t, 2, nil, "-probe-interval", "300ms", "-probe-timeout", "1s", "-probe-failures", "3", "-probe-leader-ttl", "2s")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Exactly one prober.
	var leader *sigProc
	waitFor(t, 20*time.Second, "one prober leading", func() bool {
		ls := leadersOf(s.sigs)
		if len(ls) > 1 {
			t.Fatalf("%d signaling instances probe at once", len(ls))
		}
		if len(ls) == 1 {
			leader = ls[0]
		}
		return leader != nil
	})
	for _, sig := range s.sigs {
		probes := sig.metric(`rtcedge_signaling_origin_probes_total{kind="mediamtx",result="ok"}`)
		if sig != leader && probes != 0 || sig == leader && probes <= 0 {
			t.Fatalf("%s (leader %v) made %v probes", sig.name, sig == leader, probes)
		}
	}

	// Idle streams on both origins.
	onA := []string{}
	for i := range 6 {
		name := fmt.Sprintf("idle%d", i)
		if s.publishIdle(t, ctx, s.sigs[i%2], name) == "origin-a" {
			onA = append(onA, name)
		}
	}
	if len(onA) == 0 || len(onA) == 6 {
		t.Fatalf("%d of 6 streams on origin-a; want both origins used", len(onA))
	}

	// origin-a stops: deregistered by the probes.
	s.a.kill()
	killed := time.Now()
	waitFor(t, 30*time.Second, "origin-a deregistered after its failed probes", func() bool { return s.originIDs(t) == "origin-b" })
	t.Logf("origin-a deregistered %s after it died (probe interval 300ms, 3 failures)", time.Since(killed).Round(10*time.Millisecond))
	for i := range 5 {
		name := fmt.Sprintf("new%d", i)
		if got := s.publishIdle(t, ctx, s.sigs[i%2], name); got != "origin-b" {
			t.Fatalf("new stream %s pinned to %s while origin-a is down", name, got)
		}
	}
	for _, name := range onA {
		if got := s.publishIdle(t, ctx, s.sigs[0], name); got != "origin-b" {
			t.Fatalf("idle stream %s of origin-a pinned to %s, want origin-b", name, got)
		}
	}

	// origin-a comes back: registered, and new streams use it again (it
	// has no stream, origin-b all of them).
	s.a.start()
	waitFor(t, 30*time.Second, "origin-a registered again", func() bool { return s.originIDs(t) == "origin-a,origin-b" })
	if got := s.publishIdle(t, ctx, s.sigs[1], "back"); got != "origin-a" {
		t.Fatalf("a new stream went to %s, want the returned origin-a", got)
	}

	// The probing instance dies: the other takes over.
	other := s.sigs[0]
	if other == leader {
		other = s.sigs[1]
	}
	leader.kill()
	died := time.Now()
	waitFor(t, 30*time.Second, "the other instance probing", func() bool { return other.metric("rtcedge_signaling_prober_leader") == 1 })
	t.Logf("the other instance leads %s after the prober died (leader TTL 2s)", time.Since(died).Round(10*time.Millisecond))
	before := other.metric(`rtcedge_signaling_origin_probes_total{kind="mediamtx",result="ok"}`)
	waitFor(t, 20*time.Second, "probes by the new leader", func() bool {
		return other.metric(`rtcedge_signaling_origin_probes_total{kind="mediamtx",result="ok"}`) >= before+4
	})
	if ids := s.originIDs(t); ids != "origin-a,origin-b" {
		t.Fatalf("origins after the handover: %s", ids)
	}
}

// patternPlayer plays a stream and decodes the demo origin's VP8 test
// pattern.
type patternPlayer struct {
	pc  *webrtc.PeerConnection
	res whepResource

	mu      sync.Mutex
	decoded int
	bad     int
}

func playPattern(t *testing.T, ctx context.Context, endpoint string) *patternPlayer {
	t.Helper()
	pc, err := loopbackAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(videoKind(), webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pp := &patternPlayer{pc: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		var frames demoorigin.VP8Frames
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			frame := frames.Push(pkt)
			if frame == nil {
				continue
			}
			_, derr := demoorigin.DecodeTestPattern(frame)
			pp.mu.Lock()
			if derr == nil {
				pp.decoded++
			} else {
				pp.bad++
			}
			pp.mu.Unlock()
		}
	})
	res, _, err := negotiate(ctx, pc, endpoint)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	pp.res = res
	t.Cleanup(func() { _ = pc.Close() })
	return pp
}

func (p *patternPlayer) frames() (decoded, bad int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.decoded, p.bad
}

// TestProcDiscoveredStreamPlays (issue 17 item 3): a stream published
// straight into origin-b (its test pattern, not through the edge), with
// origin-a and origin-b both configured: 20 of 20 plays through the edge
// land on origin-b and decode frames; origin-a, whose inventory lacks the
// stream, gets none. A stream on no origin is 409 with Retry-After.
func TestProcDiscoveredStreamPlays(t *testing.T) {
	s := startFileStack(t, 1, []string{"-publish", "live/pattern"}, "-probe-interval", "500ms")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	const stream = "__defaultVhost__/live/pattern"
	waitFor(t, 30*time.Second, "the stream discovered on origin-b", func() bool {
		ls, err := s.reg.LiveOrigins(ctx, stream)
		return err == nil && len(ls) == 1 && ls[0].OriginID == "origin-b"
	})
	sig := s.sigs[0]
	landed := 0
	for i := range 20 {
		pp := playPattern(t, ctx, sig.url+"/whep/live/pattern")
		waitFor(t, 20*time.Second, fmt.Sprintf("play %d decoding frames", i), func() bool {
			d, _ := pp.frames()
			return d >= 3
		})
		ss, err := s.reg.ListSessionsByStream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range ss {
			if rs.OriginResource == "" || !strings.HasPrefix(rs.OriginResource, s.a.url) && !strings.HasPrefix(rs.OriginResource, s.b.url) {
				t.Fatalf("session %s at %q", rs.ID, rs.OriginResource)
			}
			if strings.HasPrefix(rs.OriginResource, s.a.url) {
				t.Fatalf("a play landed on origin-a (%s), whose inventory lacks the stream", rs.OriginResource)
			}
		}
		if len(ss) == 1 && ss[0].OriginID == "origin-b" {
			landed++
		}
		d, bad := pp.frames()
		t.Logf("play %d: %d frames decoded, %d not decodable", i, d, bad)
		if code, err := deleteResource(ctx, pp.res.Location); err != nil || code != http.StatusOK {
			t.Fatalf("DELETE: %d %v", code, err)
		}
		_ = pp.pc.Close()
	}
	if landed != 20 {
		t.Fatalf("%d of 20 plays landed on origin-b", landed)
	}

	// A stream live nowhere: 409 with Retry-After, no origin pinned.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sig.url+"/whep/live/absent", strings.NewReader(recvonlyOffer(t)))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("play of a stream on no origin: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := s.pinOf(t, "__defaultVhost__/live/absent"); got != "" {
		t.Fatalf("a stream on no origin was pinned to %s", got)
	}
}

// recvonlyOffer is a fresh WHEP offer (video, recvonly).
func recvonlyOffer(t *testing.T) string {
	t.Helper()
	pc, err := loopbackAPI().NewPeerConnection(webrtcConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(videoKind(), webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	return pc.LocalDescription().SDP
}

// TestProcOriginKilledFailover (issue 17 item 5): origin-a dies while
// streams are pinned to it, long before its probes would notice: a new
// publish of such a stream succeeds on origin-b in the same request (no
// 503), and origin-a, marked suspect, gets no new stream.
func TestProcOriginKilledFailover(t *testing.T) {
	// Probes far apart: origin-a stays registered for the whole test.
	s := startFileStack(t, 1, nil, "-probe-interval", "1m", "-probe-max-backoff", "1m")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	sig := s.sigs[0]
	var onA []string
	for i := range 4 {
		name := fmt.Sprintf("pinned%d", i)
		if s.publishIdle(t, ctx, sig, name) == "origin-a" {
			onA = append(onA, name)
		}
	}
	if len(onA) == 0 {
		t.Fatal("no stream on origin-a")
	}
	s.a.kill()
	for _, name := range onA {
		start := time.Now()
		status, retry, loc := postOffer(t, ctx, sig.url+"/whip/live/"+name)
		if status != http.StatusCreated {
			t.Fatalf("publish of %s (pinned to the dead origin-a) = %d Retry-After %q", name, status, retry)
		}
		t.Logf("publish of %s, pinned to the dead origin-a: 201 from origin-b in %s", name, time.Since(start).Round(time.Millisecond))
		if got := s.pinOf(t, "__defaultVhost__/live/"+name); got != "origin-b" {
			t.Fatalf("%s pinned to %s after the failover", name, got)
		}
		if code, err := deleteResource(ctx, loc); err != nil || code != http.StatusOK {
			t.Fatalf("DELETE: %d %v", code, err)
		}
	}
	if ids := s.originIDs(t); ids != "origin-a,origin-b" {
		t.Fatalf("origins %s: origin-a should still be registered (its probes are a minute apart)", ids)
	}
	sus, err := s.reg.ListSuspects(ctx)
	if err != nil || len(sus) != 1 || sus[0].OriginID != "origin-a" {
		t.Fatalf("suspects %+v %v", sus, err)
	}
	if v := sig.metric(`rtcedge_signaling_origin_failovers_total{reason="unreachable"}`); v != 1 {
		t.Fatalf("failovers %v, want 1 (the first setup marks origin-a suspect; the others avoid it)", v)
	}
	for i := range 3 {
		if got := s.publishIdle(t, ctx, sig, fmt.Sprintf("after%d", i)); got != "origin-b" {
			t.Fatalf("a new stream went to %s while origin-a is suspect", got)
		}
	}
}

// srsLike is a real HTTP server in the test process that behaves like SRS
// where it matters to the edge: /api/v1/versions and /api/v1/streams/
// (listing busyStream as published), a WHEP endpoint that answers 201 for
// any stream (SRS does, for streams it does not have) and a WHIP endpoint
// that closes the connection (SRS refusing a second publisher or an offer
// it cannot negotiate).
type srsLike struct {
	srv          *httptest.Server
	whep, whip   atomic.Int64
	busyStream   string
	streamsCalls atomic.Int64
}

func newSRSLike(t *testing.T, busy string) *srsLike {
	t.Helper()
	s := &srsLike{busyStream: busy}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/versions":
			fmt.Fprint(w, `{"code":0,"server":"vid-fake","service":"x","pid":"1","data":{"major":7,"minor":0,"revision":18,"version":"7.0.18"}}`)
		case "/api/v1/streams/":
			s.streamsCalls.Add(1)
			fmt.Fprintf(w, `{"code":0,"server":"vid-fake","streams":[{"id":"vid-s","name":%q,"vhost":"vid-h","app":"live","url":"/live/%s","publish":{"active":true,"cid":"c"}}]}`,
				s.busyStream, s.busyStream)
		case "/rtc/v1/whep/":
			s.whep.Add(1)
			w.Header().Set("Location", "/rtc/v1/whep/?action=delete&token=x")
			w.Header().Set("Content-Type", "application/sdp")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, "v=0\r\n") // never reached: the edge must not ask
		case "/rtc/v1/whip/":
			s.whip.Add(1)
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// TestProcSRSLikeOrigin: an origin that answers WHEP for an absent stream
// with 201 (as SRS does) is never handed a play for a stream its stream
// list lacks; an origin that closes the connection on an offer yields 409
// (a second publisher on a stream it has live) or 502, without Retry-After,
// never 503 "origin unreachable".
func TestProcSRSLikeOrigin(t *testing.T) {
	bins := buildBinaries(t)
	etcd := startEtcdProc(t, bins, nil)
	reg := etcd.registry("", "")
	startRelayProc(t, bins, "relay-1", "a", etcd.etcdArgs("", ""))
	demo := startBareOrigin(t, bins, "origin-b", "-publish", "live/pattern")
	fake := newSRSLike(t, "busy")
	file := filepath.Join(t.TempDir(), "origins.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("origins:\n  - {id: origin-b, kind: mediamtx, url: %q, api_url: %q}\n  - {id: srs-like, kind: srs, url: %q}\n",
		demo.url, demo.url, fake.srv.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	sig := startSignalingProc(t, bins, "sig-1", "a", etcd.etcdArgs("", ""), "-origins-file", file, "-probe-interval", "500ms")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	waitFor(t, 30*time.Second, "both streams discovered", func() bool {
		p, err1 := reg.LiveOrigins(ctx, "__defaultVhost__/live/pattern")
		b, err2 := reg.LiveOrigins(ctx, "__defaultVhost__/live/busy")
		return err1 == nil && err2 == nil && len(p) == 1 && len(b) == 1
	})
	post := func(path, offer string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sig.url+path, strings.NewReader(offer))
		req.Header.Set("Content-Type", "application/sdp")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusCreated {
			if code, err := deleteResource(ctx, sig.url+loc); err != nil || code != http.StatusOK {
				t.Fatalf("DELETE %s: %d %v", loc, code, err)
			}
		}
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(body)
	}
	for i := range 10 {
		if code, _, body := post("/whep/live/pattern", recvonlyOffer(t)); code != http.StatusCreated {
			t.Fatalf("play %d = %d %s", i, code, body)
		}
	}
	if code, retry, body := post("/whep/live/absent", recvonlyOffer(t)); code != http.StatusConflict || retry == "" {
		t.Fatalf("play of an absent stream = %d Retry-After %q %s", code, retry, body)
	}
	if n := fake.whep.Load(); n != 0 {
		t.Fatalf("the SRS-like origin, whose stream list lacks the streams, got %d plays", n)
	}

	// A second publisher on the stream it has live: 409.
	code, retry, body := post("/whip/live/busy", offerSDP(t, ctx))
	if code != http.StatusConflict || retry != "" {
		t.Fatalf("second publisher = %d Retry-After %q %s", code, retry, body)
	}
	// An offer it refuses otherwise: 502, not 503.
	if ok, err := reg.PinStreamTo(ctx, "__defaultVhost__/live/refused", "srs-like"); err != nil || !ok {
		t.Fatalf("pin: %v %v", ok, err)
	}
	code, retry, body = post("/whip/live/refused", offerSDP(t, ctx))
	if code != http.StatusBadGateway || retry != "" || strings.Contains(body, "unreachable") {
		t.Fatalf("refused offer = %d Retry-After %q %s", code, retry, body)
	}
	if n := fake.whip.Load(); n != 2 {
		t.Fatalf("the SRS-like origin got %d WHIP offers, want 2", n)
	}
	if sus, err := reg.ListSuspects(ctx); err != nil || len(sus) != 0 {
		t.Fatalf("an origin that refuses offers was marked suspect: %+v %v", sus, err)
	}
}
