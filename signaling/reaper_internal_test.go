package signaling

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestReaperGraceCountsFromTheRelaysAbsence: a session older than the
// orphan grace whose relay has just lost its registration (after an etcd
// outage longer than the relays' lease every relay registers again under a
// new lease) is not reaped by the first pass that sees the relay missing,
// only once the relay has been missing for the grace; a relay seen alive in
// between starts the count again. The chaos harness found live sessions
// reaped right after an etcd majority came back (fault 2).
func TestReaperGraceCountsFromTheRelaysAbsence(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	const grace = time.Minute
	s, err := New(Config{Registry: reg, OrphanGrace: grace, ReapInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := reg.CreateSession(t.Context(), registry.Session{ID: "sess-old-1", Stream: "__defaultVhost__/live/old",
		Direction: registry.DirectionPlay, RelayID: "relay-x",
		ClientICE:       registry.ICECredentials{Ufrag: "clientufrag1", Pwd: "clientpasswordclientpassword"},
		OriginICE:       registry.ICECredentials{Ufrag: "originufrag1", Pwd: "originpasswordoriginpassword"},
		OriginAddresses: []string{"127.0.0.1:9"}}); err != nil {
		t.Fatal(err)
	}
	// The session is already older than the grace at every pass.
	t0 := time.Now().Add(2 * grace)
	steps := []struct {
		name     string
		at       time.Time
		relayUp  bool // the relay has a registration at this pass
		wantKept bool
	}{
		{name: "the first pass that sees the relay missing", at: t0, wantKept: true},
		{name: "missing for less than the grace", at: t0.Add(grace - time.Second), wantKept: true},
		{name: "registered again", at: t0.Add(grace), relayUp: true, wantKept: true},
		{name: "missing again: the count starts anew", at: t0.Add(grace + time.Second), wantKept: true},
		{name: "missing for the grace", at: t0.Add(2*grace + time.Second), wantKept: false},
	}
	var relay *registry.RelayRegistration
	for _, st := range steps {
		switch {
		case st.relayUp && relay == nil:
			relay, err = reg.RegisterRelay(t.Context(), registry.Relay{ID: "relay-x", GRPCAddress: "127.0.0.1:9",
				PublicAddresses: []string{"127.0.0.1:9"}}, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
		case !st.relayUp && relay != nil:
			if err := relay.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			relay = nil
		}
		// The registry reads relays from a watched cache: wait until it
		// shows this step's state.
		for deadline := time.Now().Add(10 * time.Second); ; {
			if alive, err := reg.RelayAlive(t.Context(), "relay-x"); err == nil && alive == st.relayUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the registry does not show relay-x up=%v", st.name, st.relayUp)
			}
			time.Sleep(10 * time.Millisecond)
		}
		s.reap(t.Context(), st.at)
		_, err := reg.GetSession(t.Context(), "sess-old-1")
		if kept := err == nil; kept != st.wantKept {
			t.Fatalf("%s: session kept %v (%v), want %v", st.name, kept, err, st.wantKept)
		}
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
}

// TestReapOrphanKeepsAMovedSession: the reaper lists a session of a dead
// relay past the grace; before it removes it, the client's ICE restart
// moves the session onto a live relay. The reaper must keep the record and
// must not DELETE the origin's session, which the moved session uses. An
// unchanged orphan goes, record first, then its origin session.
func TestReapOrphanKeepsAMovedSession(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	var mu sync.Mutex
	deletes := map[string]int{}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			mu.Lock()
			deletes[r.URL.Path]++
			mu.Unlock()
		}
	}))
	defer origin.Close()
	s, err := New(Config{Registry: reg, OrphanGrace: time.Minute, ReapInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	cases := []struct {
		name     string
		moved    bool
		wantGone bool
	}{
		{name: "moved onto a live relay after the listing", moved: true, wantGone: false},
		{name: "unchanged", moved: false, wantGone: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("sess-orphan-%d", i)
			resource := fmt.Sprintf("/whep/res/%d", i)
			if err := reg.CreateSession(ctx, registry.Session{ID: id, Stream: "__defaultVhost__/live/orphan",
				Direction: registry.DirectionPlay, RelayID: "relay-dead", OriginResource: origin.URL + resource,
				ClientICE:       registry.ICECredentials{Ufrag: fmt.Sprintf("cliufrag%d", i), Pwd: "clientpasswordclientpassword"},
				OriginICE:       registry.ICECredentials{Ufrag: fmt.Sprintf("orgufrag%d", i), Pwd: "originpasswordoriginpassword"},
				OriginAddresses: []string{"127.0.0.1:9"}}); err != nil {
				t.Fatal(err)
			}
			listed, err := reg.GetSession(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if tc.moved {
				time.Sleep(2 * time.Millisecond) // a later UpdateTime
				// The client's ICE restart through signaling: new credentials,
				// the session onto a live relay.
				if _, err := reg.RekeySession(ctx, id, registry.ICEKeys{
					Client: registry.ICECredentials{Ufrag: fmt.Sprintf("cliufragnew%d", i), Pwd: "clientpasswordclientpasswordnew"},
					Origin: listed.OriginICE, OriginClient: listed.ClientICE,
				}, nil, "relay-live"); err != nil {
					t.Fatal(err)
				}
			}
			gone := s.reapOrphan(ctx, listed)
			_, err = reg.GetSession(ctx, id)
			kept := err == nil
			mu.Lock()
			n := deletes[resource]
			mu.Unlock()
			if gone != tc.wantGone || kept == tc.wantGone {
				t.Fatalf("reaped %v, record kept %v (%v); want reaped %v", gone, kept, err, tc.wantGone)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.wantGone]; n != want {
				t.Fatalf("origin DELETEs of the session: %d, want %d", n, want)
			}
		})
	}
}
