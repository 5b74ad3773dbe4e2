package signaling

import (
	"errors"
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
