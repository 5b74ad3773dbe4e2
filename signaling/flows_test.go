package signaling_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// TestWHEPCounterOffer: the origin answers a WHEP offer with 406 and an
// offer of its own; the client gets our 406 with the rewritten offer and our
// Location, and its PATCH application/sdp answer reaches the origin (204).
func TestWHEPCounterOffer(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.counterOffer = true
	origin.register(t, e.reg)

	r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/cam1", "application/sdp", fixture(t, "chrome-whep-offer.sdp"))
	if r.status != http.StatusNotAcceptable {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	loc, etag := r.header.Get("Location"), r.header.Get("ETag")
	if !strings.HasPrefix(loc, "/sessions/") || etag == "" || r.header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("406 headers %v", r.header)
	}
	relayAddr := e.relay.Status().PublicAddresses[0]
	host, port, _ := net.SplitHostPort(relayAddr)
	counter, err := sdpx.ParseAnswer(r.body)
	if err != nil {
		t.Fatal(err)
	}
	if len(counter.MediaAddresses) == 0 || counter.MediaAddresses[0].String() != net.JoinHostPort(host, port) {
		t.Fatalf("counter-offer candidates %v, want the relay's %s", counter.MediaAddresses, relayAddr)
	}

	// The client's answer, with its own candidates, goes back by PATCH.
	answer := fixture(t, "chrome-whep-offer.sdp")
	clientAnswer, err := sdpx.ParseOffer(answer)
	if err != nil {
		t.Fatal(err)
	}
	p := do(t, http.MethodPatch, e.sig[0].URL+loc, "application/sdp", answer, "If-Match", etag)
	if p.status != http.StatusNoContent {
		t.Fatalf("PATCH answer = %d %s", p.status, p.body)
	}
	origin.mu.Lock()
	types, patches := append([]string(nil), origin.patchTypes...), append([]string(nil), origin.patches...)
	origin.mu.Unlock()
	if len(types) != 1 || types[0] != "application/sdp" {
		t.Fatalf("origin PATCHes %v", types)
	}
	if strings.Contains(patches[0], "a=candidate") || strings.Contains(patches[0], "10.88.0.2") {
		t.Fatalf("client address reached the origin:\n%s", patches[0])
	}
	// The relay now expects the client's answer credentials.
	if _, err := e.reg.GetSessionByUfrag(t.Context(), counter.ICE.Ufrag+":"+clientAnswer.ICE.Ufrag); err != nil {
		t.Fatalf("session not keyed by the answer's ufrag: %v", err)
	}
	if d := do(t, http.MethodDelete, e.sig[0].URL+loc, "", ""); d.status != http.StatusOK {
		t.Fatalf("DELETE = %d", d.status)
	}
}

