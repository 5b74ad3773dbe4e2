// Package e2e runs rtcedge end to end with real WebRTC clients (pion), real
// sockets and a real etcd.
package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// TestPublishAndPlayAcrossTiers is scenario (a): a pion publisher through
// signaling A and relay 1 into the demo origin, a pion player through
// signaling B and relay 2; the player receives the publisher's payloads;
// DELETE through signaling B frees the player's sessions on both tiers and
// at the origin.
func TestPublishAndPlayAcrossTiers(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pub := publish(t, ctx, s.sigA.url+"/whip/live/e2e")
	waitFor(t, 15*time.Second, "the publisher's media at the origin", func() bool {
		return s.origin.origin.Stats().PacketsForwarded > 0
	})
	st1, err := s.relay1.admin.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil || len(st1.Sessions) != 1 || st1.Sessions[0].State != relayv1.SessionState_SESSION_STATE_CONNECTED {
		t.Fatalf("relay 1 sessions: %v %v", st1, err)
	}

	pl := play(t, ctx, s.sigB.url+"/whep/live/e2e")
	waitFor(t, 20*time.Second, "the publisher's payloads at the player", func() bool {
		m, _ := pl.received()
		return m >= 20
	})
	if _, other := pl.received(); other != 0 {
		t.Errorf("%d packets without the publisher's pattern", other)
	}
	st2, err := s.relay2.admin.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil || len(st2.Sessions) != 1 || st2.Sessions[0].Direction != relayv1.Direction_DIRECTION_PLAY ||
		st2.Sessions[0].OriginToClient.Packets == 0 {
		t.Fatalf("relay 2 sessions: %v %v", st2, err)
	}
	// The player's media path is the relay's public address.
	waitFor(t, 10*time.Second, "the player's selected pair", func() bool { return selectedRemote(pl.pc) != "" })
	if got := selectedRemote(pl.pc); got != s.relay2.public.String() {
		t.Errorf("player's selected remote candidate %s, want relay 2 at %s", got, s.relay2.public)
	}

	// DELETE through signaling B frees the player everywhere.
	code, err := deleteResource(ctx, pl.res.Location)
	if err != nil || code != http.StatusOK {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	st2, err = s.relay2.admin.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil || len(st2.Sessions) != 0 {
		t.Errorf("relay 2 still has %v (%v)", st2, err)
	}
	waitFor(t, 10*time.Second, "the origin dropping the player", func() bool { return s.origin.origin.Stats().Players == 0 })
	if recs, _ := s.reg.ListSessions(ctx); len(recs) != 1 {
		t.Errorf("registry sessions after DELETE: %d, want the publisher's only", len(recs))
	}
	// The publisher is unaffected; then it leaves too.
	if code, err := deleteResource(ctx, pub.res.Location); err != nil || code != http.StatusOK {
		t.Fatalf("publisher DELETE: %d %v", code, err)
	}
	waitFor(t, 10*time.Second, "the origin dropping the publisher", func() bool { return s.origin.origin.Stats().Publishers == 0 })
	if recs, _ := s.reg.ListSessions(ctx); len(recs) != 0 {
		t.Errorf("registry sessions left: %d", len(recs))
	}
	if st, _ := s.relay1.admin.GetStatus(ctx, &relayv1.GetStatusRequest{}); st.GetSessionCount() != 0 {
		t.Errorf("relay 1 sessions left: %d", st.GetSessionCount())
	}
}
