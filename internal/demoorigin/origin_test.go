package demoorigin

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// testStream has slashes, like SRS's vhost/app/stream keys.
const testStream = "__defaultVhost__/live/cam1"

// newTestOrigin starts an Origin on a loopback UDP port behind an httptest
// server, mounted under mount (with http.StripPrefix) when not empty.
func newTestOrigin(t testing.TB, mount string, opts ...func(*Config)) (*Origin, *httptest.Server) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		MediaConn:   conn,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		PLIInterval: 200 * time.Millisecond,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = o.Handler()
	if mount != "" {
		h = http.StripPrefix(mount, h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		if err := o.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return o, srv
}

// clientAPI builds a pion API for test clients that only uses loopback UDP4.
func clientAPI(t testing.TB) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
}

func newClientPC(t testing.TB) *webrtc.PeerConnection {
	t.Helper()
	pc, err := clientAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.GracefulClose() })
	return pc
}

// gatheredOffer creates an offer and waits for ICE gathering (non-trickle).
func gatheredOffer(t testing.TB, pc *webrtc.PeerConnection, opts *webrtc.OfferOptions) string {
	t.Helper()
	offer, err := pc.CreateOffer(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("client ICE gathering timed out")
	}
	return pc.LocalDescription().SDP
}

type httpResult struct {
	status int
	header http.Header
	body   string
}

func do(t testing.TB, method, u, contentType string, body string, hdr map[string]string) httpResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// payloadFor is the known payload of packet n: a VP8 payload descriptor
// (start of partition), a marker and the counter.
func payloadFor(n uint32) []byte {
	p := []byte{0x10, 0x00, 'R', 'T', 'C', 'E', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(p[6:], n)
	return p
}

// publisher is a test WHIP client sending VP8-looking RTP with a counter.
type publisher struct {
	pc       *webrtc.PeerConnection
	location string
	etag     string
	plis     chan struct{} // one value per PLI received from the origin
}

func publish(t testing.TB, base, key string) *publisher { return publishOpt(t, base, key, true) }

// publishOpt publishes key; with send false the publisher sends no RTP.
func publishOpt(t testing.TB, base, key string, send bool) *publisher {
	t.Helper()
	pc := newClientPC(t)
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	plis := make(chan struct{}, 64)
	go func() { // ends when pc closes
		for {
			pkts, _, err := tr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, p := range pkts {
				if _, ok := p.(*rtcp.PictureLossIndication); ok {
					select {
					case plis <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	res := do(t, http.MethodPost, base+"/"+key+"/whip", "application/sdp", gatheredOffer(t, pc, nil), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("WHIP POST: %d %s", res.status, res.body)
	}
	checkAnswer(t, res, "recvonly")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: res.body}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		if !send {
			return
		}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := uint32(0); ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pkt := &rtp.Packet{
				Header:  rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: uint16(n), Timestamp: n * 3000, SSRC: 1234},
				Payload: payloadFor(n),
			}
			_ = track.WriteRTP(pkt)
		}
	}()
	return &publisher{pc: pc, location: resolve(t, base, res.header.Get("Location")), etag: res.header.Get("ETag"), plis: plis}
}

// checkAnswer verifies the 201's headers and that the answer is
// non-trickle, has the wanted direction and only loopback host candidates.
func checkAnswer(t testing.TB, res httpResult, direction string) {
	t.Helper()
	if ct := res.header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("Content-Type = %q", ct)
	}
	if loc := res.header.Get("Location"); !strings.HasPrefix(loc, "/") {
		t.Errorf("Location = %q, want a relative path", loc)
	}
	if et := res.header.Get("ETag"); !strings.HasPrefix(et, `"`) || !strings.HasSuffix(et, `"`) || len(et) < 3 {
		t.Errorf("ETag = %q, want a strong entity tag", et)
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(res.body); err != nil {
		t.Fatalf("answer: %v", err)
	}
	cands := 0
	for _, m := range sd.MediaDescriptions {
		if _, ok := m.Attribute(direction); !ok {
			t.Errorf("m=%s is not %s", m.MediaName.Media, direction)
		}
		for _, a := range m.Attributes {
			if a.Key != "candidate" {
				continue
			}
			cands++
			if !strings.Contains(a.Value, " 127.0.0.1 ") || !strings.Contains(a.Value, " typ host") {
				t.Errorf("candidate %q is not a loopback host candidate", a.Value)
			}
		}
		if _, ok := m.Attribute("end-of-candidates"); !ok {
			t.Errorf("m=%s lacks end-of-candidates (answer must be non-trickle)", m.MediaName.Media)
		}
	}
	if cands == 0 {
		t.Error("answer has no candidates")
	}
}

func resolve(t testing.TB, base, loc string) string {
	t.Helper()
	b, err := url.Parse(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	l, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return b.ResolveReference(l).String()
}

// player is a test WHEP client that collects the counters it receives.
type player struct {
	pc       *webrtc.PeerConnection
	location string
	etag     string
	answer   string
	got      chan []byte
	ice      chan webrtc.ICEConnectionState
}

func play(t testing.TB, base, key string) *player {
	t.Helper()
	pc := newClientPC(t)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	p := &player{pc: pc, got: make(chan []byte, 4096), ice: make(chan webrtc.ICEConnectionState, 64)}
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		select {
		case p.ice <- s:
		default:
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case p.got <- bytes.Clone(pkt.Payload):
			default: // the test is not reading; drop
			}
		}
	})
	res := do(t, http.MethodPost, base+"/"+key+"/whep", "application/sdp", gatheredOffer(t, pc, nil), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %s", res.status, res.body)
	}
	checkAnswer(t, res, "sendonly")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: res.body}); err != nil {
		t.Fatal(err)
	}
	p.location = resolve(t, base, res.header.Get("Location"))
	p.etag = res.header.Get("ETag")
	p.answer = res.body
	return p
}

