package signaling_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// sendBinding sends the client's STUN Binding request to a candidate of the
// rewritten answer, as a browser would.
func sendBinding(t *testing.T, answer, clientUfrag, originUfrag, originPwd string) {
	t.Helper()
	a, err := sdpx.ParseAnswer(answer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(originUfrag+":"+clientUfrag),
		stun.NewShortTermIntegrity(originPwd), stun.Fingerprint)
	if _, err := c.WriteToUDPAddrPort(m.Raw, a.MediaAddresses[0]); err != nil {
		t.Fatal(err)
	}
}

func TestPublishThroughEachAdapter(t *testing.T) {
	for _, kind := range []string{registry.OriginKindMediaMTX, registry.OriginKindSRS, registry.OriginKindWHIP} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, 1)
			origin := newFakeOrigin(t, kind)
			origin.register(t, e.reg)
			offer := fixture(t, "chrome-whip-offer.sdp")
			clientOffer, err := sdpx.ParseOffer(offer)
			if err != nil {
				t.Fatal(err)
			}

			r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/cam1", "application/sdp", offer)
			if r.status != http.StatusCreated {
				t.Fatalf("POST = %d %s", r.status, r.body)
			}
			loc, etag := r.header.Get("Location"), r.header.Get("ETag")
			if !strings.HasPrefix(loc, "/sessions/") || len(etag) < 3 || etag[0] != '"' || r.header.Get("Content-Type") != "application/sdp" {
				t.Fatalf("headers %v", r.header)
			}
			// The origin got the offer without any client address.
			fwd := origin.lastOffer()
			if strings.Contains(fwd, "a=candidate") || strings.Contains(fwd, "10.88.0.2") {
				t.Fatalf("client address reached the origin:\n%s", fwd)
			}
			// Every candidate in the answer is the relay's.
			relayAddr := e.relay.Status().PublicAddresses[0]
			host, port, _ := net.SplitHostPort(relayAddr)
			for _, line := range strings.Split(r.body, "\r\n") {
				if strings.HasPrefix(line, "a=candidate:") && !strings.Contains(line, host+" "+port+" typ host") {
					t.Errorf("non-relay candidate %s", line)
				}
			}
			// Media: the client's verified STUN reaches the origin's socket
			// through the relay.
			ans, err := sdpx.ParseAnswer(r.body)
			if err != nil {
				t.Fatal(err)
			}
			sendBinding(t, r.body, clientOffer.ICE.Ufrag, ans.ICE.Ufrag, originPwd)
			if got := origin.receiveSTUN(t); got != ans.ICE.Ufrag+":"+clientOffer.ICE.Ufrag {
				t.Fatalf("origin got USERNAME %q", got)
			}
			if n := e.relay.Status().SessionCount; n != 1 {
				t.Fatalf("relay sessions %d", n)
			}

			// DELETE frees the relay and the origin sessions and the record.
			d := do(t, http.MethodDelete, e.sig[0].URL+loc, "", "")
			if d.status != http.StatusOK {
				t.Fatalf("DELETE = %d %s", d.status, d.body)
			}
			if _, deletes, _ := origin.counts(); deletes != 1 {
				t.Errorf("origin saw %d DELETEs", deletes)
			}
			if n := e.relay.Status().SessionCount; n != 0 {
				t.Errorf("relay sessions after DELETE: %d", n)
			}
			if ss, _ := e.reg.ListSessions(t.Context()); len(ss) != 0 {
				t.Errorf("records after DELETE: %v", ss)
			}
			if d := do(t, http.MethodDelete, e.sig[0].URL+loc, "", ""); d.status != http.StatusNotFound {
				t.Errorf("second DELETE = %d", d.status)
			}
		})
	}
}

