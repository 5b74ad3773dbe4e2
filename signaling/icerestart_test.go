package signaling_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// restartFrag is a client's ICE restart PATCH body with new credentials.
func restartFrag(ufrag, pwd string) string {
	return "a=ice-options:trickle\r\na=ice-ufrag:" + ufrag + "\r\na=ice-pwd:" + pwd + "\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
}

// isICEChars reports whether s is made of RFC 8839 ice-chars.
func isICEChars(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return s != ""
}

// checkRestartReply checks a 200 ICE restart reply: new server credentials
// that are valid ice-chars and none of avoid's, the relay's candidate, a new
// ETag; it returns the credentials.
func checkRestartReply(t *testing.T, p response, relayAddr, oldETag string, avoid ...registry.ICECredentials) registry.ICECredentials {
	t.Helper()
	if p.status != http.StatusOK || p.header.Get("Content-Type") != "application/trickle-ice-sdpfrag" {
		t.Fatalf("restart = %d %v %s", p.status, p.header, p.body)
	}
	if e := p.header.Get("ETag"); e == "" || e == oldETag {
		t.Errorf("restart ETag %q, want a new one (was %q)", e, oldETag)
	}
	frag, err := sdpx.ParseFrag(p.body)
	if err != nil {
		t.Fatalf("restart reply %q: %v", p.body, err)
	}
	got := registry.ICECredentials{Ufrag: frag.ICE.Ufrag, Pwd: frag.ICE.Pwd}
	if len(got.Ufrag) < 4 || len(got.Pwd) < 22 || !isICEChars(got.Ufrag) || !isICEChars(got.Pwd) {
		t.Errorf("restart credentials %+v are not valid ICE credentials", got)
	}
	for _, a := range avoid {
		if got.Ufrag == a.Ufrag || got.Pwd == a.Pwd {
			t.Errorf("restart credentials %+v reuse %+v", got, a)
		}
	}
	if len(frag.Candidates) == 0 || !strings.Contains(p.body, strings.Replace(relayAddr, ":", " ", 1)+" typ host") {
		t.Errorf("restart reply lacks the relay's candidate %s:\n%s", relayAddr, p.body)
	}
	return got
}

// TestICERestartAnsweredByTheEdge: for every origin kind, with an origin
// that refuses PATCH (as SRS does), an ICE restart is answered by signaling
// itself: 200 with new server credentials that are not the origin's, the
// origin contacted not at all (no PATCH, no new offer, no DELETE), the
// origin's ETag kept, and the session record keyed for the client's new
// USERNAME while keeping the credentials the origin knows.
func TestICERestartAnsweredByTheEdge(t *testing.T) {
	for _, kind := range []string{registry.OriginKindSRS, registry.OriginKindMediaMTX, registry.OriginKindWHIP} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, 1)
			origin := newFakeOrigin(t, kind)
			origin.restartStatus = http.StatusMethodNotAllowed
			origin.register(t, e.reg)
			offer := fixture(t, "chrome-whip-offer.sdp")
			r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/restart", "application/sdp", offer)
			if r.status != http.StatusCreated {
				t.Fatalf("POST = %d %s", r.status, r.body)
			}
			id := strings.TrimPrefix(r.header.Get("Location"), "/sessions/")
			before, err := e.reg.GetSession(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			first, err := sdpx.ParseAnswer(r.body)
			if err != nil {
				t.Fatal(err)
			}
			clientOffer, err := sdpx.ParseOffer(offer)
			if err != nil {
				t.Fatal(err)
			}
			originICE := registry.ICECredentials{Ufrag: first.ICE.Ufrag, Pwd: first.ICE.Pwd}
			clientICE := registry.ICECredentials{Ufrag: clientOffer.ICE.Ufrag, Pwd: clientOffer.ICE.Pwd}
			relayAddr := e.relay.Status().PublicAddresses[0]

			etag := r.header.Get("ETag")
			var servers []registry.ICECredentials
			for i, c := range []registry.ICECredentials{
				{Ufrag: "Restart1", Pwd: "restartpasswordrestart1"},
				{Ufrag: "Restart2", Pwd: "restartpasswordrestart2"},
			} {
				p := do(t, http.MethodPatch, e.sig[0].URL+r.header.Get("Location"), "application/trickle-ice-sdpfrag",
					restartFrag(c.Ufrag, c.Pwd), "If-Match", etag)
				server := checkRestartReply(t, p, relayAddr, etag, append([]registry.ICECredentials{originICE}, servers...)...)
				servers = append(servers, server)
				etag = p.header.Get("ETag")

				rs, err := e.reg.GetSession(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				if rs.ETag != etag || rs.OriginETag != before.OriginETag || rs.OriginResource != before.OriginResource {
					t.Errorf("restart %d: ETag %q (want %q), origin ETag %q → %q, origin resource %q → %q", i+1,
						rs.ETag, etag, before.OriginETag, rs.OriginETag, before.OriginResource, rs.OriginResource)
				}
				// The relay records the restart (the record is its).
				want := registry.Session{ClientICE: c, OriginICE: originICE, ServerICE: server, OriginClientICE: clientICE}
				if rs.ClientICE != want.ClientICE || rs.OriginICE != want.OriginICE || rs.Server() != server || rs.OriginClient() != clientICE {
					t.Errorf("restart %d: record client %+v origin %+v server %+v origin's client %+v; want %+v %+v %+v %+v "+
						"(the relay must record server_ice and origin_client_ice)", i+1,
						rs.ClientICE, rs.OriginICE, rs.Server(), rs.OriginClient(), c, originICE, server, clientICE)
				}
				if got, err := e.reg.GetSessionByUfrag(t.Context(), server.Ufrag+":"+c.Ufrag); err != nil || got.ID != id {
					t.Errorf("restart %d: session not found by the client's new USERNAME %s:%s: %v", i+1, server.Ufrag, c.Ufrag, err)
				}
			}
			if offers, deletes, patches := origin.counts(); offers != 1 || deletes != 0 || patches != 0 {
				t.Errorf("the origin saw %d offers, %d DELETEs, %d PATCHes; want 1, 0, 0", offers, deletes, patches)
			}
			if d := do(t, http.MethodDelete, e.sig[0].URL+r.header.Get("Location"), "", ""); d.status != http.StatusOK {
				t.Fatalf("DELETE = %d", d.status)
			}
			if _, deletes, _ := origin.counts(); deletes != 1 {
				t.Errorf("the origin's session not deleted after the restarts (%d DELETEs)", deletes)
			}
		})
	}
}