// receive waits for count packets with counters above after, checks their
// payloads are exactly what the publisher sent, and returns the last counter.
func (p *player) receive(t testing.TB, count int, after uint32) uint32 {
	t.Helper()
	deadline := time.After(20 * time.Second)
	last := after
	for got := 0; got < count; {
		select {
		case pl := <-p.got:
			n := uint32(0)
			if len(pl) == 10 {
				n = binary.BigEndian.Uint32(pl[6:])
			}
			if !bytes.Equal(pl, payloadFor(n)) {
				t.Fatalf("payload %x is not what was sent", pl)
			}
			if n <= after {
				continue // sent before the point of interest
			}
			last = max(last, n)
			got++
		case <-deadline:
			t.Fatalf("received only %d of %d packets", got, count)
		}
	}
	return last
}

// waitICE waits for the player's ICE connection state to become want.
func (p *player) waitICE(t testing.TB, want webrtc.ICEConnectionState) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case s := <-p.ice:
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("ICE state never became %s", want)
		}
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestPublishPlayForwardsRTP(t *testing.T) {
	o, srv := newTestOrigin(t, "")
	pub := publish(t, srv.URL, testStream)
	p1 := play(t, srv.URL, testStream)
	p1.receive(t, 50, 0)
	select { // a player joined: the origin asks the publisher for a key frame
	case <-pub.plis:
	case <-time.After(20 * time.Second):
		t.Fatal("the publisher never got a PLI")
	}
	p2 := play(t, srv.URL, testStream)
	p2.receive(t, 50, 0)

	st := o.Stats()
	if st.Publishers != 1 || st.Players != 2 || st.PacketsForwarded == 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if got := o.Streams(); len(got) != 1 || got[0] != testStream {
		t.Fatalf("Streams = %q", got)
	}
	if !strings.HasPrefix(pub.location, srv.URL+"/"+testStream+"/whip/") {
		t.Errorf("publisher Location = %q", pub.location)
	}

	// DELETE a player: 200, gone from Stats; a second DELETE is 404.
	if res := do(t, http.MethodDelete, p1.location, "", "", nil); res.status != http.StatusOK {
		t.Fatalf("DELETE player: %d %s", res.status, res.body)
	}
	if st := o.Stats(); st.Players != 1 {
		t.Fatalf("after DELETE, Stats = %+v", st)
	}
	if res := do(t, http.MethodDelete, p1.location, "", "", nil); res.status != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", res.status)
	}
	p2.receive(t, 20, 0)

	// DELETE the publisher: it and its remaining player go away.
	if res := do(t, http.MethodDelete, pub.location, "", "", nil); res.status != http.StatusOK {
		t.Fatalf("DELETE publisher: %d %s", res.status, res.body)
	}
	if st := o.Stats(); st.Publishers != 0 || st.Players != 0 || len(st.Streams) != 0 {
		t.Fatalf("after publisher DELETE, Stats = %+v", st)
	}
	eventually(t, "the player's connection to close", func() bool {
		s := p2.pc.ConnectionState()
		return s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateDisconnected
	})
}

func TestPlayWithoutPublisher(t *testing.T) {
	_, srv := newTestOrigin(t, "")
	pc := newClientPC(t)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	res := do(t, http.MethodPost, srv.URL+"/live/none/whep", "application/sdp", gatheredOffer(t, pc, nil), nil)
	if res.status != http.StatusNotFound {
		t.Fatalf("status %d, want 404", res.status)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/problem+json" || !strings.Contains(res.body, `"detail"`) {
		t.Fatalf("problem body: %q %q", ct, res.body)
	}
}

