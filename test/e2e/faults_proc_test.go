//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rtcedge/rtcedge/internal/testcerts"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// Fault tests with real processes: etcd, relays, signaling and the demo
// origin each run as their own binary (procs_test.go), and the faults are
// signals: SIGSTOP/SIGKILL of etcd, SIGKILL of a relay.

// relayCounters is what the relay path counts, read through the relays'
// gRPC API: per session the packets each way and the drops, and relay-wide
// the drops and the packets from unknown sources.
type relayCounters struct {
	sessions map[string]*relayv1.Session
	status   *relayv1.GetStatusResponse
}

func readCounters(t *testing.T, ctx context.Context, r *relayProc) relayCounters {
	t.Helper()
	ss, err := r.sessions(ctx)
	if err != nil {
		t.Fatalf("%s ListSessions: %v", r.id, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := r.admin.GetStatus(cctx, &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("%s GetStatus: %v", r.id, err)
	}
	return relayCounters{sessions: ss, status: st}
}

func dropSum(d *relayv1.DropCounters) uint64 {
	return d.GetStunIntegrity() + d.GetUnboundSource() + d.GetWriteErrors() + d.GetForeignSource()
}

// TestProcEtcdOutage freezes etcd (SIGSTOP) for 15 s, then kills it
// (SIGKILL) and leaves it down for 15 s more, then starts it again on the
// same data dir and ports, under a live publisher (relay-1) and player
// (relay-2) in separate processes. It proves:
//
//   - no media is lost on the relay path during the 30 s outage: every
//     packet counter the publisher sent from the freeze until the restart
//     reaches the player (by its payload counter, which the origin does not
//     rewrite), the relays drop nothing (per-session and relay-wide drop
//     counters and unknown-source packets unchanged) and their forwarded
//     counters grow by at least as many packets as were sent;
//   - a setup during either phase (etcd hanging, then refusing) gets 503
//     with Retry-After;
//   - once etcd is back, a new setup succeeds within 30 s without
//     restarting anything, and the live session still flows.
func TestProcEtcdOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s etcd outage with real processes; skipped with -short")
	}
	s := startProcStack(t, 2, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	pub := publish(t, ctx, s.sigs[0].url+"/whip/live/outage")
	pl := play(t, ctx, s.sigs[1].url+"/whep/live/outage")
	waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 25 })
	r1Before, r2Before := readCounters(t, ctx, s.relays[0]), readCounters(t, ctx, s.relays[1])
	if len(r1Before.sessions) != 1 || len(r2Before.sessions) != 1 {
		t.Fatalf("want one session on each relay, got %d and %d", len(r1Before.sessions), len(r2Before.sessions))
	}

	from := pub.next.Load()
	start := time.Now()
	s.etcd.pause()
	t.Cleanup(s.etcd.resume) // a frozen process would not die by SIGTERM
	expect503 := func(phase, stream string) {
		t.Helper()
		t0 := time.Now()
		code, retry, loc := postOffer(t, ctx, s.sigs[0].url+"/whip/live/"+stream)
		t.Logf("setup with etcd %s: %d (Retry-After %q) in %s", phase, code, retry, time.Since(t0).Round(time.Millisecond))
		if code != http.StatusServiceUnavailable || retry == "" {
			t.Errorf("setup with etcd %s: %d, Retry-After %q; want 503 with Retry-After (Location %q)", phase, code, retry, loc)
		}
	}
	expect503("frozen", "during-freeze")
	time.Sleep(time.Until(start.Add(15 * time.Second)))
	s.etcd.kill()
	expect503("down", "during-down")
	time.Sleep(time.Until(start.Add(30 * time.Second)))
	to := pub.next.Load()
	s.etcd.start()
	s.etcd.waitReady(startDeadline)
	t.Logf("etcd out for %s; the publisher sent counters %d-%d meanwhile (%d write errors in total)",
		time.Since(start).Round(100*time.Millisecond), from, to-1, pub.failed.Load())

	// Every packet sent during the outage arrives (allow the path 2 s).
	waitFor(t, 10*time.Second, "media after the outage at the player", func() bool { return pl.maxSeen() >= to+100 })
	if miss := pl.missing(from, to); len(miss) > 0 {
		t.Errorf("the player missed %d of the %d packets sent during the outage: %s", len(miss), to-from, seqRanges(miss))
	}
	r1After, r2After := readCounters(t, ctx, s.relays[0]), readCounters(t, ctx, s.relays[1])
	sent := uint64(to - from)
	for _, c := range []struct {
		name          string
		before, after relayCounters
		fwd           func(*relayv1.Session) uint64
	}{
		{"relay-1 (publisher)", r1Before, r1After, func(s *relayv1.Session) uint64 { return s.GetClientToOrigin().GetPackets() }},
		{"relay-2 (player)", r2Before, r2After, func(s *relayv1.Session) uint64 { return s.GetOriginToClient().GetPackets() }},
	} {
		for id, b := range c.before.sessions {
			a := c.after.sessions[id]
			if a == nil {
				t.Errorf("%s: session %s gone after the outage", c.name, id)
				continue
			}
			if d := dropSum(a.Drops) - dropSum(b.Drops); d != 0 {
				t.Errorf("%s: session %s dropped %d packets during the outage: %v -> %v", c.name, id, d, b.Drops, a.Drops)
			}
			if d := c.fwd(a) - c.fwd(b); d < sent {
				t.Errorf("%s: session %s forwarded %d packets, fewer than the %d the publisher sent", c.name, id, d, sent)
			}
			if a.State != relayv1.SessionState_SESSION_STATE_CONNECTED || a.AddressChanges != b.AddressChanges {
				t.Errorf("%s: session %s state %s, address changes %d -> %d", c.name, id, a.State, b.AddressChanges, a.AddressChanges)
			}
		}
		if d := dropSum(c.after.status.Drops) - dropSum(c.before.status.Drops); d != 0 {
			t.Errorf("%s: %d relay-wide drops during the outage", c.name, d)
		}
		if d := c.after.status.UnknownSource - c.before.status.UnknownSource; d != 0 {
			t.Errorf("%s: %d packets from unknown sources during the outage", c.name, d)
		}
		if d := c.after.status.Malformed - c.before.status.Malformed; d != 0 {
			t.Errorf("%s: %d malformed packets during the outage", c.name, d)
		}
	}

	// New setups work again by themselves.
	back := time.Now()
	var loc string
	for loc == "" {
		code, _, l := postOffer(t, ctx, s.sigs[0].url+"/whip/live/after-outage")
		switch {
		case code == http.StatusCreated:
			loc = l
		case time.Since(back) > 30*time.Second:
			t.Fatalf("no setup within 30s of etcd's return; last status %d", code)
		default:
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("first setup after etcd's return succeeded after %s", time.Since(back).Round(100*time.Millisecond))
	if code, err := deleteResource(ctx, loc); err != nil || code != http.StatusOK {
		t.Errorf("DELETE after the outage: %d %v", code, err)
	}
	mark := pub.next.Load()
	waitFor(t, 10*time.Second, "media still flowing after the outage", func() bool { return pl.maxSeen() >= mark+25 })
}

// TestProcRelayRestartResumesSessions kills a relay process with SIGKILL
// under a live publisher and player and starts it again with the same
// relay id and ports. It proves: the relay reloads both sessions from etcd
// (its ListSessions shows them, and the registry still assigns them to
// it); both clients' consent checks re-bind them without a new setup; the
// publisher's media flows through it toward the origin again; and the
// player gets media again by itself, with no ICE restart: the relay binds
// each session's socket toward the origin to the address its record names,
// the source a full-ICE origin (the pion demo origin) has selected and
// keeps sending to.
func TestProcRelayRestartResumesSessions(t *testing.T) {
	s := startProcStack(t, 1, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	relay := s.relays[0]
	pub := publish(t, ctx, s.sigs[0].url+"/whip/live/restart")
	pl := play(t, ctx, s.sigs[0].url+"/whep/live/restart")
	waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 25 })
	before, err := relay.sessions(ctx)
	if err != nil || len(before) != 2 {
		t.Fatalf("relay sessions before the kill: %v %v", before, err)
	}

	relay.kill()
	killed := time.Now()
	time.Sleep(time.Second)
	relay.start()
	relay.waitReady(startDeadline)
	after, err := relay.sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, b := range before {
		if a := after[id]; a == nil || a.Stream != b.Stream || a.Direction != b.Direction {
			t.Errorf("session %s (%s) not resumed: %v", id, b.Direction, a)
		}
	}
	if recs, err := s.reg.ListSessionsByRelay(ctx, relay.id); err != nil || len(recs) != 2 {
		t.Errorf("registry sessions of %s: %d %v", relay.id, len(recs), err)
	}
	var pubID string
	waitFor(t, 10*time.Second, "both clients re-bound and the publisher's media forwarded", func() bool {
		ss, err := relay.sessions(ctx)
		if err != nil || len(ss) != 2 {
			return false
		}
		for id, a := range ss {
			if a.State != relayv1.SessionState_SESSION_STATE_CONNECTED {
				return false
			}
			if a.Direction == relayv1.Direction_DIRECTION_PUBLISH {
				pubID = id
				if a.ClientToOrigin.GetPackets() < 50 {
					return false
				}
			}
		}
		return true
	})

	mark := pub.next.Load()
	flowing := func() bool { return pl.maxSeen() >= mark+50 }
	waitFor(t, 20*time.Second, "media at the player through the restarted relay, without an ICE restart", flowing)
	t.Logf("media back at the player %s after the SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	after, err = relay.sessions(ctx)
	if err != nil || len(after) != 2 || after[pubID] == nil {
		t.Fatalf("relay sessions at the end: %v %v", after, err)
	}
}

// TestProcRelayDeathRecoveredByICERestart kills the publisher's relay for
// good: once its registration has expired, signaling counts the session as
// orphaned (rtcedge_signaling_orphaned_sessions), the registry keeps it
// under the dead relay, and the publisher's ICE restart (PATCH through the
// other signaling instance) moves it onto the live relay, where media
// reaches the player again; the orphan count returns to 0 and nothing was
// reaped.
func TestProcRelayDeathRecoveredByICERestart(t *testing.T) {
	s := startProcStack(t, 2, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pub := publish(t, ctx, s.sigs[0].url+"/whip/live/rehome")
	pl := play(t, ctx, s.sigs[1].url+"/whep/live/rehome")
	waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 25 })
	if ss, err := s.relays[0].sessions(ctx); err != nil || len(ss) != 1 {
		t.Fatalf("relay-1 sessions: %v %v", ss, err)
	}

	s.relays[0].kill()
	killed := time.Now()
	waitFor(t, 20*time.Second, "relay-1's registration gone", func() bool {
		rs, err := s.reg.ListRelays(ctx)
		return err == nil && len(rs) == 1 && rs[0].ID == "relay-2"
	})
	t.Logf("relay-1's registration expired %s after the SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	for _, sig := range s.sigs {
		waitFor(t, 10*time.Second, sig.name+" counting the orphan", func() bool {
			return sig.metric("rtcedge_signaling_orphaned_sessions") == 1
		})
	}
	recs, err := s.reg.ListSessionsByRelay(ctx, "relay-1")
	if err != nil || len(recs) != 1 {
		t.Fatalf("the dead relay's session should stay listed under it: %v %v", recs, err)
	}

	pub.res.Location = strings.Replace(pub.res.Location, s.sigs[0].url, s.sigs[1].url, 1)
	iceRestart(t, ctx, pub.pc, pub.res, pub.answer)
	rec, err := s.reg.GetSession(ctx, recs[0].ID)
	if err != nil || rec.RelayID != "relay-2" {
		t.Fatalf("session after the restart: %+v %v", rec, err)
	}
	mark := pub.next.Load()
	waitFor(t, 20*time.Second, "media at the player after the ICE restart", func() bool { return pl.maxSeen() >= mark+50 })
	t.Logf("media back at the player %s after the SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	ss, err := s.relays[1].sessions(ctx)
	if err != nil || len(ss) != 2 {
		t.Fatalf("relay-2 sessions: %v %v", ss, err)
	}
	for id, a := range ss {
		if a.State != relayv1.SessionState_SESSION_STATE_CONNECTED {
			t.Errorf("relay-2 session %s: %s", id, a.State)
		}
	}
	if got := selectedRemote(pub.pc); got != s.relays[1].udp {
		t.Errorf("publisher's selected remote %s, want relay-2 at %s", got, s.relays[1].udp)
	}
	for _, sig := range s.sigs {
		waitFor(t, 10*time.Second, sig.name+" no longer counting an orphan", func() bool {
			return sig.metric("rtcedge_signaling_orphaned_sessions") == 0
		})
		if n := sig.metric("rtcedge_signaling_sessions_reaped_total"); n != 0 {
			t.Errorf("%s reaped %v sessions", sig.name, n)
		}
	}
}

// TestProcPlayerMovedToAnotherRelay kills the player's relay: the
// player's ICE restart moves its session onto the other relay, and the
// origin (pion's ICE agent, which takes a newly nominated pair only when its
// priority is strictly higher) must send the player's media through the new
// relay: the relay raises the PRIORITY of the checks it forwards by the
// session's moves (registry.Session.Moves). Without that the origin kept
// sending to the dead relay's address and the player got nothing.
func TestProcPlayerMovedToAnotherRelay(t *testing.T) {
	s := startProcStack(t, 2, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pub := publish(t, ctx, s.sigs[0].url+"/whip/live/moveplayer")
	pl := play(t, ctx, s.sigs[1].url+"/whep/live/moveplayer")
	waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 25 })
	recs, err := s.reg.ListSessionsByRelay(ctx, "relay-2")
	if err != nil || len(recs) != 1 || recs[0].Direction != registry.DirectionPlay {
		t.Fatalf("relay-2 should carry the player's session: %+v %v", recs, err)
	}

	s.relays[1].kill()
	waitFor(t, 20*time.Second, "relay-2's registration gone", func() bool {
		rs, err := s.reg.ListRelays(ctx)
		return err == nil && len(rs) == 1 && rs[0].ID == "relay-1"
	})
	pl.res.Location = strings.Replace(pl.res.Location, s.sigs[1].url, s.sigs[0].url, 1)
	iceRestart(t, ctx, pl.pc, pl.res, pl.answer)
	rec, err := s.reg.GetSession(ctx, recs[0].ID)
	if err != nil || rec.RelayID != "relay-1" || rec.Moves != 1 {
		t.Fatalf("player's session after the restart: relay %q, moves %d, %v; want relay-1, 1 move", rec.RelayID, rec.Moves, err)
	}
	mark := pub.next.Load()
	waitFor(t, 30*time.Second, "media at the moved player", func() bool { return pl.maxSeen() >= mark+50 })
	if got := selectedRemote(pl.pc); got != s.relays[0].udp {
		t.Errorf("player's selected remote %s, want relay-1 at %s", got, s.relays[0].udp)
	}
}