// TestConformance walks the status codes and headers of RFC 9725 and
// draft-ietf-wish-whep-03.
func TestConformance(t *testing.T) {
	e := newEnv(t, 1, func(c *signaling.Config) {
		c.ICEServers = []signaling.ICEServer{{URL: "stun:stun.example.net:3478"}, {URL: "turn:turn.example.net:3478", Username: "u", Credential: "p"}}
		c.BodyLimit = 32 << 10
	})
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	base := e.sig[0].URL
	// The trickle fixture below continues this offer's ICE session.
	offer := fixture(t, "chrome-mtxpage-whip-offer.sdp")

	created := do(t, http.MethodPost, base+"/whip/live/conf", "application/sdp", offer)
	if created.status != http.StatusCreated {
		t.Fatalf("setup: %d %s", created.status, created.body)
	}
	session := base + created.header.Get("Location")
	etag := created.header.Get("ETag")
	restart := "a=ice-ufrag:RestartUfrag1\r\na=ice-pwd:restartpasswordrestartpw\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
	trickle := fixture(t, "chrome-mtxpage-whip-trickle-patch-1.sdpfrag")

	tests := []struct {
		name        string
		method, url string
		ctype, body string
		header      []string
		status      int
		wantHeaders map[string]string // "" means present
		problem     bool
	}{
		{name: "201 has Location, ETag, Content-Type, Link", status: 201},
		{name: "wrong content type", method: "POST", url: base + "/whip/live/x", ctype: "text/plain", body: offer, status: 415, problem: true},
		{name: "malformed sdp", method: "POST", url: base + "/whip/live/x", ctype: "application/sdp", body: "v=0\r\nnonsense", status: 400, problem: true},
		{name: "no media", method: "POST", url: base + "/whip/live/x", ctype: "application/sdp", body: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", status: 422, problem: true},
		{name: "two media streams", method: "POST", url: base + "/whip/live/x", ctype: "application/sdp", body: twoStreams(offer), status: 422, problem: true},
		{name: "restart without If-Match", method: "PATCH", url: session, ctype: "application/trickle-ice-sdpfrag", body: restart, status: 428, problem: true},
		{name: "get session", method: "GET", url: session, status: 204},
		{name: "put session not allowed", method: "PUT", url: session, status: 405, problem: true},
		{name: "session preflight", method: "OPTIONS", url: session, header: []string{"Access-Control-Request-Method", "PATCH", "Origin", "http://page"}, status: 204,
			wantHeaders: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match, X-Request-Id"}},
		{name: "body too large", method: "POST", url: base + "/whip/live/x", ctype: "application/sdp", body: strings.Repeat("a", 40<<10), status: 413, problem: true},
		{name: "bad stream", method: "POST", url: base + "/whip/live/b%20d", ctype: "application/sdp", body: offer, status: 400, problem: true},
		{name: "unknown session", method: "DELETE", url: base + "/sessions/nope", status: 404, problem: true},
		{name: "patch without If-Match", method: "PATCH", url: session, ctype: "application/trickle-ice-sdpfrag", body: trickle, status: 428, problem: true},
		{name: "patch stale If-Match", method: "PATCH", url: session, ctype: "application/trickle-ice-sdpfrag", body: trickle, header: []string{"If-Match", `"stale"`}, status: 412, problem: true},
		{name: "patch wrong type", method: "PATCH", url: session, ctype: "text/plain", body: "x", header: []string{"If-Match", etag}, status: 415, problem: true},
		{name: "patch malformed frag", method: "PATCH", url: session, ctype: "application/trickle-ice-sdpfrag", body: "a=ice-ufrag:only\r\n", header: []string{"If-Match", etag}, status: 400, problem: true},
		{name: "trickle 204", method: "PATCH", url: session, ctype: "application/trickle-ice-sdpfrag", body: trickle, header: []string{"If-Match", etag}, status: 204},
		{name: "options preflight", method: "OPTIONS", url: base + "/whip/live/x", header: []string{"Access-Control-Request-Method", "POST", "Origin", "http://page"}, status: 204,
			wantHeaders: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "", "Access-Control-Allow-Headers": ""}},
		{name: "plain options", method: "OPTIONS", url: base + "/whep/live/x", status: 204,
			wantHeaders: map[string]string{"Accept-Post": "application/sdp", "Link": ""}},
		{name: "get endpoint", method: "GET", url: base + "/whip/live/x", status: 204},
		{name: "head whep", method: "HEAD", url: base + "/whep/live/x", status: 200, wantHeaders: map[string]string{"Content-Type": "application/sdp"}},
		{name: "put not allowed", method: "PUT", url: base + "/whip/live/x", status: 405, problem: true},
		{name: "ice restart 200", method: "PATCH", url: session, ctype: "application/trickle-ice-sdpfrag", body: restart, header: []string{"If-Match", "*"}, status: 200,
			wantHeaders: map[string]string{"Content-Type": "application/trickle-ice-sdpfrag", "ETag": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := created
			if tc.method != "" {
				r = do(t, tc.method, tc.url, tc.ctype, tc.body, tc.header...)
			} else {
				tc.wantHeaders = map[string]string{"Content-Type": "application/sdp", "Location": "", "ETag": "", "Link": ""}
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			for k, v := range tc.wantHeaders {
				if got := r.header.Get(k); got == "" || v != "" && got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.problem && r.header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("error without problem+json: %q", r.header.Get("Content-Type"))
			}
			if tc.name == "plain options" && len(r.header.Values("Link")) != 2 {
				t.Errorf("Link headers %v", r.header.Values("Link"))
			}
			if tc.name == "options preflight" && (len(r.header.Values("Link")) != 0 || r.header.Get("Accept-Post") != "") {
				t.Error("ICE servers or Accept-Post on a CORS preflight")
			}
			if tc.status >= 400 && r.header.Get("ETag") != "" {
				t.Error("an error carries an ETag")
			}
			if exp := r.header.Get("Access-Control-Expose-Headers"); !strings.Contains(exp, "Location") || !strings.Contains(exp, "ETag") || !strings.Contains(exp, "Link") {
				t.Errorf("Access-Control-Expose-Headers %q", exp)
			}
			if tc.name == "trickle 204" && (r.header.Get("ETag") != "" || r.body != "") {
				t.Error("trickle 204 carries an ETag or a body")
			}
			if tc.name == "ice restart 200" {
				if r.header.Get("ETag") == etag {
					t.Error("ETag unchanged by the restart")
				}
				// New server credentials made by the edge, not the origin's.
				if strings.Contains(r.body, "a=ice-ufrag:"+originUfrag) || strings.Contains(r.body, "a=ice-pwd:"+originPwd) ||
					!strings.Contains(r.body, "a=ice-ufrag:") || !strings.Contains(r.body, "a=candidate:") {
					t.Errorf("restart body %q", r.body)
				}
				// The old ETag is stale now.
				if again := do(t, "PATCH", session, "application/trickle-ice-sdpfrag", trickle, "If-Match", etag); again.status != 412 {
					t.Errorf("old ETag after restart: %d", again.status)
				}
			}
		})
	}

	// 503 + Retry-After with no origin; 409 + Retry-After when WHEP has no
	// publisher.
	t.Run("no origin 503", func(t *testing.T) {
		if err := e.reg.DeregisterOrigin(t.Context(), "origin-mediamtx"); err != nil {
			t.Fatal(err)
		}
		r := do(t, "POST", base+"/whip/live/other", "application/sdp", offer)
		if r.status != 503 || r.header.Get("Retry-After") == "" {
			t.Fatalf("%d %v", r.status, r.header)
		}
	})
	t.Run("whep without publisher 409", func(t *testing.T) {
		origin.register(t, e.reg)
		origin.mu.Lock()
		origin.noPub = true
		origin.mu.Unlock()
		r := do(t, "POST", base+"/whep/live/nobody", "application/sdp", fixture(t, "chrome-whep-offer.sdp"))
		if r.status != 409 || r.header.Get("Retry-After") == "" {
			t.Fatalf("%d %v %s", r.status, r.header, r.body)
		}
	})
}

func TestAuth(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, 1, func(c *signaling.Config) { c.Auth = signaling.Auth{Tokens: []string{"static-token"}, HMACKey: key} })
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	offer := fixture(t, "chrome-whip-offer.sdp")
	good, _ := signaling.MintToken(key, "live/cam1", "publish", time.Now().Add(time.Hour))
	expired, _ := signaling.MintToken(key, "live/cam1", "publish", time.Now().Add(-time.Minute))
	otherStream, _ := signaling.MintToken(key, "live/cam2", "publish", time.Now().Add(time.Hour))
	play, _ := signaling.MintToken(key, "live/cam1", "play", time.Now().Add(time.Hour))
	tests := []struct {
		name, auth string
		status     int
	}{
		{name: "none", status: 401},
		{name: "garbage", auth: "Bearer nope", status: 401},
		{name: "expired", auth: "Bearer " + expired, status: 401},
		{name: "other stream", auth: "Bearer " + otherStream, status: 401},
		{name: "other direction", auth: "Bearer " + play, status: 401},
		{name: "signed", auth: "Bearer " + good, status: 201},
		{name: "static", auth: "Bearer static-token", status: 201},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.auth != "" {
				h = []string{"Authorization", tc.auth}
			}
			r := do(t, "POST", e.sig[0].URL+"/whip/live/cam1", "application/sdp", offer, h...)
			if r.status != tc.status {
				t.Fatalf("%d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Error("401 without WWW-Authenticate: Bearer")
			}
		})
	}
}

