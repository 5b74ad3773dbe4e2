package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/rtcedge/rtcedge/internal/demoorigin"
)

// iceStates records a peer connection's ICE connection states.
type iceStates struct {
	mu     sync.Mutex
	states []webrtc.ICEConnectionState
}

func watchICE(pc *webrtc.PeerConnection) *iceStates {
	w := &iceStates{}
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		w.mu.Lock()
		w.states = append(w.states, s)
		w.mu.Unlock()
	})
	return w
}

// mark returns the number of states seen so far.
func (w *iceStates) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.states)
}

// connectedAfter reports whether ICE went back to connected after the
// restart that followed mark (pion goes to checking on a restart).
func (w *iceStates) connectedAfter(mark int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	checking := false
	for _, s := range w.states[mark:] {
		switch s {
		case webrtc.ICEConnectionStateChecking:
			checking = true
		case webrtc.ICEConnectionStateConnected, webrtc.ICEConnectionStateCompleted:
			if checking {
				return true
			}
		}
	}
	return false
}

func (w *iceStates) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b []string
	for _, s := range w.states {
		b = append(b, s.String())
	}
	return strings.Join(b, " → ")
}

// sdpUfrag returns the first a=ice-ufrag of an SDP.
func sdpUfrag(sdp string) string {
	for _, l := range strings.Split(sdp, "\r\n") {
		if u, ok := strings.CutPrefix(l, "a=ice-ufrag:"); ok {
			return u
		}
	}
	return ""
}

// TestICERestartAnsweredByTheEdge: in front of an origin that refuses PATCH
// (405) or drops the connection on it (as SRS does), a client's ICE restart
// is answered by the edge: (a) on the same relay, and (b) onto the other
// relay after the first is killed. Each gets 200 with new credentials, ICE
// connects again and media resumes, and the origin sees no new session and
// no PATCH. The relay translates the client's new USERNAME to the one the
// origin knows and re-signs checks and responses both ways; without that,
// this test fails at "ICE connected again".
func TestICERestartAnsweredByTheEdge(t *testing.T) {
	for _, mode := range []demoorigin.PatchMode{demoorigin.PatchReject, demoorigin.PatchClose} {
		t.Run(string(mode), func(t *testing.T) {
			s := startStack(t, patchMode(mode))
			ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
			defer cancel()
			origin := s.origin.origin
			// The publisher goes through signaling A (zone a: relay 1),
			// the player through B (relay 2).
			pub := publish(t, ctx, s.sigA.url+"/whip/live/restart")
			waitFor(t, 15*time.Second, "media at the origin", func() bool { return origin.Stats().PacketsForwarded > 0 })
			pl := play(t, ctx, s.sigB.url+"/whep/live/restart")
			waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 10 })
			created := origin.Stats().SessionsCreated
			if created != 2 {
				t.Fatalf("the origin created %d sessions for one publisher and one player", created)
			}
			pubICE, plICE := watchICE(pub.pc), watchICE(pl.pc)
			originUfrag := sdpUfrag(pub.answer)

			// restart restarts the publisher's ICE and waits for media to
			// reach the origin through the relay at want.
			restart := func(step string, want string) {
				t.Helper()
				mark := pubICE.mark()
				prevUfrag := sdpUfrag(pub.answer)
				pub.answer = iceRestart(t, ctx, pub.pc, pub.res, pub.answer)
				if u := sdpUfrag(pub.answer); u == prevUfrag || u == originUfrag {
					t.Fatalf("%s: the restart's server ufrag %q is not new (before %q, origin's %q)", step, u, prevUfrag, originUfrag)
				}
				waitFor(t, 20*time.Second, step+": the publisher's ICE connected again (needs the relay's USERNAME translation)", func() bool {
					return pubICE.connectedAfter(mark)
				})
				before := origin.Stats().PacketsForwarded
				waitFor(t, 20*time.Second, step+": media at the origin again", func() bool {
					return origin.Stats().PacketsForwarded > before+20
				})
				if got := selectedRemote(pub.pc); got != want {
					t.Errorf("%s: publisher's selected remote %s, want %s", step, got, want)
				}
				from := pub.next.Load()
				waitFor(t, 20*time.Second, step+": media at the player again", func() bool { return pl.maxSeen() >= from+20 })
			}

			// (a) Same relay: the publisher's and the player's.
			restart("same relay", s.relay1.public.String())
			mark := plICE.mark()
			pl.answer = iceRestart(t, ctx, pl.pc, pl.res, pl.answer)
			waitFor(t, 20*time.Second, "player's ICE connected again", func() bool { return plICE.connectedAfter(mark) })
			from := pub.next.Load()
			waitFor(t, 20*time.Second, "media at the player after its restart", func() bool { return pl.maxSeen() >= from+20 })

			// (b) Onto the other relay: relay 1 dies for good.
			s.relay1.stop()
			waitFor(t, 15*time.Second, "relay 1's registration gone", func() bool {
				rs, err := s.reg.Relays(ctx)
				return err == nil && len(rs) == 1
			})
			restart("onto relay 2", s.relay2.public.String())
			recs, err := s.reg.ListSessionsByRelay(ctx, "relay-2")
			if err != nil || len(recs) != 2 {
				t.Errorf("relay 2's sessions after the move: %d %v", len(recs), err)
			}

			st := origin.Stats()
			if st.SessionsCreated != created || st.PatchRequests != 0 || st.Publishers != 1 || st.Players != 1 {
				t.Errorf("the origin saw %d new sessions and %d PATCHes (publishers %d, players %d); want none, 1 and 1",
					st.SessionsCreated-created, st.PatchRequests, st.Publishers, st.Players)
			}
			t.Logf("publisher ICE: %s; player ICE: %s", pubICE, plICE)
		})
	}
}

// patchMode sets the demo origin's PATCH behaviour.
func patchMode(mode demoorigin.PatchMode) func(*demoorigin.Config) {
	return func(c *demoorigin.Config) { c.PatchMode = mode }
}
