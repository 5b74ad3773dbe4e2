package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/rtcedge/rtcedge/internal/demoorigin"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// TestEtcdOutageKeepsLiveSessions stops etcd under live sessions: media
// keeps flowing (the relay's packet path never touches etcd), a new setup
// gets 503 with Retry-After, and once etcd is back new setups work again
// with no manual action.
func TestEtcdOutageKeepsLiveSessions(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	pub := publish(t, ctx, s.sigA.url+"/whip/live/outage")
	pl := play(t, ctx, s.sigB.url+"/whep/live/outage")
	waitFor(t, 20*time.Second, "media before the outage", func() bool { return pl.count() >= 10 })

	s.etcd.Stop()
	from := pub.next.Load()
	time.Sleep(5 * time.Second)
	to := pub.next.Load()
	// Every packet sent during the outage reaches the player (the last
	// ones may still be in flight).
	waitFor(t, 5*time.Second, "every packet sent during the outage at the player", func() bool {
		return len(pl.missing(from, to)) == 0
	})
	if to == from {
		t.Error("the publisher sent nothing during the outage")
	}
	offer := offerSDP(t, ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.sigA.url+"/whip/live/during-outage", strings.NewReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("setup during the outage: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	if err := s.etcd.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// New setups work again by themselves.
	var res whepResource
	waitFor(t, 30*time.Second, "a setup after etcd returned", func() bool {
		_, r, err := postSDP(ctx, s.sigA.url+"/whip/live/after-outage", offerSDP(t, ctx))
		res = r
		return err == nil
	})
	if code, err := deleteResource(ctx, res.Location); err != nil || code != http.StatusOK {
		t.Errorf("DELETE after the outage: %d %v", code, err)
	}
	mid := pub.next.Load()
	waitFor(t, 10*time.Second, "media still flowing after the outage", func() bool { return pl.maxSeen() >= mid+20 })
}

// offerSDP returns a fresh publish offer from a pion peer that is closed at
// once (the offer is only posted).
func offerSDP(t *testing.T, ctx context.Context) string {
	t.Helper()
	pc, err := loopbackAPI().NewPeerConnection(webrtcConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(videoKind(), sendonly()); err != nil {
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

// iceRestart performs a client ICE restart the WHIP/WHEP way: a new offer
// with fresh credentials, a PATCH with them, and the answer rebuilt from the
// previous one with the credentials and candidates of the 200 reply.
func iceRestart(t *testing.T, ctx context.Context, pc *webrtc.PeerConnection, res whepResource, prevAnswer string) string {
	t.Helper()
	offer, err := pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	var ufrag, pwd, mid string
	for _, l := range strings.Split(pc.LocalDescription().SDP, "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:") && ufrag == "":
			ufrag = l
		case strings.HasPrefix(l, "a=ice-pwd:") && pwd == "":
			pwd = l
		case strings.HasPrefix(l, "a=mid:") && mid == "":
			mid = l
		}
	}
	frag := ufrag + "\r\n" + pwd + "\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + mid + "\r\n"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, res.Location, strings.NewReader(frag))
	req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	req.Header.Set("If-Match", "*")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == "" {
		t.Fatalf("ICE restart PATCH: %d %s", resp.StatusCode, body)
	}
	var newCreds, cands []string
	for _, l := range strings.Split(string(body), "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:"), strings.HasPrefix(l, "a=ice-pwd:"):
			newCreds = append(newCreds, l)
		case strings.HasPrefix(l, "a=candidate:"):
			cands = append(cands, l)
		}
	}
	if len(newCreds) != 2 || len(cands) == 0 {
		t.Fatalf("restart reply lacks credentials or candidates: %s", body)
	}
	var out []string
	candsDone := false
	for _, l := range strings.Split(prevAnswer, "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:"):
			out = append(out, newCreds[0])
		case strings.HasPrefix(l, "a=ice-pwd:"):
			out = append(out, newCreds[1])
		case strings.HasPrefix(l, "a=candidate:"):
			if !candsDone {
				out = append(out, cands...)
				candsDone = true
			}
		default:
			out = append(out, l)
		}
	}
	answer := strings.Join(out, "\r\n")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatalf("restart answer: %v", err)
	}
	return answer
}