// TestProcEtcdTLSAndAuth runs etcd with TLS for clients, client
// certificate authentication and etcd auth (a root user, and an rtcedge
// user whose role may read and write the /rtcedge/ prefix only). The
// binaries started with -etcd-ca/-etcd-cert/-etcd-key and
// -etcd-username/-etcd-password register and a publish and play work end
// to end. The same binaries with a wrong password, or without the CA, exit
// at start with an error that names the cause.
func TestProcEtcdTLSAndAuth(t *testing.T) {
	b := buildBinaries(t)
	certs := testcerts.Write(t)
	etcd := startEtcdProc(t, b, &certs)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	const rootPass, userPass = "root-secret", "rtcedge-secret"
	admin := etcd.client("", "")
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"add root", func() error { _, err := admin.UserAdd(ctx, "root", rootPass); return err }},
		{"grant root", func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role", func() error { _, err := admin.RoleAdd(ctx, "rtcedge"); return err }},
		{"grant prefix", func() error {
			_, err := admin.RoleGrantPermission(ctx, "rtcedge", "/rtcedge/", clientv3.GetPrefixRangeEnd("/rtcedge/"),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user", func() error { _, err := admin.UserAdd(ctx, "rtcedge", userPass); return err }},
		{"grant user", func() error { _, err := admin.UserGrantRole(ctx, "rtcedge", "rtcedge"); return err }},
		{"enable auth", func() error { _, err := admin.AuthEnable(ctx); return err }},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("etcd auth set-up, %s: %v", step.what, err)
		}
	}
	// The user's role is really scoped to the prefix.
	user := etcd.client("rtcedge", userPass)
	if _, err := user.Put(ctx, "/outside", "x"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("a put outside /rtcedge/ as rtcedge: %v; want permission denied", err)
	}

	flags := etcd.etcdArgs("rtcedge", userPass)
	relay := startRelayProc(t, b, "relay-1", "a", flags)
	sig := startSignalingProc(t, b, "sig-a", "a", flags)
	startOriginProc(t, b, "demo-origin", sig)
	reg := etcd.registry("root", rootPass)
	waitFor(t, 20*time.Second, "the relay and the origin registered", func() bool {
		rs, err := reg.ListRelays(ctx)
		os, err2 := reg.ListOrigins(ctx)
		return err == nil && err2 == nil && len(rs) == 1 && len(os) == 1
	})
	pub := publish(t, ctx, sig.url+"/whip/live/secure")
	pl := play(t, ctx, sig.url+"/whep/live/secure")
	waitFor(t, 20*time.Second, "media at the player", func() bool { return pl.count() >= 25 })
	if ss, err := relay.sessions(ctx); err != nil || len(ss) != 2 {
		t.Errorf("relay sessions: %v %v", ss, err)
	}
	if recs, err := reg.ListSessions(ctx); err != nil || len(recs) != 2 {
		t.Errorf("registry sessions: %d %v", len(recs), err)
	}
	pub.close()

	// Misconfigured processes exit at start, saying why.
	dropCA := func(args []string) []string {
		var out []string
		for i := 0; i < len(args); i++ {
			if args[i] == "-etcd-ca" {
				i++
				continue
			}
			out = append(out, args[i])
		}
		return out
	}
	withoutCA := dropCA(etcd.etcdArgs("rtcedge", userPass))
	const untrusted = "certificate does not verify (check -etcd-ca)"
	for _, c := range []struct {
		name, bin string
		args      []string
		want      []string // any of these in the log
	}{
		{"relay-badpass", b.relay, append([]string{"-relay-id", "relay-x", "-udp-listen", anyPort, "-public-addr", "127.0.0.1",
			"-grpc-listen", anyPort, "-http-listen", anyPort}, etcd.etcdArgs("rtcedge", "wrong")...),
			[]string{"authentication failed"}},
		{"sig-badpass", b.signaling, append([]string{"-http-listen", anyPort, "-grpc-listen", anyPort},
			etcd.etcdArgs("rtcedge", "wrong")...), []string{"authentication failed"}},
		{"relay-noca", b.relay, append([]string{"-relay-id", "relay-y", "-udp-listen", anyPort, "-public-addr", "127.0.0.1",
			"-grpc-listen", anyPort, "-http-listen", anyPort}, withoutCA...),
			[]string{untrusted}},
		{"sig-noca", b.signaling, append([]string{"-http-listen", anyPort, "-grpc-listen", anyPort}, withoutCA...),
			[]string{untrusted}},
		// Without a user the etcd client does not even dial at start: this
		// one used to run forever, never registered.
		{"relay-noca-nouser", b.relay, append([]string{"-relay-id", "relay-z", "-udp-listen", anyPort, "-public-addr", "127.0.0.1",
			"-grpc-listen", anyPort, "-http-listen", anyPort}, dropCA(etcd.etcdArgs("", ""))...),
			[]string{untrusted}},
	} {
		p := newProc(t, c.name, c.bin, c.args...)
		t0 := time.Now()
		code := p.waitExit(60 * time.Second)
		logs := p.logs()
		lastLine := tailLines(logs, 1)
		t.Logf("%s: exit %d after %s: %s", c.name, code, time.Since(t0).Round(100*time.Millisecond), lastLine)
		if code <= 0 {
			t.Errorf("%s: exit code %d, want a failure at start (still running after 60s is -1)", c.name, code)
		}
		found := false
		for _, w := range c.want {
			found = found || strings.Contains(lastLine, w)
		}
		if !found {
			t.Errorf("%s: the error does not say why (want one of %q): %s", c.name, c.want, lastLine)
		}
	}
	if rs, err := reg.ListRelays(ctx); err != nil || len(rs) != 1 {
		t.Errorf("relays after the failed starts: %v %v", rs, err)
	}
}

// TestProcSignalingKilledMidSetup SIGKILLs a signaling process in the middle
// of a WHIP setup: after the origin answered (its session exists) and while
// the relay allocation is in flight (the relay process is stopped, so the
// call hangs). When the relay resumes it may still serve the allocation of
// a caller that is gone. Within the setup deadline plus a reaper interval
// the surviving instance's reaper undoes it all: the origin's session is
// deleted (a PATCH of its resource answers 404), the relay has no session,
// and etcd holds no setup or session record.
func TestProcSignalingKilledMidSetup(t *testing.T) {
	s := startProcStack(t, 1, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	relay := s.relays[0]
	// Its setups end by origin 2 s + relay 3 s + margin 1 s.
	doomed := startSignalingProc(t, s.bins, "sig-doomed", "a", s.etcd.etcdArgs("", ""),
		"-origin-timeout", "2s", "-relay-timeout", "3s", "-setup-margin", "1s")

	relay.pause()
	posted := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, doomed.url+"/whip/live/midsetup", strings.NewReader(offerSDP(t, ctx)))
		req.Header.Set("Content-Type", "application/sdp")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the POST was answered %d", resp.StatusCode)
		}
		posted <- err
	}()
	var pending registry.PendingSetup
	waitFor(t, 10*time.Second, "a pending setup that the origin answered", func() bool {
		ps, err := s.reg.ListSetups(ctx)
		if err != nil || len(ps) != 1 || ps[0].OriginResource == "" {
			return false
		}
		pending = ps[0]
		return true
	})
	doomed.kill()
	if err := <-posted; err == nil || strings.Contains(err.Error(), "answered") {
		t.Fatalf("POST to the killed instance: %v", err)
	}
	relay.resume()
	killed := time.Now()
	if code := patchStatus(t, ctx, pending.OriginResource); code != http.StatusPreconditionRequired {
		t.Fatalf("origin session before the reaper: PATCH = %d, want 428 (it exists)", code)
	}

	// Setup deadline (at most 6 s after it began) + 1 s reaper interval +
	// the reaper's own calls.
	waitFor(t, 20*time.Second, "the reaper undoing the setup", func() bool {
		return s.sigs[0].metric("rtcedge_signaling_setups_reaped_total") == 1
	})
	t.Logf("setup %s undone %s after the kill", pending.ID, time.Since(killed).Round(100*time.Millisecond))
	if code := patchStatus(t, ctx, pending.OriginResource); code != http.StatusNotFound {
		t.Errorf("origin session after the reaper: PATCH = %d, want 404", code)
	}
	if ss, err := relay.sessions(ctx); err != nil || len(ss) != 0 {
		t.Errorf("relay sessions after the reaper: %v %v", ss, err)
	}
	etcd := s.etcd.client("", "")
	for _, prefix := range []string{registry.DefaultPrefix + "setups/", registry.DefaultPrefix + "sessions/", registry.DefaultPrefix + "ufrags/"} {
		resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 0 {
			t.Errorf("etcd %s* after the reaper: %v keys, %v", prefix, resp, err)
		}
	}
}

