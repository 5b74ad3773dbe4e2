package e2e

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/demoorigin"
	"github.com/rtcedge/rtcedge/mediarelay"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// relayNode is a relay with its gRPC admin API on loopback.
type relayNode struct {
	relay  *mediarelay.Relay
	public netip.AddrPort
	admin  relayv1.RelayServiceClient
	stop   func() // kills the relay: its sockets close and its registration goes
}

func startRelay(t *testing.T, reg *registry.Client, id, zone string) *relayNode {
	t.Helper()
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", "127.0.0.1:0", 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	public := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := mediarelay.New(mediarelay.Config{RelayID: id, Zone: zone, Registry: reg, GRPCAddress: lis.Addr().String(),
		PublicAddrs: []netip.AddrPort{public}, SocketBuffer: 1 << 20})
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
	var once sync.Once
	stop := func() { once.Do(func() { _ = cc.Close(); gs.Stop(); cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return &relayNode{relay: r, public: public, admin: relayv1.NewRelayServiceClient(cc), stop: stop}
}

// signalingNode is a signaling instance with HTTP and gRPC on loopback.
type signalingNode struct {
	url  string
	grpc string
}

func startSignaling(t *testing.T, reg *registry.Client, zone string) *signalingNode {
	t.Helper()
	s, err := signaling.New(signaling.Config{Registry: reg, Zone: zone})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.RegisterGRPC(gs)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { hs.Close(); gs.Stop(); <-done; s.Close() })
	return &signalingNode{url: hs.URL, grpc: lis.Addr().String()}
}

// originNode is the demo origin, registered through a signaling instance's
// OriginRegistry by its heartbeat.
type originNode struct {
	origin *demoorigin.Origin
	url    string
}

func startOrigin(t *testing.T, registerVia string, tweak ...func(*demoorigin.Config)) *originNode {
	t.Helper()
	media, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := demoorigin.Config{MediaConn: media}
	for _, f := range tweak {
		f(&cfg)
	}
	o, err := demoorigin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(o.Handler())
	cc, err := grpc.NewClient(registerVia, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hb := &demoorigin.Heartbeat{Client: originv1.NewOriginRegistryClient(cc),
		Origin: demoorigin.NewRegistration("demo-origin", hs.URL, []string{o.MediaAddr().String()}, 0)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = hb.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = cc.Close(); hs.Close(); _ = o.Close() })
	return &originNode{origin: o, url: hs.URL}
}

// stack is the edge of scenario (a): two signaling instances and two relays
// in zones a and b, one demo origin, one etcd.
type stack struct {
	etcd           *embedetcd.Server
	reg            *registry.Client
	sigA, sigB     *signalingNode
	relay1, relay2 *relayNode
	origin         *originNode
}

func startStack(t *testing.T, originTweak ...func(*demoorigin.Config)) *stack {
	t.Helper()
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	s := &stack{etcd: etcd, reg: reg}
	s.relay1 = startRelay(t, reg, "relay-1", "a")
	s.relay2 = startRelay(t, reg, "relay-2", "b")
	s.sigA = startSignaling(t, reg, "a")
	s.sigB = startSignaling(t, reg, "b")
	s.origin = startOrigin(t, s.sigA.grpc, originTweak...)
	waitFor(t, 15*time.Second, "both relays and the origin registered", func() bool {
		rs, err := reg.Relays(t.Context())
		os, err2 := reg.ListOrigins(t.Context())
		return err == nil && err2 == nil && len(rs) == 2 && len(os) == 1
	})
	return s
}

// httpGet is a GET with the test's context.
func httpGet(t *testing.T, url string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