// TestTrickleAndFailedRestart: trickled client candidates never reach the
// origin; a restart that fails (credentials too short for ICE) gets 400 and
// keeps the session (RFC 9725 section 4.3.3), which still works afterwards;
// a restart the origin would refuse never reaches it.
func TestTrickleAndFailedRestart(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.restartStatus = http.StatusUnprocessableEntity
	origin.register(t, e.reg)
	offer := fixture(t, "gstreamer-whip-trickle-offer.sdp")
	r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/trickle", "application/sdp", offer)
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	session, etag := e.sig[0].URL+r.header.Get("Location"), r.header.Get("ETag")
	for _, name := range []string{"gstreamer-whip-trickle-patch-1.sdpfrag", "gstreamer-whip-trickle-patch-2.sdpfrag"} {
		// GStreamer sends If-Match: * on trickle.
		if p := do(t, http.MethodPatch, session, "application/trickle-ice-sdpfrag", fixture(t, name), "If-Match", "*"); p.status != http.StatusNoContent {
			t.Fatalf("trickle %s = %d %s", name, p.status, p.body)
		}
	}
	if _, _, patches := origin.counts(); patches != 0 {
		t.Fatalf("trickle reached the origin (%d PATCHes)", patches)
	}

	short := "a=ice-ufrag:RestartUfrag1\r\na=ice-pwd:tooshort\r\nm=audio 9 RTP/AVP 0\r\na=mid:audio0\r\n"
	p := do(t, http.MethodPatch, session, "application/trickle-ice-sdpfrag", short, "If-Match", etag)
	if p.status != http.StatusBadRequest || p.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("restart with a short pwd = %d %v", p.status, p.header)
	}
	// The session is kept with its ETag and credentials.
	rs, err := e.reg.GetSession(t.Context(), strings.TrimPrefix(r.header.Get("Location"), "/sessions/"))
	if err != nil || rs.ETag != etag || rs.ClientICE.Ufrag == "RestartUfrag1" {
		t.Fatalf("session after the failed restart: %+v %v", rs, err)
	}
	if n := e.relay.Status().SessionCount; n != 1 {
		t.Fatalf("relay sessions %d", n)
	}
	if p := do(t, http.MethodPatch, session, "application/trickle-ice-sdpfrag", fixture(t, "gstreamer-whip-trickle-patch-2.sdpfrag"), "If-Match", etag); p.status != http.StatusNoContent {
		t.Fatalf("trickle after the failed restart = %d", p.status)
	}
	restart := "a=ice-ufrag:RestartUfrag1\r\na=ice-pwd:restartpasswordrestartpw\r\nm=audio 9 RTP/AVP 0\r\na=mid:audio0\r\n"
	if p := do(t, http.MethodPatch, session, "application/trickle-ice-sdpfrag", restart, "If-Match", etag); p.status != http.StatusOK {
		t.Fatalf("restart = %d %s", p.status, p.body)
	}
	if _, _, patches := origin.counts(); patches != 0 {
		t.Fatalf("the restart reached the origin (%d PATCHes)", patches)
	}
	if d := do(t, http.MethodDelete, session, "", ""); d.status != http.StatusOK {
		t.Fatalf("DELETE = %d", d.status)
	}
}

// TestNoOrphanWhenRelayDead: the picked relay's gRPC address does not
// answer and no other relay is left to try; the origin's session is
// deleted and the client gets 503.
func TestNoOrphanWhenRelayDead(t *testing.T) {
	e := newEnv(t, 0)
	// The env's live relay goes: a setup would otherwise move to it
	// (TestUnreachableRelaySkippedInTheSetup).
	_ = e.relay.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := e.reg.GetRelay(t.Context(), "relay-1"); errors.Is(err, registry.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay-1's registration did not go")
		}
		time.Sleep(50 * time.Millisecond)
	}
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	// A relay registered in zone "dead" whose gRPC port is closed.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	reg, err := e.reg.RegisterRelay(t.Context(), registry.Relay{ID: "relay-dead", GRPCAddress: dead,
		PublicAddresses: []string{"127.0.0.1:9"}, Zone: "dead"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(t.Context()) })
	s, err := signaling.New(signaling.Config{Registry: e.reg, Zone: "dead", RelayCallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rl, err := e.reg.PickRelay(t.Context(), "dead"); err == nil && rl.ID == "relay-dead" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dead relay never picked")
		}
		time.Sleep(50 * time.Millisecond)
	}

	r := do(t, http.MethodPost, hs.URL+"/whip/live/dead", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("POST = %d %v %s", r.status, r.header, r.body)
	}
	if offers, deletes, _ := origin.counts(); offers != 1 || deletes != 1 {
		t.Fatalf("origin accepted %d offers and saw %d DELETEs: orphaned", offers, deletes)
	}
	if ss, _ := e.reg.ListSessions(t.Context()); len(ss) != 0 {
		t.Errorf("records left: %v", ss)
	}
}

