package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEtcdOutageKeepsLiveSessions stops etcd under live sessions: media
// keeps flowing (the relay's packet path never touches etcd), a new setup
// gets 503 with Retry-After, and once etcd is back new setups work again
// with no manual action.
func TestEtcdOutageKeepsLiveSessions(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	publish(t, ctx, s.sigA.url+"/whip/live/outage")
	pl := play(t, ctx, s.sigB.url+"/whep/live/outage")
	waitFor(t, 20*time.Second, "media before the outage", func() bool {
		m, _ := pl.received()
		return m >= 10
	})

	s.etcd.Stop()
	before, _ := pl.received()
	// The publisher paces 50 packets/s: 5 s of outage must bring ~250 more.
	time.Sleep(5 * time.Second)
	after, _ := pl.received()
	if after-before < 150 {
		t.Errorf("only %d packets reached the player during the etcd outage", after-before)
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
	mid, _ := pl.received()
	waitFor(t, 10*time.Second, "media still flowing after the outage", func() bool {
		m, _ := pl.received()
		return m > mid+20
	})
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
