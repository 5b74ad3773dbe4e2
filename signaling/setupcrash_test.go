package signaling_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// cutProxy is a TCP proxy standing for one process's network path: hold
// stops the answers (target to client) on the connections open at that
// time, cut closes them (and, with stop, the listener): the process behind
// it can reach nothing any more, as if it had died.
type cutProxy struct {
	t      testing.TB
	lis    net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]*atomic.Bool // client side -> held
	held  bool                      // new data on open connections is held
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, lis: lis, target: target, conns: map[net.Conn]*atomic.Bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { p.cut(true) })
	return p
}

func (p *cutProxy) addr() string { return p.lis.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		held := &atomic.Bool{}
		p.mu.Lock()
		p.conns[c] = held
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(up, c)
			_ = up.Close()
		}()
		go func() {
			defer p.wg.Done()
			defer func() { _ = c.Close() }()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				for held.Load() { // bounded: cut closes c, and Write fails
					time.Sleep(5 * time.Millisecond)
					if p.isCut(c) {
						return
					}
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *cutProxy) isCut(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.conns[c]
	return !ok
}

// hold stops the answers on every open connection.
func (p *cutProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.conns {
		h.Store(true)
	}
}

// cut closes every open connection; stop closes the listener too and waits
// for the copiers.
func (p *cutProxy) cut(stop bool) {
	if stop {
		_ = p.lis.Close()
	}
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	if stop {
		p.wg.Wait()
	}
}

// deadableCreds are plaintext gRPC credentials that refuse every new
// connection once dead is set: the relay connections of a process that
// died (the relay itself stays reachable for everyone else).
type deadableCreds struct {
	credentials.TransportCredentials
	dead *atomic.Bool
}

func (c deadableCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.dead.Load() {
		_ = conn.Close()
		return nil, nil, errors.New("this process is dead")
	}
	return c.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (c deadableCreds) Clone() credentials.TransportCredentials {
	return deadableCreds{c.TransportCredentials.Clone(), c.dead}
}

// TestDeadSignalingMidSetupIsReaped: signaling instance A dies right after
// the origin's 201 and the relay's allocation (its request is cancelled, its
// server closed, and every network path it has, to etcd, the origin and the
// relay, cut while the relay's answer is on its way, so that none of its
// own clean-up gets through). Instance B's reaper
// undoes the setup within the reaper interval after its deadline: one
// DELETE at the origin, the relay's session released, no record left.
func TestDeadSignalingMidSetupIsReaped(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	regB := embedetcd.NewClientForTest(t, etcd)
	ctx := t.Context()

	// The relay advertises a proxy, so that A's connection to it can be
	// held and cut while B's (opened later) works.
	conns, err := mediarelay.ListenUDP(ctx, "udp4", "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relayProxy := newCutProxy(t, glis.Addr().String())
	relay, err := mediarelay.New(mediarelay.Config{RelayID: "relay-1", Registry: regB, GRPCAddress: relayProxy.addr(),
		PublicAddrs: []netip.AddrPort{conns[0].LocalAddr().(*net.UDPAddr).AddrPort()}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	mediarelay.RegisterGRPC(gs, relay)
	rctx, rcancel := context.WithCancel(context.Background())
	var rwg sync.WaitGroup
	rwg.Add(2)
	go func() { defer rwg.Done(); _ = gs.Serve(glis) }()
	go func() { defer rwg.Done(); _ = relay.Serve(rctx, conns...) }()
	t.Cleanup(func() { gs.Stop(); rcancel(); rwg.Wait() })

	origin := newFakeOrigin(t, registry.OriginKindWHIP)
	origin.register(t, regB)

	// Instance A: etcd, origin and relay through proxies.
	etcdProxy := newCutProxy(t, etcd.Endpoints()[0])
	originProxy := newCutProxy(t, origin.srv.Listener.Addr().String())
	regA, err := registry.New(registry.Config{Endpoints: []string{etcdProxy.addr()}, Prefix: regB.Prefix(),
		DialTimeout: time.Second, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = regA.Close() })
	dialer := &net.Dialer{Timeout: time.Second}
	cfgA := signaling.Config{Registry: regA, OriginTimeout: time.Second, RelayCallTimeout: 3 * time.Second, SetupMargin: time.Second,
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, originProxy.addr())
		}}}}
	sigA, err := signaling.New(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sigA.Close)
	var deadA atomic.Bool
	sigA.SetRelayCredentials(deadableCreds{insecure.NewCredentials(), &deadA})
	hsA := httptest.NewServer(sigA.Handler())
	t.Cleanup(hsA.Close)

	// Instance B: only its reaper matters here.
	cfgB := signaling.Config{Registry: regB, ReapInterval: 100 * time.Millisecond, OrphanGrace: time.Hour}
	setupReaperTimeouts(&cfgB)
	sigB, err := signaling.New(cfgB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sigB.Close)
	startReaper(t, sigB)

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := regA.PickRelay(ctx, ""); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A never saw the relay")
		}
		time.Sleep(50 * time.Millisecond)
	}
	offer := fixture(t, "chrome-whip-offer.sdp")
	// A warm-up setup through A opens its connection to the relay.
	if r := do(t, http.MethodPost, hsA.URL+"/whip/live/warm", "application/sdp", offer); r.status != http.StatusCreated {
		t.Fatalf("warm-up POST = %d %s", r.status, r.body)
	}
	_, deletesBefore, _ := origin.counts()

	// The crash: when the origin gets the offer, the relay's answers to A
	// are held; the origin answers 201 and the relay allocates, but A never
	// hears from the relay.
	origin.mu.Lock()
	origin.onPost = func(r *http.Request) {
		if strings.Contains(r.URL.Path, "/crash/") {
			relayProxy.hold()
		}
	}
	origin.mu.Unlock()
	reqCtx, cancelReq := context.WithCancel(ctx)
	posted := make(chan error, 1)
	go func() {
		_, err := tryDo(reqCtx, http.MethodPost, hsA.URL+"/whip/live/crash", "application/sdp", offer)
		posted <- err
	}()
	var pending registry.PendingSetup
	deadline = time.Now().Add(10 * time.Second)
	for {
		ps, err := regB.ListSetups(ctx)
		if err == nil && len(ps) == 1 && ps[0].OriginResource != "" {
			if _, err := regB.GetSession(ctx, ps[0].ID); err == nil {
				pending = ps[0]
				break // origin answered, relay allocated: A is waiting for the relay
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("setup never reached the relay: %+v %v", ps, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := relay.Get(pending.ID); err != nil {
		t.Fatalf("the relay has no session %s: %v", pending.ID, err)
	}
	// A dies: every path it has is cut, its client gives up, its server
	// closes.
	killed := time.Now()
	deadA.Store(true)
	etcdProxy.cut(true)
	originProxy.cut(true)
	relayProxy.cut(false) // B opens its own connection later
	cancelReq()
	hsA.Close()
	if err := <-posted; err == nil || !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "EOF") {
		t.Logf("crashed POST: %v", err)
	}
	if _, err := regB.GetSetup(ctx, pending.ID); err != nil {
		t.Fatalf("the pending setup did not survive A: %v", err)
	}

	// B reaps it within the reaper interval after its deadline.
	limit := pending.Deadline.Add(2 * time.Second)
	for {
		_, err := regB.GetSetup(ctx, pending.ID)
		if errors.Is(err, registry.ErrNotFound) {
			break
		}
		if time.Now().After(limit) {
			t.Fatalf("the dead setup was not reaped by %s (deadline %s): %v", limit, pending.Deadline, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("reaped %s after A died, %s after the setup's deadline", time.Since(killed).Round(time.Millisecond),
		time.Since(pending.Deadline).Round(time.Millisecond))
	if _, err := relay.Get(pending.ID); err == nil {
		t.Error("the relay still has the dead setup's session")
	}
	if _, err := regB.GetSession(ctx, pending.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the dead setup's session record is left: %v", err)
	}
	if n := countKeys(t, regB, "sessions/"); n != 1 { // the warm-up session
		t.Errorf("%d session records, want 1 (the warm-up's)", n)
	}
	origin.mu.Lock()
	deletes := append([]string(nil), origin.deletes[deletesBefore:]...)
	origin.mu.Unlock()
	u, _ := url.Parse(pending.OriginResource)
	if len(deletes) != 1 || deletes[0] != u.RequestURI() {
		t.Errorf("origin DELETEs %v, want exactly one of %s", deletes, u.RequestURI())
	}
	m := httptestDo(t, sigB.Handler(), "GET", "/metrics", "", "")
	if !strings.Contains(m.Body.String(), "rtcedge_signaling_setups_reaped_total 1\n") {
		t.Error("the reaped setup is not counted in B's metrics")
	}
}