// TestMetricsAndHealth: requests are counted by endpoint and status; the
// health endpoints answer.
func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t, 1)
	base := e.sig[0].URL
	_ = do(t, http.MethodPost, base+"/whip/live/m", "text/plain", "x")
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := do(t, http.MethodGet, base+path, "", ""); r.status != http.StatusOK {
			t.Errorf("%s = %d %s", path, r.status, r.body)
		}
	}
	m := do(t, http.MethodGet, base+"/metrics", "", "")
	for _, want := range []string{`rtcedge_signaling_requests_total{code="415",endpoint="whip"} 1`, "rtcedge_signaling_setup_seconds", "rtcedge_signaling_origin_errors_total"} {
		if !strings.Contains(m.body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestRegistrationTokenAndPublicBaseURL: the SRS heartbeat needs the
// registration token (header or ?token=); PublicBaseURL makes Locations
// absolute.
func TestRegistrationTokenAndPublicBaseURL(t *testing.T) {
	e := newEnv(t, 1, func(c *signaling.Config) {
		c.RegistrationToken = "reg-secret"
		c.PublicBaseURL = "https://edge.example.com/"
	})
	body := `{"device_id":"srs-b","ip":"127.0.0.1","server":"vid-2","service":"svc","pid":"7","api":["1985"],"rtc":["8000"]}`
	tests := []struct {
		name, query string
		header      []string
		status      int
	}{
		{name: "none", status: 401},
		{name: "wrong header", header: []string{"Authorization", "Bearer nope"}, status: 401},
		{name: "wrong query", query: "?token=nope", status: 401},
		{name: "header", header: []string{"Authorization", "Bearer reg-secret"}, status: 200},
		{name: "query", query: "?token=reg-secret", status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, e.sig[0].URL+"/api/v1/srs/register"+tc.query, "application/json", body, tc.header...)
			if r.status != tc.status {
				t.Fatalf("%d, want %d: %s", r.status, tc.status, r.body)
			}
		})
	}
	o, err := e.reg.GetOrigin(t.Context(), "srs-b")
	if err != nil || len(o.MediaAddresses) != 1 || o.MediaAddresses[0] != "127.0.0.1:8000" {
		t.Fatalf("registered %+v %v", o, err)
	}
	_ = e.reg.DeregisterOrigin(t.Context(), "srs-b")

	origin := newFakeOrigin(t, registry.OriginKindWHIP)
	origin.register(t, e.reg)
	r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/abs", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != http.StatusCreated || !strings.HasPrefix(r.header.Get("Location"), "https://edge.example.com/sessions/") {
		t.Fatalf("%d Location %q", r.status, r.header.Get("Location"))
	}
	id := strings.TrimPrefix(r.header.Get("Location"), "https://edge.example.com/sessions/")
	if d := do(t, http.MethodDelete, e.sig[0].URL+"/sessions/"+id, "", ""); d.status != http.StatusOK {
		t.Fatalf("DELETE = %d", d.status)
	}
}

// BenchmarkSetupAndDelete measures a whole WHIP session through real etcd,
// a real relay and a fake MediaMTX on loopback: POST (offer parsing, origin
// call, AllocateSession, answer rewrite, two etcd transactions) then
// DELETE.
func BenchmarkSetupAndDelete(b *testing.B) {
	e := newEnv(b, 1)
	origin := newFakeOrigin(b, registry.OriginKindMediaMTX)
	origin.register(b, e.reg)
	offer := fixture(b, "chrome-whip-offer.sdp")
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Each session needs its own ufrag pair: the fake origin's ufrag
		// changes per session.
		r := do(b, http.MethodPost, e.sig[0].URL+"/whip/live/bench", "application/sdp", offer)
		if r.status != http.StatusCreated {
			b.Fatalf("POST = %d %s", r.status, r.body)
		}
		if d := do(b, http.MethodDelete, e.sig[0].URL+r.header.Get("Location"), "", ""); d.status != http.StatusOK {
			b.Fatalf("DELETE = %d", d.status)
		}
	}
}