func TestICERestartAndIfMatch(t *testing.T) {
	_, srv := newTestOrigin(t, "")
	publish(t, srv.URL, testStream)
	p := play(t, srv.URL, testStream)
	last := p.receive(t, 20, 0)
	p.waitICE(t, webrtc.ICEConnectionStateConnected) // consume the initial states

	oldUfrag := credentialsOf(t, p.answer)
	trickle := "a=ice-ufrag:" + credentialsOfOffer(t, p.pc) + "\r\na=ice-pwd:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
	for _, tc := range []struct {
		name    string
		ifMatch string
		ct      string
		want    int
	}{
		{"no If-Match", "", "application/trickle-ice-sdpfrag", http.StatusPreconditionRequired},
		{"stale If-Match", `"nope"`, "application/trickle-ice-sdpfrag", http.StatusPreconditionFailed},
		{"wrong content type", p.etag, "application/sdp", http.StatusUnsupportedMediaType},
		{"trickle with star", "*", "application/trickle-ice-sdpfrag", http.StatusNoContent},
		{"trickle with ETag", p.etag, "application/trickle-ice-sdpfrag", http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.ifMatch != "" {
				hdr["If-Match"] = tc.ifMatch
			}
			if res := do(t, http.MethodPatch, p.location, tc.ct, trickle, hdr); res.status != tc.want {
				t.Fatalf("status %d, want %d (%s)", res.status, tc.want, res.body)
			}
		})
	}

	// ICE restart: new local credentials, sent as an sdpfrag.
	offer := gatheredOffer(t, p.pc, &webrtc.OfferOptions{ICERestart: true})
	var osd sdp.SessionDescription
	if err := osd.UnmarshalString(offer); err != nil {
		t.Fatal(err)
	}
	ufrag, pwd := iceCredentials(&osd)
	frag := "a=ice-ufrag:" + ufrag + "\r\na=ice-pwd:" + pwd + "\r\na=ice-options:trickle\r\n"
	res := do(t, http.MethodPatch, p.location, "application/trickle-ice-sdpfrag", frag, map[string]string{"If-Match": p.etag})
	if res.status != http.StatusOK {
		t.Fatalf("restart PATCH: %d %s", res.status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/trickle-ice-sdpfrag" {
		t.Errorf("Content-Type = %q", ct)
	}
	newETag := res.header.Get("ETag")
	if newETag == "" || newETag == p.etag {
		t.Errorf("ETag %q did not change from %q", newETag, p.etag)
	}
	rf, err := parseFrag([]byte(res.body))
	if err != nil {
		t.Fatal(err)
	}
	if rf.ufrag == "" || rf.ufrag == oldUfrag || rf.pwd == "" || len(rf.candidates) == 0 || !rf.endOfCandidates {
		t.Fatalf("restart answer fragment %+v (old ufrag %q)", rf, oldUfrag)
	}
	answer, err := restartedOffer(p.answer, rf.ufrag, rf.pwd)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	for _, c := range rf.candidates {
		if err := p.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c}); err != nil {
			t.Fatal(err)
		}
	}
	// The old ETag is now stale.
	if res := do(t, http.MethodPatch, p.location, "application/trickle-ice-sdpfrag", frag, map[string]string{"If-Match": p.etag}); res.status != http.StatusPreconditionFailed {
		t.Fatalf("PATCH with the old ETag: %d", res.status)
	}
	// The restarted ICE session goes through checking to connected, and
	// media keeps flowing after that.
	p.waitICE(t, webrtc.ICEConnectionStateChecking)
	p.waitICE(t, webrtc.ICEConnectionStateConnected)
	last = p.receive(t, 1, last)
	p.receive(t, 50, last)
}

func credentialsOf(t testing.TB, desc string) string {
	t.Helper()
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(desc); err != nil {
		t.Fatal(err)
	}
	u, _ := iceCredentials(&sd)
	return u
}

func credentialsOfOffer(t testing.TB, pc *webrtc.PeerConnection) string {
	t.Helper()
	return credentialsOf(t, pc.LocalDescription().SDP)
}