// TestICERestartOntoAnotherRelay: the session's relay dies; the client's
// ICE restart moves the session onto the live relay, answered by the edge
// with new server credentials while the origin, which refuses PATCH, is not
// contacted. The record names the new relay and keeps what the origin knows.
func TestICERestartOntoAnotherRelay(t *testing.T) {
	// The env's relay-1 stays; relay-0 (picked first: equal load, smaller
	// id) gets the session and is then killed.
	e := newEnv(t, 1)
	_, stop := startStoppableRelay(t, e.reg, "relay-0")
	origin := newFakeOrigin(t, registry.OriginKindSRS)
	origin.restartStatus = http.StatusMethodNotAllowed
	origin.register(t, e.reg)
	sig := e.sig[0].URL
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rs, err := e.reg.Relays(t.Context()); err == nil && len(rs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay-0 never registered")
		}
		time.Sleep(50 * time.Millisecond)
	}

	var r response
	var id string
	for range 20 { // the relay is picked by load: retry until relay-0 has it
		r = do(t, http.MethodPost, sig+"/whip/live/rehome", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
		if r.status != http.StatusCreated {
			t.Fatalf("POST = %d %s", r.status, r.body)
		}
		id = strings.TrimPrefix(r.header.Get("Location"), "/sessions/")
		rs, err := e.reg.GetSession(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if rs.RelayID == "relay-0" {
			break
		}
		if d := do(t, http.MethodDelete, sig+r.header.Get("Location"), "", ""); d.status != http.StatusOK {
			t.Fatalf("DELETE = %d", d.status)
		}
		id = ""
	}
	if id == "" {
		t.Fatal("no session landed on relay-0")
	}
	before, _ := e.reg.GetSession(t.Context(), id)
	offersBefore, deletesBefore, _ := origin.counts()
	stop()
	deadline = time.Now().Add(15 * time.Second)
	for {
		if _, err := e.reg.GetRelay(t.Context(), "relay-0"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay-0's registration never went")
		}
		time.Sleep(50 * time.Millisecond)
	}

	client := registry.ICECredentials{Ufrag: "Moved001", Pwd: "movedpasswordmovedpassword"}
	p := do(t, http.MethodPatch, sig+r.header.Get("Location"), "application/trickle-ice-sdpfrag",
		restartFrag(client.Ufrag, client.Pwd), "If-Match", "*")
	server := checkRestartReply(t, p, e.relay.Status().PublicAddresses[0], r.header.Get("ETag"), before.OriginICE)
	rs, err := e.reg.GetSession(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if rs.RelayID != "relay-1" || rs.ClientICE != client || rs.ServerICE != server || rs.OriginICE != before.OriginICE ||
		rs.OriginClientICE != before.ClientICE || rs.OriginETag != before.OriginETag || rs.ETag != p.header.Get("ETag") {
		t.Errorf("record after the move: %+v\nbefore: %+v\nserver %+v", rs, before, server)
	}
	if !slicesEqual(rs.OriginAddresses, before.OriginAddresses) {
		t.Errorf("origin addresses %v → %v", before.OriginAddresses, rs.OriginAddresses)
	}
	if offers, deletes, patches := origin.counts(); offers != offersBefore || deletes != deletesBefore || patches != 0 {
		t.Errorf("the origin saw %d new offers, %d new DELETEs, %d PATCHes; want none", offers-offersBefore, deletes-deletesBefore, patches)
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// TestCounterOfferThenRestart: the answer to a WHEP counter-offer is what
// the origin knows of the client, so an ICE restart afterwards keeps it as
// the origin's view of the client; the answer is accepted once.
func TestCounterOfferThenRestart(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.counterOffer = true
	origin.register(t, e.reg)
	r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/counter", "application/sdp", fixture(t, "chrome-whep-offer.sdp"))
	if r.status != http.StatusNotAcceptable {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	session, etag := e.sig[0].URL+r.header.Get("Location"), r.header.Get("ETag")
	id := strings.TrimPrefix(r.header.Get("Location"), "/sessions/")
	counter, err := sdpx.ParseAnswer(r.body)
	if err != nil {
		t.Fatal(err)
	}
	// The client's answer, with credentials of its own.
	answer := strings.NewReplacer("a=ice-ufrag:", "a=ice-ufrag:Ans", "a=ice-pwd:", "a=ice-pwd:answer").Replace(fixture(t, "chrome-whep-offer.sdp"))
	parsed, err := sdpx.ParseOffer(answer)
	if err != nil {
		t.Fatal(err)
	}
	answerICE := registry.ICECredentials{Ufrag: parsed.ICE.Ufrag, Pwd: parsed.ICE.Pwd}
	if p := do(t, http.MethodPatch, session, "application/sdp", answer, "If-Match", etag); p.status != http.StatusNoContent {
		t.Fatalf("PATCH answer = %d %s", p.status, p.body)
	}
	rs, err := e.reg.GetSession(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	counterICE := registry.ICECredentials{Ufrag: counter.ICE.Ufrag, Pwd: counter.ICE.Pwd}
	if rs.ClientICE != answerICE || rs.OriginClient() != answerICE || rs.Server() != counterICE || rs.OriginICE != counterICE {
		t.Fatalf("record after the answer: client %+v origin's client %+v server %+v origin %+v; want %+v %+v %+v %+v",
			rs.ClientICE, rs.OriginClient(), rs.Server(), rs.OriginICE, answerICE, answerICE, counterICE, counterICE)
	}
	// The answer is taken once: a second one is not a PATCH this session takes.
	p := do(t, http.MethodPatch, session, "application/sdp", answer, "If-Match", etag)
	if p.status != http.StatusUnsupportedMediaType || p.header.Get("Accept-Patch") != "application/trickle-ice-sdpfrag" {
		t.Fatalf("second answer = %d Accept-Patch %q %s", p.status, p.header.Get("Accept-Patch"), p.body)
	}

	client := registry.ICECredentials{Ufrag: "AfterAns", Pwd: "afteranswerafteranswer"}
	p = do(t, http.MethodPatch, session, "application/trickle-ice-sdpfrag", restartFrag(client.Ufrag, client.Pwd), "If-Match", "*")
	server := checkRestartReply(t, p, e.relay.Status().PublicAddresses[0], etag, counterICE)
	rs, err = e.reg.GetSession(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if rs.ClientICE != client || rs.Server() != server || rs.OriginClient() != answerICE || rs.OriginICE != counterICE {
		t.Errorf("record after the restart: client %+v server %+v origin's client %+v origin %+v; want %+v %+v %+v %+v "+
			"(the relay must record server_ice and origin_client_ice)",
			rs.ClientICE, rs.Server(), rs.OriginClient(), rs.OriginICE, client, server, answerICE, counterICE)
	}
	if _, _, patches := origin.counts(); patches != 1 {
		t.Errorf("the origin saw %d PATCHes, want 1 (the answer only)", patches)
	}
}