// TestRelayDeathRecoveredByICERestart kills the publisher's relay for good:
// its session is left assigned to a dead relay, and the client's ICE
// restart (PATCH) moves it onto the other relay, where media flows again.
func TestRelayDeathRecoveredByICERestart(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	pub := publish(t, ctx, s.sigA.url+"/whip/live/rehome")
	waitFor(t, 15*time.Second, "media at the origin", func() bool { return s.origin.origin.Stats().PacketsForwarded > 0 })

	s.relay1.stop()
	waitFor(t, 15*time.Second, "relay 1's registration gone", func() bool {
		rs, err := s.reg.Relays(ctx)
		return err == nil && len(rs) == 1
	})
	recs, err := s.reg.ListSessionsByRelay(ctx, "relay-1")
	if err != nil || len(recs) != 1 {
		t.Fatalf("the dead relay's session should stay listed under it: %v %v", recs, err)
	}
	// The restart goes through the other signaling instance, to show it
	// needs no state of the first.
	pub.res.Location = strings.Replace(pub.res.Location, s.sigA.url, s.sigB.url, 1)
	iceRestart(t, ctx, pub.pc, pub.res, pub.answer)

	rec, err := s.reg.GetSession(ctx, recs[0].ID)
	if err != nil || rec.RelayID != "relay-2" {
		t.Fatalf("session after the restart: %+v %v", rec, err)
	}
	before := s.origin.origin.Stats().PacketsForwarded
	waitFor(t, 20*time.Second, "media through relay 2", func() bool {
		return s.origin.origin.Stats().PacketsForwarded > before+20
	})
	st, err := s.relay2.admin.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil || len(st.Sessions) != 1 || st.Sessions[0].State != relayv1.SessionState_SESSION_STATE_CONNECTED {
		t.Fatalf("relay 2 sessions: %v %v", st, err)
	}
	if got := selectedRemote(pub.pc); got != s.relay2.public.String() {
		t.Errorf("publisher's selected remote %s, want relay 2 at %s", got, s.relay2.public)
	}
}

// TestOriginFailover: an origin that stops heartbeating disappears when its
// lease runs out; its stream is re-pinned and new sessions go to the live
// origin.
func TestOriginFailover(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	// A second origin that registers once, with the shortest lease, and
	// never heartbeats again; its id sorts first so the stream pins to it.
	media, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dying, err := demoorigin.New(demoorigin.Config{MediaConn: media})
	if err != nil {
		t.Fatal(err)
	}
	defer dying.Close()
	hs := httptest.NewServer(dying.Handler())
	defer hs.Close()
	reg := demoorigin.NewRegistration("a-dying-origin", hs.URL, []string{dying.MediaAddr().String()}, 5*time.Second)
	if _, _, err := s.reg.RegisterOrigin(ctx, registry.Origin{ID: reg.Id, Kind: registry.OriginKindWHIP,
		WHIPURLTemplate: reg.WhipUrlTemplate, WHEPURLTemplate: reg.WhepUrlTemplate, MediaAddresses: reg.MediaAddresses,
		TTL: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	first := publish(t, ctx, s.sigA.url+"/whip/live/failover")
	waitFor(t, 15*time.Second, "media at the first origin", func() bool { return dying.Stats().PacketsForwarded > 0 })
	first.close()

	// No heartbeat: the lease runs out and the origin is gone.
	waitFor(t, 15*time.Second, "the silent origin's lease expiry", func() bool {
		_, err := s.reg.GetOrigin(ctx, "a-dying-origin")
		return errors.Is(err, registry.ErrNotFound)
	})
	second := publish(t, ctx, s.sigA.url+"/whip/live/failover")
	waitFor(t, 15*time.Second, "media at the live origin", func() bool { return s.origin.origin.Stats().PacketsForwarded > 0 })
	pins, err := s.reg.ListPins(ctx)
	if err != nil || len(pins) != 1 || pins[0].OriginID != "demo-origin" {
		t.Fatalf("pins after failover: %+v %v", pins, err)
	}
	second.close()
}
