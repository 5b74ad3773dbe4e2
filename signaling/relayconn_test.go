package signaling_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// flappyListener closes every connection it accepts while down, like a
// relay host whose process is not (yet) serving: a gRPC client's channel to
// it goes into transient failure.
type flappyListener struct {
	net.Listener
	up atomic.Bool
}

func (l *flappyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.up.Load() {
			return c, err
		}
		_ = c.Close()
	}
}

// startFlappyRelay starts a relay whose gRPC listener is a flappyListener
// (down until the test sets it up) and waits for its registration.
func startFlappyRelay(t *testing.T, reg *registry.Client, id string) (*mediarelay.Relay, *flappyListener) {
	t.Helper()
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &flappyListener{Listener: inner}
	relay, err := mediarelay.New(mediarelay.Config{RelayID: id, Registry: reg, GRPCAddress: inner.Addr().String(),
		PublicAddrs: []netip.AddrPort{conns[0].LocalAddr().(*net.UDPAddr).AddrPort()}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	mediarelay.RegisterGRPC(gs, relay)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = relay.Serve(ctx, conns...) }()
	t.Cleanup(func() { gs.Stop(); cancel(); wg.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := reg.GetRelay(t.Context(), id); err == nil {
			return relay, lis
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay %s did not register", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnreachableRelaySkippedInTheSetup: a relay that is registered but
// does not answer (dead, its lease not yet expired) costs a setup nothing:
// the setup goes to another relay in the same request. The chaos harness
// saw 503s for as long as a killed relay's lease lasted (fault 3).
func TestUnreachableRelaySkippedInTheSetup(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	offer := fixture(t, "chrome-whip-offer.sdp")
	// relay-a sorts first, so it is picked first; it never answers.
	_, _ = startFlappyRelay(t, reg, "relay-a")
	live, lis := startFlappyRelay(t, reg, "relay-b")
	lis.up.Store(true)
	origin := newFakeOrigin(t, "whip")
	origin.register(t, reg)
	srv, err := signaling.New(signaling.Config{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer func() { hs.Close(); srv.Close() }()
	for i, stream := range []string{"skip-1", "skip-2"} {
		if r := do(t, http.MethodPost, hs.URL+"/whip/live/"+stream, "application/sdp", offer); r.status != http.StatusCreated {
			t.Fatalf("POST %s = %d, want 201: %s", stream, r.status, r.body)
		}
		if n := int(live.Status().GetSessionCount()); n != i+1 {
			t.Fatalf("relay-b holds %d sessions, want %d", n, i+1)
		}
	}
}

// TestRelayBackAfterTransientFailure: a relay whose admin API failed a
// setup (its channel in transient failure, in reconnect backoff) serves the
// next setup as soon as it answers again. The chaos harness found signaling
// refusing setups with 503 for a relay that had been restarted and was
// healthy, until its pooled channel's backoff (and DNS re-resolution of the
// relay's container name) ran out.
func TestRelayBackAfterTransientFailure(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	offer := fixture(t, "chrome-whip-offer.sdp")

	relay, lis := startFlappyRelay(t, reg, "relay-flap")
	origin := newFakeOrigin(t, "whip")
	origin.register(t, reg)
	srv, err := signaling.New(signaling.Config{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer func() { hs.Close(); srv.Close() }()

	steps := []struct {
		name string
		up   bool
		want int
	}{
		{name: "relay down", up: false, want: http.StatusServiceUnavailable},
		{name: "relay back at once", up: true, want: http.StatusCreated},
	}
	for _, st := range steps {
		lis.up.Store(st.up)
		if r := do(t, http.MethodPost, hs.URL+"/whip/live/flap", "application/sdp", offer); r.status != st.want {
			t.Fatalf("%s: POST = %d, want %d: %s", st.name, r.status, st.want, r.body)
		}
	}
	if n := int(relay.Status().GetSessionCount()); n != 1 {
		t.Errorf("the relay holds %d sessions, want 1", n)
	}
}