// TestConcurrentSessions sets up and tears down sessions in parallel
// through two instances (the relay client pool and the registry under
// -race); nothing is left behind.
func TestConcurrentSessions(t *testing.T) {
	const n = 12
	e := newEnv(t, 2)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	offer := fixture(t, "chrome-whip-offer.sdp")
	clientUfrag, err := sdpx.ParseOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		status int
		loc    string
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			// A ufrag of its own per client.
			o := strings.ReplaceAll(offer, "a=ice-ufrag:"+clientUfrag.ICE.Ufrag, fmt.Sprintf("a=ice-ufrag:cli%04d", i))
			r, err := tryDo(t.Context(), http.MethodPost, e.sig[i%2].URL+fmt.Sprintf("/whip/live/par%d", i), "application/sdp", o)
			if err != nil {
				r.status = -1
			}
			results <- result{r.status, r.header.Get("Location")}
		}()
	}
	var locs []string
	for range n {
		r := <-results
		if r.status != http.StatusCreated {
			t.Errorf("POST = %d", r.status)
			continue
		}
		locs = append(locs, r.loc)
	}
	if got := e.relay.Status().SessionCount; int(got) != len(locs) || len(locs) != n {
		t.Fatalf("relay holds %d sessions, %d created", got, len(locs))
	}
	done := make(chan int, len(locs))
	for i, loc := range locs {
		go func() {
			r, err := tryDo(t.Context(), http.MethodDelete, e.sig[(i+1)%2].URL+loc, "", "")
			if err != nil {
				r.status = -1
			}
			done <- r.status
		}()
	}
	for range locs {
		if st := <-done; st != http.StatusOK {
			t.Errorf("DELETE = %d", st)
		}
	}
	if got := e.relay.Status().SessionCount; got != 0 {
		t.Errorf("relay sessions left: %d", got)
	}
	if ss, _ := e.reg.ListSessions(t.Context()); len(ss) != 0 {
		t.Errorf("records left: %d", len(ss))
	}
	if _, deletes, _ := origin.counts(); deletes != n {
		t.Errorf("origin saw %d DELETEs, want %d", deletes, n)
	}
}

// TestRestartReplyRepeatsICEAttributes: RFC 9725 section 4.3.3 — the ICE
// restart reply, made by the edge, repeats the ice-options, ice-pacing and
// ice-lite of the original offer and answer, with new server credentials.
func TestRestartReplyRepeatsICEAttributes(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindWHIP)
	origin.answerSDP = strings.Replace(origin.answerSDP, "t=0 0\r\n", "t=0 0\r\na=ice-lite\r\na=ice-pacing:40\r\n", 1)
	origin.register(t, e.reg)
	r := do(t, "POST", e.sig[0].URL+"/whip/live/lite", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != 201 {
		t.Fatalf("POST %d %s", r.status, r.body)
	}
	for _, want := range []string{"a=ice-lite\r\n", "a=ice-pacing:40\r\n"} {
		if !strings.Contains(r.body, want) {
			t.Fatalf("answer lacks %q:\n%s", want, r.body)
		}
	}
	p := do(t, "PATCH", e.sig[0].URL+r.header.Get("Location"), "application/trickle-ice-sdpfrag",
		"a=ice-options:trickle\r\na=ice-ufrag:OtherUfrag9\r\na=ice-pwd:otherpasswordotherpassword\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n",
		"If-Match", r.header.Get("ETag"))
	if p.status != 200 {
		t.Fatalf("PATCH %d %s", p.status, p.body)
	}
	frag, err := sdpx.ParseFrag(p.body)
	if err != nil {
		t.Fatalf("restart reply %q: %v", p.body, err)
	}
	if !frag.ICE.Lite || frag.ICE.Pacing != "40" || frag.ICE.Options != "trickle" || frag.ICE.Ufrag == "" || strings.HasPrefix(frag.ICE.Ufrag, originUfrag) {
		t.Fatalf("restart reply ICE %+v, want lite, pacing 40, options trickle, new server credentials:\n%s", frag.ICE, p.body)
	}
}

// TestOriginConnectionsReused: concurrent setups toward one origin reuse
// signaling's connections to it instead of dialling one per request (Go's
// default transport keeps only 2 idle connections per host).
func TestOriginConnectionsReused(t *testing.T) {
	const clients, rounds = 8, 10
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindWHIP)
	origin.register(t, e.reg)
	offer := fixture(t, "chrome-whip-offer.sdp")
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				r, err := tryDo(t.Context(), http.MethodPost, e.sig[0].URL+fmt.Sprintf("/whip/live/conns%d", c), "application/sdp", offer)
				if err != nil || r.status != http.StatusCreated {
					t.Errorf("POST = %d %v %s", r.status, err, r.body)
					return
				}
				if d, err := tryDo(t.Context(), http.MethodDelete, e.sig[0].URL+r.header.Get("Location"), "", ""); err != nil || d.status != http.StatusOK {
					t.Errorf("DELETE = %d %v", d.status, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	origin.mu.Lock()
	defer origin.mu.Unlock()
	// At most one request per client is at the origin at a time.
	if n := len(origin.conns); n > 2*clients {
		t.Errorf("%d setups opened %d connections to the origin, want at most %d", clients*rounds, n, 2*clients)
	}
}