// patchStatus PATCHes a trickle fragment without If-Match to an origin's
// session resource: 428 says the session exists, 404 that it does not.
func patchStatus(t *testing.T, ctx context.Context, resource string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, resource, strings.NewReader("a=end-of-candidates\r\n"))
	req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PATCH %s: %v", resource, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestProcOriginStopsHeartbeating freezes an origin process (SIGSTOP: no
// heartbeat, no HTTP) that a stream is pinned to. Once its 5 s lease has
// run out the registry no longer lists it, and the next publish of the
// stream is pinned to the live origin, where a player gets its media.
func TestProcOriginStopsHeartbeating(t *testing.T) {
	s := startProcStack(t, 1, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	// Its id sorts first, so with equal load the stream pins to it.
	dying := startOriginProc(t, s.bins, "a-dying-origin", s.sigs[0], 5*time.Second)
	waitFor(t, 10*time.Second, "both origins registered", func() bool {
		origins, err := s.reg.ListOrigins(ctx)
		return err == nil && len(origins) == 2
	})
	first := publish(t, ctx, s.sigs[0].url+"/whip/live/failover")
	if pins, err := s.reg.ListPins(ctx); err != nil || len(pins) != 1 || pins[0].OriginID != "a-dying-origin" {
		t.Fatalf("pins: %+v %v; want the stream on a-dying-origin", pins, err)
	}
	first.close()

	dying.pause()
	t.Cleanup(dying.resume) // so it can be stopped
	paused := time.Now()
	waitFor(t, 15*time.Second, "the frozen origin's lease expiry", func() bool {
		_, err := s.reg.GetOrigin(ctx, "a-dying-origin")
		return errors.Is(err, registry.ErrNotFound)
	})
	t.Logf("origin gone from the registry %s after it froze", time.Since(paused).Round(100*time.Millisecond))
	pub := publish(t, ctx, s.sigs[0].url+"/whip/live/failover")
	pl := play(t, ctx, s.sigs[0].url+"/whep/live/failover")
	if pins, err := s.reg.ListPins(ctx); err != nil || len(pins) != 1 || pins[0].OriginID != "demo-origin" {
		t.Fatalf("pins after the lease expiry: %+v %v; want the stream on demo-origin", pins, err)
	}
	waitFor(t, 20*time.Second, "media at the player through the live origin", func() bool { return pl.count() >= 25 })
	pub.close()
}
