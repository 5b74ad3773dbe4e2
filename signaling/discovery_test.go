package signaling_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// registerAs registers a fake origin under id (kind mediamtx: /{path}/whip).
func registerAs(t *testing.T, reg *registry.Client, o *fakeOrigin, id string) {
	t.Helper()
	rec := registry.Origin{ID: id, Kind: registry.OriginKindMediaMTX, APIBaseURL: o.srv.URL, TTL: 30 * time.Second}
	if _, _, err := reg.RegisterOrigin(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

func pinTo(t *testing.T, reg *registry.Client, stream, id string) {
	t.Helper()
	if ok, err := reg.PinStreamTo(t.Context(), stream, id); err != nil || !ok {
		t.Fatalf("pin %s to %s: %v %v", stream, id, ok, err)
	}
}

func pinnedTo(t *testing.T, reg *registry.Client, stream string) string {
	t.Helper()
	pins, err := reg.ListPins(t.Context())
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

// TestFailoverWhenOriginUnreachable (issue 17 item 5): a setup whose
// pinned origin refuses the connection is re-pinned to another live
// origin within the same request; the dead origin is marked suspect and
// gets no new pins, until the mark is cleared.
func TestFailoverWhenOriginUnreachable(t *testing.T) {
	e := newEnv(t, 1)
	a, b := newFakeOrigin(t, registry.OriginKindMediaMTX), newFakeOrigin(t, registry.OriginKindMediaMTX)
	registerAs(t, e.reg, a, "a")
	registerAs(t, e.reg, b, "b")
	const stream = "__defaultVhost__/live/failover"
	pinTo(t, e.reg, stream, "a")
	// A session of the stream still recorded on a: it must not hold the pin.
	if err := e.reg.CreateSession(t.Context(), registry.Session{ID: "old-session", Stream: stream, Direction: registry.DirectionPlay,
		RelayID: "relay-gone", ClientICE: registry.ICECredentials{Ufrag: "cufr", Pwd: "cpwdcpwdcpwdcpwdcpwdcpwd"},
		OriginICE: registry.ICECredentials{Ufrag: "oufr", Pwd: "opwdopwdopwdopwdopwdopwd"}, OriginID: "a"}); err != nil {
		t.Fatal(err)
	}
	a.srv.Close() // connection refused from now on

	offer := fixture(t, "chrome-whip-offer.sdp")
	r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/failover", "application/sdp", offer)
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	if n, _, _ := b.counts(); n != 1 {
		t.Fatalf("origin b got %d offers, want 1", n)
	}
	if got := pinnedTo(t, e.reg, stream); got != "b" {
		t.Fatalf("stream pinned to %q, want b", got)
	}
	sus, err := e.reg.ListSuspects(t.Context())
	if err != nil || len(sus) != 1 || sus[0].OriginID != "a" || sus[0].Reason != "connection refused" {
		t.Fatalf("suspects %+v %v", sus, err)
	}
	// New streams avoid the suspect origin.
	for _, name := range []string{"n1", "n2", "n3"} {
		if r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/"+name, "application/sdp", offer); r.status != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", name, r.status, r.body)
		}
		if got := pinnedTo(t, e.reg, "__defaultVhost__/live/"+name); got != "b" {
			t.Fatalf("%s pinned to %q", name, got)
		}
	}
	if v := metricValue(t, e.sig[0].URL, `rtcedge_signaling_origin_failovers_total{reason="unreachable"}`); v != 1 {
		t.Fatalf("failovers metric %v, want 1", v)
	}
	// With no other origin left, an unreachable one is a 503 with
	// Retry-After, after one failover attempt.
	if err := e.reg.DeregisterOrigin(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.ClearOriginSuspect(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	r = do(t, http.MethodPost, e.sig[0].URL+"/whip/live/alone", "application/sdp", offer)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("POST with the only origin dead = %d %v %s", r.status, r.header, r.body)
	}
}

// metricValue reads one sample of signaling's /metrics (-1 if absent).
func metricValue(t *testing.T, base, sample string) float64 {
	t.Helper()
	r := do(t, http.MethodGet, base+"/metrics", "", "")
	for _, l := range strings.Split(r.body, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// closingOrigin is an origin that, like SRS, closes the connection on an
// offer it refuses (RtcStreamBusy, RtcSdpNegotiate).
func closingOrigin(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.(*net.TCPConn).SetLinger(0)
			_ = conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestOriginClosesConnectionOnOffer: an origin that takes the connection
// and closes it on the offer refused it: a second publisher on a live
// stream gets 409, anything else 502, neither with Retry-After, never 503
// "origin unreachable"; the origin is not marked suspect.
func TestOriginClosesConnectionOnOffer(t *testing.T) {
	e := newEnv(t, 1)
	srv := closingOrigin(t)
	if _, _, err := e.reg.RegisterOrigin(t.Context(), registry.Origin{ID: "srs", Kind: registry.OriginKindSRS, APIBaseURL: srv.URL,
		TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.MarkStreamLive(t.Context(), "__defaultVhost__/live/busy", "srs", registry.StreamSourceHook, time.Minute); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, offer string
		status            int
	}{
		{name: "second publisher on a live stream", path: "/whip/live/busy", offer: "chrome-whip-offer.sdp", status: http.StatusConflict},
		{name: "publish refused otherwise", path: "/whip/live/other", offer: "chrome-whip-offer.sdp", status: http.StatusBadGateway},
		{name: "play refused", path: "/whep/live/busy", offer: "chrome-whep-offer.sdp", status: http.StatusBadGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, e.sig[0].URL+tc.path, "application/sdp", fixture(t, tc.offer))
			if r.status != tc.status || r.header.Get("Retry-After") != "" || strings.Contains(r.body, "unreachable") {
				t.Fatalf("POST = %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
			}
		})
	}
	if sus, err := e.reg.ListSuspects(t.Context()); err != nil || len(sus) != 0 {
		t.Fatalf("suspects %+v %v", sus, err)
	}
}

// TestOfferDirectionRefused: a sendonly offer to WHEP and a recvonly one
// to WHIP are refused by the edge before any origin is contacted.
func TestOfferDirectionRefused(t *testing.T) {
	e := newEnv(t, 1)
	o := newFakeOrigin(t, registry.OriginKindMediaMTX)
	o.register(t, e.reg)
	tests := []struct {
		name, path, offer string
	}{
		{name: "sendonly to WHEP", path: "/whep/live/dir", offer: "chrome-whip-offer.sdp"},
		{name: "recvonly to WHIP", path: "/whip/live/dir", offer: "chrome-whep-offer.sdp"},
		{name: "recvonly to SRS WHIP", path: "/rtc/v1/whip/?app=live&stream=dir", offer: "chrome-whep-offer.sdp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, e.sig[0].URL+tc.path, "application/sdp", fixture(t, tc.offer))
			if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "direction") && !strings.Contains(r.body, "only") {
				t.Fatalf("POST = %d %s", r.status, r.body)
			}
		})
	}
	if n, _, _ := o.counts(); n != 0 {
		t.Fatalf("the origin got %d offers", n)
	}
}

// TestDiscoveredStreamPlay (issue 17 item 3): a play goes to the origin
// whose inventory has the stream live; an origin whose inventory lacks it
// (one that answers 201 for absent streams, as SRS does) never gets it; a
// stream live nowhere is 409 with Retry-After; a pinned origin that
// answers 404 while another has the stream live is retried there once.
func TestDiscoveredStreamPlay(t *testing.T) {
	e := newEnv(t, 1)
	a, b := newFakeOrigin(t, registry.OriginKindMediaMTX), newFakeOrigin(t, registry.OriginKindMediaMTX)
	registerAs(t, e.reg, a, "a")
	registerAs(t, e.reg, b, "b")
	inv := func(id string, streams ...string) {
		w, err := e.reg.NewInventoryWriter(id, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(t.Context(), streams, false); err != nil {
			t.Fatal(err)
		}
	}
	inv("a")
	inv("b", "__defaultVhost__/live/on-b")
	offer := fixture(t, "chrome-whep-offer.sdp")
	for i := range 10 {
		r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/on-b", "application/sdp", offer)
		if r.status != http.StatusCreated {
			t.Fatalf("play %d = %d %s", i, r.status, r.body)
		}
	}
	if na, _, _ := a.counts(); na != 0 {
		t.Fatalf("origin a (inventory without the stream) got %d offers", na)
	}
	if nb, _, _ := b.counts(); nb != 10 {
		t.Fatalf("origin b got %d offers, want 10", nb)
	}
	r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/nowhere", "application/sdp", offer)
	if r.status != http.StatusConflict || r.header.Get("Retry-After") == "" {
		t.Fatalf("play of a stream live nowhere = %d %v %s", r.status, r.header, r.body)
	}
	if na, _, _ := a.counts(); na != 0 {
		t.Fatalf("origin a got %d offers", na)
	}

	t.Run("404 at the pinned origin, live on another: retried there", func(t *testing.T) {
		c := newFakeOrigin(t, registry.OriginKindMediaMTX)
		c.noPub = true
		registerAs(t, e.reg, c, "c") // no inventory: it might have anything
		const stream = "__defaultVhost__/live/moved"
		pinTo(t, e.reg, stream, "c")
		if err := e.reg.MarkStreamLive(t.Context(), stream, "b", registry.StreamSourceHook, time.Minute); err != nil {
			t.Fatal(err)
		}
		// c is pinned and has no inventory, b has it live: the pin moves to
		// b before any call; make c the only candidate by a session, so the
		// call goes to c first and the retry to b.
		if err := e.reg.CreateSession(t.Context(), registry.Session{ID: "holder", Stream: stream, Direction: registry.DirectionPlay,
			RelayID: "relay-x", ClientICE: registry.ICECredentials{Ufrag: "cuf2", Pwd: "cpwdcpwdcpwdcpwdcpwdcpwd"},
			OriginICE: registry.ICECredentials{Ufrag: "ouf2", Pwd: "opwdopwdopwdopwdopwdopwd"}, OriginID: "c"}); err != nil {
			t.Fatal(err)
		}
		before, _, _ := b.counts()
		r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/moved", "application/sdp", offer)
		if r.status != http.StatusCreated {
			t.Fatalf("POST = %d %s", r.status, r.body)
		}
		nc, _, _ := c.counts()
		nb, _, _ := b.counts()
		if nc != 1 || nb != before+1 {
			t.Fatalf("offers: c %d (want 1), b %d (want %d)", nc, nb, before+1)
		}
		if got := pinnedTo(t, e.reg, stream); got != "b" {
			t.Fatalf("pinned to %q, want b", got)
		}
	})
}

// TestFailoverWhenOriginDiesMidRequest: an origin that takes the
// connection and dies with it (the connection reset, nothing listening
// any more) is unreachable, not an origin refusing the offer: the setup
// fails over to the other origin in the same request.
func TestFailoverWhenOriginDiesMidRequest(t *testing.T) {
	e := newEnv(t, 1)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := lis.Accept()
		_ = lis.Close() // nothing listens any more
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		_, _ = conn.Read(buf)
		_ = conn.(*net.TCPConn).SetLinger(0)
		_ = conn.Close()
	}()
	t.Cleanup(func() { _ = lis.Close(); <-done })
	if _, _, err := e.reg.RegisterOrigin(t.Context(), registry.Origin{ID: "a-dies", Kind: registry.OriginKindMediaMTX,
		APIBaseURL: "http://" + lis.Addr().String(), TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	b := newFakeOrigin(t, registry.OriginKindMediaMTX)
	registerAs(t, e.reg, b, "b")
	const stream = "__defaultVhost__/live/dies"
	pinTo(t, e.reg, stream, "a-dies")
	r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/dies", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	if got := pinnedTo(t, e.reg, stream); got != "b" {
		t.Fatalf("pinned to %q, want b", got)
	}
}