func TestHTTPErrors(t *testing.T) {
	_, srv := newTestOrigin(t, "")
	for _, tc := range []struct {
		name, method, path, ct, body string
		want                         int
		header, value                string
	}{
		{"options endpoint", http.MethodOptions, "/live/a/whip", "", "", http.StatusNoContent, "Accept-Post", "application/sdp"},
		{"options resource", http.MethodOptions, "/live/a/whep/abc", "", "", http.StatusNoContent, "Accept-Patch", "application/trickle-ice-sdpfrag"},
		{"get endpoint", http.MethodGet, "/live/a/whip", "", "", http.StatusMethodNotAllowed, "Allow", endpointMethods},
		{"unknown path", http.MethodPost, "/live/a", "application/sdp", "v=0", http.StatusNotFound, "", ""},
		{"bad content type", http.MethodPost, "/live/a/whip", "text/plain", "v=0", http.StatusUnsupportedMediaType, "", ""},
		{"empty body", http.MethodPost, "/live/a/whip", "application/sdp", "", http.StatusBadRequest, "", ""},
		{"garbage SDP", http.MethodPost, "/live/a/whip", "application/sdp", "hello", http.StatusBadRequest, "", ""},
		{"bad stream key", http.MethodPost, "/live/../a/whip", "application/sdp", "v=0", http.StatusBadRequest, "", ""},
		{"empty stream key", http.MethodPost, "/whip", "application/sdp", "v=0", http.StatusBadRequest, "", ""},
		{"too large", http.MethodPost, "/live/a/whip", "application/sdp", strings.Repeat("a", maxSDPBytes+1), http.StatusRequestEntityTooLarge, "", ""},
		{"delete unknown", http.MethodDelete, "/live/a/whip/nope", "", "", http.StatusNotFound, "", ""},
		{"patch unknown", http.MethodPatch, "/live/a/whip/nope", "application/trickle-ice-sdpfrag", "a=end-of-candidates", http.StatusNotFound, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Build the request by hand: "/live/../a" must reach the handler unnormalised.
			res := do(t, tc.method, srv.URL+tc.path, tc.ct, tc.body, nil)
			if res.status != tc.want {
				t.Fatalf("status %d, want %d: %s", res.status, tc.want, res.body)
			}
			if tc.header != "" && res.header.Get(tc.header) != tc.value {
				t.Errorf("%s = %q, want %q", tc.header, res.header.Get(tc.header), tc.value)
			}
		})
	}
}

func TestPublisherReplaced(t *testing.T) {
	o, srv := newTestOrigin(t, "")
	publish(t, srv.URL, testStream)
	p := play(t, srv.URL, testStream)
	p.receive(t, 10, 0)
	second := publish(t, srv.URL, testStream)
	// The old publisher and its player are gone; the new one serves the stream.
	if st := o.Stats(); st.Publishers != 1 || st.Players != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if res := do(t, http.MethodDelete, p.location, "", "", nil); res.status != http.StatusNotFound {
		t.Fatalf("DELETE of the evicted player: %d", res.status)
	}
	p2 := play(t, srv.URL, testStream)
	p2.receive(t, 10, 0)
	if res := do(t, http.MethodDelete, second.location, "", "", nil); res.status != http.StatusOK {
		t.Fatalf("DELETE: %d", res.status)
	}
}

func TestMountedUnderPrefix(t *testing.T) {
	_, srv := newTestOrigin(t, "/origin")
	pub := publish(t, srv.URL+"/origin", "live/a")
	if !strings.HasPrefix(pub.location, srv.URL+"/origin/live/a/whip/") {
		t.Fatalf("Location %q lost the mount prefix", pub.location)
	}
	if res := do(t, http.MethodDelete, pub.location, "", "", nil); res.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", res.status, res.body)
	}
}

func TestCapacityAndSilentPublisher(t *testing.T) {
	o, srv := newTestOrigin(t, "", func(c *Config) {
		c.MaxSessions = 1
		c.TrackWait = 100 * time.Millisecond
	})
	publishOpt(t, srv.URL, "live/silent", false)

	// A second session is over capacity.
	pc := newClientPC(t)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer := gatheredOffer(t, pc, nil)
	res := do(t, http.MethodPost, srv.URL+"/live/other/whip", "application/sdp", offer, nil)
	if res.status != http.StatusServiceUnavailable || !strings.Contains(res.body, "too many sessions") {
		t.Fatalf("over capacity: %d %s", res.status, res.body)
	}
	// Playing a publisher that never sent media: 503 with Retry-After.
	res = do(t, http.MethodPost, srv.URL+"/live/silent/whep", "application/sdp", offer, nil)
	if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("silent publisher: %d %s", res.status, res.body)
	}
	if st := o.Stats(); st.Publishers != 1 || st.Players != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestPublicIPRewritesCandidates(t *testing.T) {
	_, srv := newTestOrigin(t, "", func(c *Config) { c.PublicIPs = []string{"127.0.0.2"} })
	pc := newClientPC(t)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	res := do(t, http.MethodPost, srv.URL+"/live/pub/whip", "application/sdp", gatheredOffer(t, pc, nil), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	if !strings.Contains(res.body, " 127.0.0.2 ") || strings.Contains(res.body, " 127.0.0.1 ") {
		t.Fatalf("candidates not rewritten to the public IP:\n%s", res.body)
	}
}

func TestNewRejectsBadPublicIP(t *testing.T) {
	if o, err := New(Config{MediaAddr: "127.0.0.1:0", PublicIPs: []string{"example.com"}}); err == nil {
		_ = o.Close()
		t.Fatal("New accepted a host name as public IP")
	}
}
