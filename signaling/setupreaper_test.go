package signaling_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling"
)

// setupReaperTimeouts make a setup's deadline short for the tests:
// 1s origin + 1s relay + 1s margin.
func setupReaperTimeouts(c *signaling.Config) {
	c.OriginTimeout, c.RelayCallTimeout, c.SetupMargin = time.Second, time.Second, time.Second
}

// startReaper runs a signaling instance's reaper until the test ends.
func startReaper(t *testing.T, srv *signaling.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.RunReaper(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// originPost creates a session at the fake origin, as signaling's setup
// does, and returns its absolute Location.
func originPost(t *testing.T, o *fakeOrigin, stream string) string {
	t.Helper()
	r := do(t, http.MethodPost, o.srv.URL+"/"+stream+"/whip", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if r.status != http.StatusCreated || r.header.Get("Location") == "" {
		t.Fatalf("origin POST: %d %v", r.status, r.header)
	}
	return r.header.Get("Location")
}

// relayAllocate allocates a session on the harness's relay, as signaling's
// setup does over gRPC (the relay records it in etcd).
func relayAllocate(t *testing.T, e *env, id, stream string) {
	t.Helper()
	_, err := e.relay.Allocate(t.Context(), &relayv1.AllocateSessionRequest{
		SessionId: id, Stream: stream, Direction: relayv1.Direction_DIRECTION_PUBLISH,
		ClientIce:       &relayv1.IceCredentials{Ufrag: "cli" + id, Pwd: "clientpasswordclientpassword"},
		OriginIce:       &relayv1.IceCredentials{Ufrag: "org" + id, Pwd: "originpasswordoriginpassword"},
		OriginAddresses: []string{"127.0.0.1:9"}, OriginId: "origin-whip",
	})
	if err != nil {
		t.Fatal(err)
	}
}

// countKeys counts the keys under prefix/sub.
func countKeys(t *testing.T, reg *registry.Client, sub string) int64 {
	t.Helper()
	resp, err := reg.Etcd().Get(t.Context(), reg.Prefix()+sub, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// waitNoSetups waits until no setups/ key is left.
func waitNoSetups(t *testing.T, reg *registry.Client, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for countKeys(t, reg, "setups/") != 0 {
		if time.Now().After(deadline) {
			all, _ := reg.ListSetups(t.Context())
			t.Fatalf("pending setups not reaped within %s: %+v", within, all)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReaperUndoesDeadSetups: pending-setup records left by a signaling
// instance that died at each stage of a setup are undone by another
// instance's reaper once past their deadline: the origin's session gets
// exactly one DELETE when the origin had answered, the relay's session is
// released, and no setups/ key or session record is left.
func TestReaperUndoesDeadSetups(t *testing.T) {
	const stream = "__defaultVhost__/live/cam"
	cases := []struct {
		name string
		// origin: the origin answered (its Location is recorded); relay:
		// the relay allocated; finished: the session record is complete
		// (only the pending key was left over).
		origin, relay, finished bool
		relayGone               bool // the relay died afterwards
	}{
		{name: "before origin answered"},
		{name: "origin answered", origin: true},
		{name: "relay allocated", origin: true, relay: true},
		{name: "relay allocated, relay gone", origin: true, relay: true, relayGone: true},
		{name: "finished, key left over", origin: true, relay: true, finished: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			origin := newFakeOrigin(t, registry.OriginKindWHIP)
			origin.register(t, e.reg)
			ctx := t.Context()
			const id = "deadsetup1"

			p, err := e.reg.BeginSetup(ctx, registry.Setup{ID: id, Stream: stream, Direction: registry.DirectionPublish,
				OriginID: "origin-whip", Deadline: time.Now().Add(-time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			// A setup that is not due yet is left alone.
			live, err := e.reg.BeginSetup(ctx, registry.Setup{ID: "livesetup", Stream: stream, Direction: registry.DirectionPublish,
				OriginID: "origin-whip", Deadline: time.Now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			var location string
			if tc.origin {
				location = originPost(t, origin, "live/cam")
				if p, err = e.reg.NoteSetupOrigin(ctx, p, location, `"origin-etag"`); err != nil {
					t.Fatal(err)
				}
			}
			if tc.relay {
				relayAllocate(t, e, id, stream)
				if _, err := e.relay.Get(id); err != nil {
					t.Fatal(err)
				}
			}
			if tc.finished {
				// As a non-atomic finish would leave it: the session
				// complete, the pending key still there.
				if _, err := e.reg.UpdateSession(ctx, id, func(s *registry.Session) error {
					s.OriginResource = location
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.relayGone {
				_ = e.relay.Close()
			}

			// Three instances reap at once: the claim makes one of them
			// undo the setup.
			var srvs []*signaling.Server
			for range 3 {
				cfg := signaling.Config{Registry: e.reg, ReapInterval: 100 * time.Millisecond, OrphanGrace: time.Hour}
				setupReaperTimeouts(&cfg)
				srv, err := signaling.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(srv.Close)
				srvs = append(srvs, srv)
			}
			for _, srv := range srvs {
				startReaper(t, srv)
			}

			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := e.reg.GetSetup(ctx, id); err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the dead setup was not reaped")
				}
				time.Sleep(50 * time.Millisecond)
			}
			// A few more passes: nothing is done twice.
			time.Sleep(400 * time.Millisecond)

			_, deletes, _ := origin.counts()
			wantDeletes := 0
			if tc.origin && !tc.finished {
				wantDeletes = 1
			}
			if deletes != wantDeletes {
				t.Errorf("origin saw %d DELETEs, want %d", deletes, wantDeletes)
			}
			if wantDeletes == 1 {
				u, _ := url.Parse(location)
				origin.mu.Lock()
				got := origin.deletes[0]
				origin.mu.Unlock()
				if got != u.RequestURI() {
					t.Errorf("origin DELETE of %s, want %s", got, u.RequestURI())
				}
			}
			if tc.finished {
				// A complete session is not touched.
				if s, err := e.reg.GetSession(ctx, id); err != nil || s.OriginResource != location {
					t.Errorf("the finished session was touched: %+v %v", s, err)
				}
				if _, err := e.relay.Get(id); err != nil {
					t.Errorf("the finished session was released on the relay: %v", err)
				}
			} else {
				if !tc.relayGone {
					if _, err := e.relay.Get(id); err == nil {
						t.Error("the relay still has the session")
					}
				}
				for _, sub := range []string{"sessions/", "ufrags/", "relaysessions/", "streamsessions/"} {
					if n := countKeys(t, e.reg, sub); n != 0 {
						t.Errorf("%d %s keys left", n, sub)
					}
				}
			}
			if got, err := e.reg.GetSetup(ctx, "livesetup"); err != nil || got.Rev != live.Rev {
				t.Errorf("a setup not due yet was touched: %+v %v", got, err)
			}
			if err := e.reg.DeleteSetup(ctx, "livesetup", live.Rev); err != nil {
				t.Fatal(err)
			}
			waitNoSetups(t, e.reg, time.Second)
			counted := 0
			for _, srv := range srvs {
				m := httptestDo(t, srv.Handler(), "GET", "/metrics", "", "")
				switch {
				case strings.Contains(m.Body.String(), "rtcedge_signaling_setups_reaped_total 1\n"):
					counted++
				case !strings.Contains(m.Body.String(), "rtcedge_signaling_setups_reaped_total 0\n"):
					t.Error("rtcedge_signaling_setups_reaped_total is neither 0 nor 1")
				}
			}
			if counted != 1 {
				t.Errorf("%d instances counted the reaped setup, want 1", counted)
			}
		})
	}
}

// TestSetupsLeaveNoPendingRecord: a setup that succeeds and setups that
// fail at each stage leave no setups/ key (and the failed ones no origin
// session).
func TestSetupsLeaveNoPendingRecord(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindWHIP)
	origin.register(t, e.reg)
	offer := fixture(t, "chrome-whip-offer.sdp")

	r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/ok", "application/sdp", offer)
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	if n := countKeys(t, e.reg, "setups/"); n != 0 {
		t.Fatalf("%d setups/ keys after a successful setup", n)
	}
	id := strings.TrimPrefix(r.header.Get("Location"), "/sessions/")
	if s, err := e.reg.GetSession(t.Context(), id); err != nil || s.OriginResource == "" || s.ETag != r.header.Get("ETag") {
		t.Fatalf("session record: %+v %v", s, err)
	}

	// The origin has no publisher: 409, nothing to undo.
	origin.mu.Lock()
	origin.noPub = true
	origin.mu.Unlock()
	if r := do(t, http.MethodPost, e.sig[0].URL+"/whep/live/nopub", "application/sdp", fixture(t, "chrome-whep-offer.sdp")); r.status != http.StatusConflict {
		t.Fatalf("WHEP without publisher = %d %s", r.status, r.body)
	}
	if n := countKeys(t, e.reg, "setups/"); n != 0 {
		t.Fatalf("%d setups/ keys after a refused setup", n)
	}

	// No relay: the origin answered, its session is deleted, and the
	// pending record too.
	_ = e.relay.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.reg.PickRelay(t.Context(), ""); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay is still picked")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, deletesBefore, _ := origin.counts()
	if r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/norelay", "application/sdp", offer); r.status != http.StatusServiceUnavailable {
		t.Fatalf("POST without relay = %d %s", r.status, r.body)
	}
	if _, deletes, _ := origin.counts(); deletes != deletesBefore+1 {
		t.Fatalf("origin DELETEs %d, want %d", deletes, deletesBefore+1)
	}
	if n := countKeys(t, e.reg, "setups/"); n != 0 {
		t.Fatalf("%d setups/ keys after a failed setup", n)
	}
}
