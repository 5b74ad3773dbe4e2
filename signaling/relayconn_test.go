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

	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &flappyListener{Listener: inner}
	relay, err := mediarelay.New(mediarelay.Config{RelayID: "relay-flap", Registry: reg, GRPCAddress: inner.Addr().String(),
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
	defer func() { gs.Stop(); cancel(); wg.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := reg.GetRelay(t.Context(), "relay-flap"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay did not register")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