// TestNoOrphanWhenRelayFails: the relay refuses the allocation after the
// origin accepted the offer; the origin sees the DELETE and the client 503.
func TestNoOrphanWhenRelayFails(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	// Drain makes AllocateSession answer UNAVAILABLE; keep the registry
	// listing the relay as available so that signaling picks it.
	if _, err := e.relay.Drain(0); err != nil {
		t.Fatal(err)
	}
	r := do(t, "POST", e.sig[0].URL+"/whip/live/orphan", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	// The offer is valid, so the origin accepted it before the relay
	// failed; it must have seen the DELETE.
	offers, deletes, _ := origin.counts()
	if offers != 1 || deletes != 1 {
		t.Fatalf("origin accepted %d offers and saw %d DELETEs: orphaned", offers, deletes)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if ss, _ := e.reg.ListSessions(t.Context()); len(ss) != 0 {
		t.Errorf("records left: %v", ss)
	}
}

// TestStatelessAcrossInstances creates a session through one signaling
// instance and PATCHes and DELETEs it through another.
func TestStatelessAcrossInstances(t *testing.T) {
	e := newEnv(t, 2)
	origin := newFakeOrigin(t, registry.OriginKindWHIP)
	origin.register(t, e.reg)
	r := do(t, "POST", e.sig[0].URL+"/whip/live/cam1", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != 201 {
		t.Fatalf("POST %d %s", r.status, r.body)
	}
	loc := r.header.Get("Location")
	p := do(t, "PATCH", e.sig[1].URL+loc, "application/trickle-ice-sdpfrag",
		"a=ice-ufrag:OtherUfrag9\r\na=ice-pwd:otherpasswordotherpassword\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n", "If-Match", r.header.Get("ETag"))
	if p.status != 200 {
		t.Fatalf("PATCH on the other instance: %d %s", p.status, p.body)
	}
	if _, _, patches := origin.counts(); patches != 0 {
		t.Errorf("origin saw %d PATCHes; the edge answers restarts itself", patches)
	}
	frag, err := sdpx.ParseFrag(p.body)
	if err != nil || len(frag.Candidates) == 0 || frag.ICE.Ufrag == "" || frag.ICE.Pwd == "" {
		t.Fatalf("restart reply %q: %v", p.body, err)
	}
	// The relay moved to the new credentials: the client's new USERNAME
	// names the session.
	if _, err := e.reg.GetSessionByUfrag(t.Context(), frag.ICE.Ufrag+":OtherUfrag9"); err != nil {
		t.Fatalf("ufrag index not moved: %v", err)
	}
	// Media flows with the new credentials: a check keyed by the new
	// server pwd, sent to the candidate of the 200, reaches the origin as
	// the origin knows the session: its own ufrag and the client's first.
	f := strings.Fields(frag.Candidates[0])
	if len(f) < 6 || net.JoinHostPort(f[4], f[5]) != e.relay.Status().PublicAddresses[0] {
		t.Fatalf("restart candidate %q is not the relay's", frag.Candidates[0])
	}
	first, err := sdpx.ParseAnswer(r.body)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := sdpx.ParseOffer(fixture(t, "chrome-whip-offer.sdp"))
	if err != nil {
		t.Fatal(err)
	}
	sendBinding(t, "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=ice-ufrag:"+frag.ICE.Ufrag+"\r\n"+
		"a=ice-pwd:"+frag.ICE.Pwd+"\r\na=candidate:"+frag.Candidates[0]+"\r\n",
		"OtherUfrag9", frag.ICE.Ufrag, frag.ICE.Pwd)
	if got, want := origin.receiveSTUN(t), first.ICE.Ufrag+":"+offer.ICE.Ufrag; got != want {
		t.Fatalf("origin got USERNAME %q after the restart, want %q (the relay translates it)", got, want)
	}
	if d := do(t, "DELETE", e.sig[1].URL+loc, "", ""); d.status != 200 {
		t.Fatalf("DELETE on the other instance: %d %s", d.status, d.body)
	}
	if n := e.relay.Status().SessionCount; n != 0 {
		t.Errorf("relay sessions left: %d", n)
	}
}

func TestLegacyAndSRSAPIs(t *testing.T) {
	e := newEnv(t, 1)
	// SRS registers by heartbeat.
	body := `{"device_id":"srs-a","ip":"127.0.0.1","server":"vid-1","service":"svc","pid":"42","rtmp":["1935"],"http":["8080"],"api":["1985"],"srt":[],"rtc":["udp://127.0.0.1:8000"]}`
	r := do(t, "POST", e.sig[0].URL+"/api/v1/srs/register", "application/json", body)
	if r.status != 200 || !strings.Contains(r.body, `"code":0`) {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	o, err := e.reg.GetOrigin(t.Context(), "srs-a")
	if err != nil || o.Kind != registry.OriginKindSRS || o.APIBaseURL != "http://127.0.0.1:1985" || len(o.MediaAddresses) != 1 || o.MediaAddresses[0] != "127.0.0.1:8000" {
		t.Fatalf("registered %+v %v", o, err)
	}
	if r := do(t, "POST", e.sig[0].URL+"/api/v1/srs/register", "application/json", "{"); r.status != 400 {
		t.Errorf("bad JSON: %d", r.status)
	}
	_ = e.reg.DeregisterOrigin(t.Context(), "srs-a")

	// Legacy JSON publish through a real (fake) origin.
	origin := newFakeOrigin(t, registry.OriginKindSRS)
	origin.register(t, e.reg)
	offer := fixture(t, "chrome-whip-offer.sdp")
	req := `{"sdp":` + jsonString(offer) + `,"streamurl":"webrtc://edge.example/live/legacy"}`
	r = do(t, "POST", e.sig[0].URL+"/rtc/v1/publish/", "application/json", req)
	if r.status != 200 || !strings.Contains(r.body, `"code":0`) || !strings.Contains(r.body, `"sessionid"`) {
		t.Fatalf("legacy publish: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", e.sig[0].URL+"/rtc/v1/publish/", "application/json", `{"sdp":"x"}`); r.status != 400 {
		t.Errorf("legacy without streamurl: %d", r.status)
	}
	// SRS-style WHIP endpoint.
	r = do(t, "POST", e.sig[0].URL+"/rtc/v1/whip/?app=live&stream=srsstyle", "application/sdp", offer)
	if r.status != 201 {
		t.Fatalf("SRS-style WHIP: %d %s", r.status, r.body)
	}
}

// twoStreams gives the offer's video section a second MediaStream id.
func twoStreams(offer string) string {
	i := strings.Index(offer, "m=video")
	if i < 0 {
		return offer
	}
	return offer[:i] + strings.ReplaceAll(offer[i:], "a=msid:", "a=msid:other-stream-")
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\r':
			b.WriteString(`\r`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func TestNormalizeStream(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "cam1", want: "__defaultVhost__/live/cam1"},
		{in: "live/cam1", want: "__defaultVhost__/live/cam1"},
		{in: "/live/cam1/", want: "__defaultVhost__/live/cam1"},
		{in: "vh/app/s", want: "vh/app/s"},
		{in: "live//cam", err: "segments"},
		{in: "live/../x", err: "segments"},
		{in: "", err: "segments"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, _, err := signaling.NormalizeStream(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%q %v, want %q", got, err, tc.want)
			}
		})
	}
}
