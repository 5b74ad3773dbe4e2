package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// TestProcRelayTakeover is a rolling upgrade of a relay without a gap: with
// a publisher and a player on it, the relay is drained and a second
// process of the same relay id is started beside it with -takeover, on the
// same UDP, gRPC and HTTP ports. It proves: the successor binds the ports
// the running relay holds (SO_REUSEPORT), reloads both sessions and takes
// the registration over (the record is the successor's, not draining); the
// old process sees the takeover and takes no new session; stopped with
// SIGTERM, it exits cleanly without taking the
// registration back or removing anything; media reaches the player after
// the old process is gone, with neither client's ICE agent leaving
// "connected" (no consent lapse, no ICE restart, no new setup); the
// sessions' records are still assigned to the relay. The packets lost
// across the handover are logged (docs/RELIABILITY.md, fault 7).
func TestProcRelayTakeover(t *testing.T) {
	s := startProcStack(t, 1, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	old := s.relays[0]
	pub := publish(t, ctx, s.sigs[0].url+"/whip/live/takeover")
	pl := play(t, ctx, s.sigs[0].url+"/whep/live/takeover")
	waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 25 })
	pubICE, plICE := watchICE(pub.pc), watchICE(pl.pc)
	before, err := old.sessions(ctx)
	if err != nil || len(before) != 2 {
		t.Fatalf("relay sessions before the upgrade: %v %v", before, err)
	}

	// The relay records each session's client paths within a second of a
	// change; a successor restores them from there.
	waitFor(t, 10*time.Second, "both sessions' client paths recorded", func() bool {
		recs, err := s.reg.ListSessionsByRelay(ctx, old.id)
		if err != nil || len(recs) != 2 {
			return false
		}
		for _, r := range recs {
			if !slices.ContainsFunc(r.ClientPaths, func(p registry.ClientPath) bool { return p.Selected }) {
				return false
			}
		}
		return true
	})

	// A rolling upgrade: drain first (no new session lands on the old
	// process), then the successor with the old one's command line.
	if _, err := old.admin.Drain(ctx, &relayv1.DrainRequest{}); err != nil {
		t.Fatalf("drain: %v", err)
	}
	var args []string
	for i := 0; i < len(old.args); i++ {
		if old.args[i] == "-ready-file" {
			i++
			continue
		}
		args = append(args, old.args[i])
	}
	next := newServiceProc(t, old.id+"-next", old.bin, append(args, "-takeover")...)
	ready := next.waitReadyFile(startDeadline)
	if len(ready.UDP) != 1 || ready.UDP[0] != old.udp {
		t.Fatalf("successor bound UDP %v, want the running relay's %s", ready.UDP, old.udp)
	}
	waitFor(t, startDeadline, "the successor reloaded both sessions and registered", func() bool {
		logs := next.logs()
		return strings.Contains(logs, `"msg":"relay: sessions reloaded from the registry","sessions":2`) &&
			strings.Contains(logs, `"msg":"relay: registered"`)
	})
	rec, err := s.reg.GetRelay(ctx, old.id)
	if err != nil || rec.Draining {
		t.Fatalf("registration after the takeover: %+v %v; want the successor's (not draining)", rec, err)
	}
	waitFor(t, 10*time.Second, "the old process seeing the takeover", func() bool {
		return strings.Contains(old.logs(), "a successor took this relay over; taking no new session")
	})

	mark := pub.next.Load()
	old.stop()
	if st := old.exitStatus(); st != "exit status 0" {
		t.Errorf("old relay process: %s", st)
	}
	stopped := pub.next.Load()
	waitFor(t, 20*time.Second, "media at the player through the successor alone", func() bool { return pl.maxSeen() >= stopped+50 })
	missing := pl.missing(mark, stopped+50)
	t.Logf("handover: %d of %d packets lost between the old process's SIGTERM and 1 s after its exit: %s",
		len(missing), stopped+50-mark, seqRanges(missing))

	for name, w := range map[string]*iceStates{"publisher": pubICE, "player": plICE} {
		if w.mark() != 0 {
			t.Errorf("%s's ICE agent changed state during the handover: %s", name, w)
		}
	}
	if got := selectedRemote(pl.pc); got != old.udp {
		t.Errorf("player's selected remote %s, want the relay's %s", got, old.udp)
	}
	// The successor now answers on the same admin port alone.
	waitFor(t, 10*time.Second, "the successor's sessions connected", func() bool {
		ss, err := old.sessions(ctx)
		if err != nil || len(ss) != 2 {
			return false
		}
		for id, a := range ss {
			if before[id] == nil || a.State != relayv1.SessionState_SESSION_STATE_CONNECTED {
				return false
			}
		}
		return true
	})
	recs, err := s.reg.ListSessionsByRelay(ctx, old.id)
	if err != nil || len(recs) != 2 {
		t.Fatalf("registry sessions of %s after the upgrade: %d %v", old.id, len(recs), err)
	}
	time.Sleep(3 * time.Second) // past a keepalive round: the key stays the successor's
	if rec, err := s.reg.GetRelay(ctx, old.id); err != nil || rec.Draining {
		t.Fatalf("registration after the old process exited: %+v %v", rec, err)
	}
}
