package signaling

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// serveRelay runs a real relay with its gRPC API on loopback until the
// test ends, and waits until the registry's relay cache shows it alive.
func serveRelay(t *testing.T, reg *registry.Client, id string) relayv1.RelayServiceClient {
	t.Helper()
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := mediarelay.New(mediarelay.Config{RelayID: id, Registry: reg, GRPCAddress: lis.Addr().String(),
		PublicAddrs: []netip.AddrPort{conns[0].LocalAddr().(*net.UDPAddr).AddrPort()}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	mediarelay.RegisterGRPC(gs, r)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = r.Serve(ctx, conns...) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); gs.Stop(); cancel(); wg.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; {
		if alive, err := reg.RelayAlive(t.Context(), id); err == nil && alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay %s did not register", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return relayv1.NewRelayServiceClient(cc)
}

// TestReaperRemovesRecordsALiveRelayDoesNotHold: the record of a session
// that its relay, alive and registered, does not hold (it released the
// session while etcd was unreachable and closed before its retry) is
// removed, with its origin session, once the reaper has seen it missing
// from the relay for the orphan grace; the relay's own sessions, a pending
// setup's record and the records of a registered relay that does not
// answer stay.
func TestReaperRemovesRecordsALiveRelayDoesNotHold(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	const grace = time.Minute
	s, err := New(Config{Registry: reg, OrphanGrace: grace, ReapInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	var deletes atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			deletes.Add(1)
		}
	}))
	defer origin.Close()
	relay := serveRelay(t, reg, "relay-live")
	// A registered relay whose admin API does not answer (nothing listens).
	mute, err := reg.RegisterRelay(ctx, registry.Relay{ID: "relay-mute", GRPCAddress: "127.0.0.1:9",
		PublicAddresses: []string{"127.0.0.1:9"}}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close(context.Background())
	for deadline := time.Now().Add(10 * time.Second); ; {
		if alive, err := reg.RelayAlive(ctx, "relay-mute"); err == nil && alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the registry does not show relay-mute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	record := func(id, relayID, n string) registry.Session {
		return registry.Session{ID: id, Stream: "__defaultVhost__/live/unheld", Direction: registry.DirectionPlay,
			RelayID:         relayID,
			ClientICE:       registry.ICECredentials{Ufrag: "clientufrag" + n, Pwd: "clientpasswordclientpassword"},
			OriginICE:       registry.ICECredentials{Ufrag: "originufrag" + n, Pwd: "originpasswordoriginpassword"},
			OriginAddresses: []string{"127.0.0.1:9"}}
	}
	// The relay's own session.
	held, err := relay.AllocateSession(ctx, &relayv1.AllocateSessionRequest{SessionId: "held", Stream: "__defaultVhost__/live/unheld",
		Direction:       relayv1.Direction_DIRECTION_PLAY,
		ClientIce:       &relayv1.IceCredentials{Ufrag: "clientufrag1", Pwd: "clientpasswordclientpassword"},
		OriginIce:       &relayv1.IceCredentials{Ufrag: "originufrag1", Pwd: "originpasswordoriginpassword"},
		OriginAddresses: []string{"127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	// A record the live relay does not hold, with its origin session.
	if err := reg.CreateSession(ctx, record("unheld", "relay-live", "2")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.UpdateSession(ctx, "unheld", func(rs *registry.Session) error {
		rs.OriginResource = origin.URL + "/session/unheld"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A setup in progress: its relay has not taken the session yet.
	if _, err := reg.BeginSetup(ctx, registry.Setup{ID: "setting-up", Stream: "__defaultVhost__/live/unheld",
		Direction: registry.DirectionPlay, OriginID: "o1", Deadline: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := reg.CreateSession(ctx, record("setting-up", "relay-live", "3")); err != nil {
		t.Fatal(err)
	}
	// A record of the relay that does not answer.
	if err := reg.CreateSession(ctx, record("mute", "relay-mute", "4")); err != nil {
		t.Fatal(err)
	}

	// Every record is already older than the grace at every pass.
	t0 := time.Now().Add(2 * grace)
	steps := []struct {
		name       string
		at         time.Time
		wantUnheld bool // the unheld record is still there after the pass
	}{
		{name: "the first pass that sees the record missing from its relay", at: t0, wantUnheld: true},
		{name: "missing for less than the grace", at: t0.Add(grace - time.Second), wantUnheld: true},
		{name: "missing for the grace", at: t0.Add(grace + time.Second), wantUnheld: false},
		{name: "a pass after", at: t0.Add(2*grace + time.Second), wantUnheld: false},
	}
	for _, st := range steps {
		s.reap(ctx, st.at)
		for _, id := range []string{"held", "setting-up", "mute"} {
			if _, err := reg.GetSession(ctx, id); err != nil {
				t.Fatalf("%s: record %s: %v, want kept", st.name, id, err)
			}
		}
		_, err := reg.GetSession(ctx, "unheld")
		if kept := err == nil; kept != st.wantUnheld {
			t.Fatalf("%s: unheld record kept %v (%v), want %v", st.name, kept, err, st.wantUnheld)
		}
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	// Every key of the record went; the origin's session was deleted once.
	resp, err := reg.Etcd().Get(ctx, reg.Prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); k[len(k)-len("/unheld"):] == "/unheld" || k == reg.Prefix()+"ufrags/originufrag2:clientufrag2" {
			t.Errorf("key %s left", k)
		}
	}
	if n := deletes.Load(); n != 1 {
		t.Errorf("origin DELETEs %d, want 1", n)
	}
	if _, err := relay.GetSession(ctx, &relayv1.GetSessionRequest{Id: held.GetSession().GetId()}); err != nil {
		t.Errorf("the relay's own session: %v", err)
	}
}
