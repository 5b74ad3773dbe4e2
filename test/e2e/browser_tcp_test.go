package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// Issue 16's end-to-end proof: headless Chromium on a network that drops
// every UDP packet publishes via WHIP and a second Chromium plays via WHEP,
// both over ICE-TCP to the relay's TCP port (RFC 6544 passive, RFC 4571
// framing), while the relay keeps plain UDP toward the demo origin. The same
// run without the firewall rule selects UDP.
//
// Two network namespaces, neither of them the host's: the test re-executes
// its binary per case in a new one (CLONE_NEWNET; the "server" side: etcd,
// relay, signaling, origin, and the test itself), which creates the "client"
// namespace as the network of a placeholder process (sleep, started with
// CLONE_NEWNET) and joins the two with a veth pair:
//
//	server ns: lo, tcs0 10.78.0.1/24  <-- veth -->  client ns: lo, tcc0 10.78.0.2/24
//
// The relay binds UDP and TCP on 10.78.0.1 and advertises both; signaling's
// HTTP is on 10.78.0.1 too (the browsers' page and WHIP/WHEP); everything
// else talks over the server namespace's loopback. The browsers run in the
// client namespace (nsenter --net); chromedp drives them over a pipe, so no
// DevTools port crosses namespaces. In the "udp-blocked" case an nftables
// table (iptables without nft) in the client namespace drops all UDP, in and
// out. Everything dies with the child's process group: the client namespace
// lives only as long as the placeholder and the browsers.

const (
	icetcpChildEnv     = "RTCEDGE_E2E_ICETCP_CHILD" // the case, in the re-executed child
	icetcpParentNetEnv = "RTCEDGE_E2E_ICETCP_PARENT_NETNS"
	icetcpMeasure      = 15 * time.Second // media time checked per case
	icetcpServerAddr   = "10.78.0.1"
	icetcpClientAddr   = "10.78.0.2"
)

type icetcpCase struct {
	name    string
	dropUDP bool
	want    string // the selected pair's protocol
}

var icetcpCases = []icetcpCase{
	{name: "udp-blocked", dropUDP: true, want: "tcp"},
	{name: "udp-open", dropUDP: false, want: "udp"},
}

func TestBrowserICETCP(t *testing.T) {
	if name := os.Getenv(icetcpChildEnv); name != "" {
		for _, c := range icetcpCases {
			if c.name == name {
				icetcpChild(t, c)
				return
			}
		}
		t.Fatalf("unknown case %q", name)
	}
	if os.Getenv("RTCEDGE_E2E_BROWSER") != "1" {
		t.Skip("set RTCEDGE_E2E_BROWSER=1 (make e2e does) to run Chromium")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces with a veth pair")
	}
	for _, tool := range []string{"ip", "nsenter", "sleep", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if icetcpFirewall() == "" {
		t.Skip("needs nft or iptables to drop UDP in the client namespace")
	}
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
	}
	netns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range icetcpCases {
		t.Run(c.name, func(t *testing.T) { icetcpRunChild(t, c.name, netns) })
	}
}

// icetcpFirewall is the tool that drops UDP: "nft", else "iptables", else "".
func icetcpFirewall() string {
	for _, tool := range []string{"nft", "iptables"} {
		if _, err := exec.LookPath(tool); err == nil {
			return tool
		}
	}
	return ""
}

// icetcpRunChild re-executes the test binary in a new network namespace for
// one case and relays its output.
func icetcpRunChild(t *testing.T, name, parentNetns string) {
	t.Helper()
	runInOwnNetns(t, "TestBrowserICETCP", 150*time.Second, icetcpChildEnv+"="+name, icetcpParentNetEnv+"="+parentNetns)
}

// icetcpChild runs one case inside the server namespace.
func icetcpChild(t *testing.T, c icetcpCase) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if parent := os.Getenv(icetcpParentNetEnv); parent == "" || parent == self {
		t.Fatalf("not in a network namespace of our own (%s, parent %q): refusing to touch the network", self, parent)
	}
	// The placeholder and the browsers die with the thread that started
	// them (Pdeathsig): keep it until the end.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	clientNS := icetcpClientNamespace(t)
	if c.dropUDP {
		icetcpDropUDP(t, clientNS)
	}
	icetcpProbeUDP(t, clientNS, !c.dropUDP)

	logPath := filepath.Join(t.TempDir(), "stack.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})))

	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	relay, relayTCP := icetcpStartRelay(t, reg, "relay-tcp", "a", icetcpServerAddr)
	sig := icetcpStartSignaling(t, reg, "a", icetcpServerAddr)
	origin := startOrigin(t, sig.grpc)
	mhWait(t, 30*time.Second, "the relay and the origin registered", func() bool {
		rs, err := reg.Relays(t.Context())
		origins, err2 := reg.ListOrigins(t.Context())
		return err == nil && err2 == nil && len(rs) == 1 && len(origins) == 1
	})
	t.Logf("case %s: relay UDP %s, TCP %s; signaling %s", c.name, relay.public, relayTCP, sig.url)

	pub := icetcpBrowser(t, "publisher", sig.url, clientNS)
	play := icetcpBrowser(t, "player", sig.url, clientNS)
	stream := "live/icetcp-" + c.name

	if res := pub.start(t, "publisher", sig.url+"/whip/"+stream); res.Status != 201 {
		t.Fatalf("publish: %d %s", res.Status, res.Body)
	}
	defer func() {
		if t.Failed() {
			pub.report(t).log(t, "publisher", time.Now())
			play.report(t).log(t, "player", time.Now())
			mhDumpLog(t, logPath)
		}
	}()
	mhWait(t, 45*time.Second, "the publisher's ICE connected", func() bool { return pub.state(t).connected() })
	mhWait(t, 30*time.Second, "the publisher's media at the origin", func() bool { return origin.origin.Stats().PacketsForwarded > 0 })
	mhWait(t, 30*time.Second, "the player's session", func() bool {
		res := play.start(t, "player", sig.url+"/whep/"+stream)
		if res.Status != 201 {
			t.Logf("play: %d %s", res.Status, res.Body)
		}
		return res.Status == 201
	})
	mhWait(t, 45*time.Second, "the player's ICE connected", func() bool { return play.state(t).connected() })
	mhWait(t, 30*time.Second, "the player's first decoded frame", func() bool { return play.state(t).Frames > 0 })

	base := mhRelayCounters(t, t.Context(), relay)
	f0, t0 := play.state(t).Frames, time.Now()
	for time.Since(t0) < icetcpMeasure {
		time.Sleep(time.Second)
	}
	f1, el := play.state(t).Frames, time.Since(t0)
	pubRep, playRep := pub.report(t), play.report(t)
	pubRep.log(t, "publisher", t0)
	playRep.log(t, "player", t0)
	t.Logf("player decoded %.0f frames in %s (%.1f/s); %.0f in all", f1-f0, el.Round(100*time.Millisecond), (f1-f0)/el.Seconds(), f1)
	t.Logf("origin: %+v", origin.origin.Stats())
	// The fake camera sends 30 fps and 20 are decoded here (10 seen on a
	// loaded machine, over UDP); frames must flow, not keep a rate: lost
	// connections and drops are checked below.
	if want := 2 * icetcpMeasure.Seconds(); f1-f0 < want {
		t.Errorf("player decoded %.0f frames in %s, want at least %.0f", f1-f0, el, want)
	}

	// The selected candidate pair, as each browser reports it.
	wantRemote := relay.public
	if c.want == "tcp" {
		wantRemote = relayTCP
	}
	for _, b := range []struct {
		role string
		rep  *mhReport
	}{{"publisher", pubRep}, {"player", playRep}} {
		var sel *mhPair
		for i := range b.rep.Pairs {
			if b.rep.Pairs[i].Selected {
				sel = &b.rep.Pairs[i]
			}
		}
		if sel == nil {
			t.Errorf("%s: no selected candidate pair", b.role)
			continue
		}
		t.Logf("%s: selected pair %s -> %s", b.role, sel.Local, sel.Remote)
		if sel.Local.Protocol != c.want || sel.Local.Address != icetcpClientAddr {
			t.Errorf("%s: selected local candidate %s, want %s on %s", b.role, sel.Local, c.want, icetcpClientAddr)
		}
		if got := net.JoinHostPort(sel.Remote.Address, fmt.Sprint(sel.Remote.Port)); sel.Remote.Protocol != c.want || got != wantRemote.String() {
			t.Errorf("%s: selected remote candidate %s, want %s %s", b.role, sel.Remote, c.want, wantRemote)
		}
		if c.dropUDP {
			// Without UDP, no pair other than a TCP one can ever have been
			// selected.
			for _, ch := range b.rep.Changes {
				if ch.Local.Protocol != "tcp" || ch.Remote.Protocol != "tcp" {
					t.Errorf("%s: selected pair %s -> %s with UDP dropped", b.role, ch.Local, ch.Remote)
				}
			}
		}
	}

	// The relay's view: both sessions, each with its selected path on the
	// wanted transport, media forwarded both ways, nothing dropped once
	// both were playing, and (without UDP) no TCP connection lost.
	end := mhRelayCounters(t, t.Context(), relay)
	if c.dropUDP {
		if closed := icetcpClosedConns(t, logPath); len(closed) > 0 {
			t.Errorf("the relay closed %d ICE-TCP connections while both sessions were live: %s", len(closed), strings.Join(closed, "; "))
		}
	}
	if len(end.sessions) != 2 {
		t.Errorf("relay has %d sessions, want 2", len(end.sessions))
	}
	for _, s := range end.sessions {
		var paths []string
		selTransport := ""
		for _, p := range s.GetClientPaths() {
			mark := ""
			if p.GetSelected() {
				mark, selTransport = " (selected)", p.GetTransport()
			}
			paths = append(paths, p.GetTransport()+" "+p.GetAddress()+mark)
		}
		t.Logf("relay %s session %s: client_address=%s paths=%v relay_address=%s c2o=%d o2c=%d drops {%v}", mhRole(s), s.GetId(),
			s.GetClientAddress(), paths, s.GetRelayAddress(), s.GetClientToOrigin().GetPackets(), s.GetOriginToClient().GetPackets(), s.GetDrops())
		if selTransport != c.want {
			t.Errorf("relay %s session: selected path transport %q, want %q (paths %v)", mhRole(s), selTransport, c.want, paths)
		}
		if d := dropSumMH(s.GetDrops()) - dropSumMH(base.sessions[s.GetId()].GetDrops()); d != 0 {
			t.Errorf("relay %s session dropped %d packets while measured (now {%v})", mhRole(s), d, s.GetDrops())
		}
		if s.GetClientToOrigin().GetPackets() == 0 || s.GetOriginToClient().GetPackets() == 0 {
			t.Errorf("relay %s session forwarded c2o=%d o2c=%d packets, want both > 0", mhRole(s), s.GetClientToOrigin().GetPackets(), s.GetOriginToClient().GetPackets())
		}
	}

	pub.stop(t)
	play.stop(t)
}

// icetcpClosedConns lists the relay's "TCP connection closed" debug lines so
// far (remote and reason), from its log at path.
func icetcpClosedConns(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		if _, rest, ok := strings.Cut(l, `msg="relay: TCP connection closed" `); ok {
			out = append(out, strings.TrimSpace(rest))
		}
	}
	return out
}

// icetcpClientNamespace creates the client namespace (the network of a
// placeholder process) with lo and tcc0, joined to tcs0 here, and returns
// its path under /proc. The placeholder is killed at cleanup, and with the
// child's process group otherwise.
func icetcpClientNamespace(t *testing.T) string {
	t.Helper()
	holder := exec.Command("sleep", "300")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		t.Fatalf("starting the client namespace: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	ns := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	self, _ := os.Readlink("/proc/self/ns/net")
	if other, err := os.Readlink(ns); err != nil || other == self {
		t.Fatalf("client namespace %s (%v) is not a new one (ours %s)", other, err, self)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	inNS := func(args ...string) { t.Helper(); run("nsenter", append([]string{"--net=" + ns, "--"}, args...)...) }
	run("ip", "link", "set", "lo", "up")
	run("ip", "link", "add", "tcs0", "type", "veth", "peer", "name", "tcc0", "netns", fmt.Sprint(holder.Process.Pid))
	run("ip", "addr", "add", icetcpServerAddr+"/24", "dev", "tcs0")
	run("ip", "link", "set", "tcs0", "up")
	inNS("ip", "link", "set", "lo", "up")
	inNS("ip", "addr", "add", icetcpClientAddr+"/24", "dev", "tcc0")
	inNS("ip", "link", "set", "tcc0", "up")
	// A default route toward the server side: Chromium looks for one.
	inNS("ip", "route", "add", "default", "via", icetcpServerAddr)
	if out, err := exec.Command("nsenter", "--net="+ns, "--", "ip", "-br", "-4", "addr").CombinedOutput(); err == nil {
		t.Logf("client namespace addresses:\n%s", out)
	}
	return ns
}

// icetcpDropUDP drops every UDP packet in and out of the client namespace.
func icetcpDropUDP(t *testing.T, ns string) {
	t.Helper()
	const ruleset = `table inet rtcedge_noudp {
	chain in { type filter hook input priority 0; policy accept; meta l4proto udp drop; }
	chain out { type filter hook output priority 0; policy accept; meta l4proto udp drop; }
}
`
	tools := []struct {
		name  string
		stdin string
		cmds  [][]string
	}{
		{"nft", ruleset, [][]string{{"nft", "-f", "-"}, {"nft", "list", "ruleset"}}},
		{"iptables", "", [][]string{{"iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"}, {"iptables", "-A", "OUTPUT", "-p", "udp", "-j", "DROP"}, {"iptables", "-S"}}},
	}
	var failures []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool.name); err != nil {
			continue
		}
		var shown []byte
		var failed bool
		for i, args := range tool.cmds {
			cmd := exec.Command("nsenter", append([]string{"--net=" + ns, "--"}, args...)...)
			if i == 0 && tool.stdin != "" {
				cmd.Stdin = strings.NewReader(tool.stdin)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v: %s", strings.Join(args, " "), err, out))
				failed = true
				break
			}
			shown = out
		}
		if !failed {
			t.Logf("client namespace firewall (%s):\n%s", tool.name, shown)
			return
		}
	}
	t.Fatalf("could not drop UDP in the client namespace:\n%s", strings.Join(failures, "\n"))
}

// icetcpProbeUDP sends datagrams from the client namespace to a socket on the
// server side and checks they arrive, or (when !reach) that none does: the
// firewall rule really is in force, or the network really is open.
func icetcpProbeUDP(t *testing.T, ns string, reach bool) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", icetcpServerAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	script := fmt.Sprintf("for i in 1 2 3 4 5; do echo probe >/dev/udp/%s/%d; sleep 0.1; done", icetcpServerAddr, port)
	var out []byte
	var sendErr, readErr error
	var from net.Addr
	// A link just brought up may lose the first datagrams: when they must
	// arrive, try a few times.
	for try := 0; try < 5; try++ {
		out, sendErr = exec.Command("nsenter", "--net="+ns, "--", "bash", "-c", script).CombinedOutput()
		_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		if _, from, readErr = pc.ReadFrom(buf); readErr == nil || !reach {
			break
		}
	}
	switch {
	case reach && readErr != nil:
		t.Fatalf("a UDP probe from the client namespace did not arrive (send: %v %s; read: %v)", sendErr, out, readErr)
	case !reach && readErr == nil:
		t.Fatalf("a UDP probe from the client namespace arrived from %s: UDP is not blocked", from)
	case reach:
		t.Logf("UDP probe from the client namespace arrived from %s", from)
	default:
		t.Logf("UDP probe from the client namespace did not arrive, as wanted (send: %v %s)", sendErr, strings.TrimSpace(string(out)))
	}
}

// icetcpStartRelay is startRelay with the relay's media on addr: UDP, and an
// ICE-TCP listener (ServeTCP) on the same IP, both advertised
// (Config.PublicAddrs, Config.PublicTCPAddrs). It returns the TCP address.
func icetcpStartRelay(t *testing.T, reg *registry.Client, id, zone, addr string) (*relayNode, netip.AddrPort) {
	t.Helper()
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", addr+":0", 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	public := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	tcpLis, err := net.Listen("tcp4", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	publicTCP := tcpLis.Addr().(*net.TCPAddr).AddrPort()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := mediarelay.New(mediarelay.Config{RelayID: id, Zone: zone, Registry: reg, GRPCAddress: lis.Addr().String(),
		PublicAddrs: []netip.AddrPort{public}, PublicTCPAddrs: []netip.AddrPort{publicTCP}, SocketBuffer: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	mediarelay.RegisterGRPC(gs, r)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	// The relay closes on Serve's goroutine only (when ctx ends, or when
	// Serve fails), which closes the TCP listener so that ServeTCP returns.
	go func() { defer wg.Done(); _ = r.Serve(ctx, conns...); _ = r.Close() }()
	go func() { defer wg.Done(); _ = r.ServeTCP(tcpLis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { _ = cc.Close(); gs.Stop(); cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return &relayNode{relay: r, public: public, admin: relayv1.NewRelayServiceClient(cc), stop: stop}, publicTCP
}

// icetcpStartSignaling is startSignaling with HTTP (the page, WHIP, WHEP) on
// addr instead of loopback; gRPC stays on loopback.
func icetcpStartSignaling(t *testing.T, reg *registry.Client, zone, addr string) *signalingNode {
	t.Helper()
	s, err := signaling.New(signaling.Config{Registry: reg, Zone: zone})
	if err != nil {
		t.Fatal(err)
	}
	httpLis, err := net.Listen("tcp4", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s.Handler())
	_ = hs.Listener.Close()
	hs.Listener = httpLis
	hs.Start()
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

// icetcpBrowser is mhBrowser for a Chromium in the client namespace ns: it is
// started through nsenter, reached over chromedp's pipe, and told to treat
// signaling's plain-HTTP origin as secure (getUserMedia needs a secure
// context, and the page is not on localhost).
func icetcpBrowser(t *testing.T, name, sigURL, ns string) *mhPage {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), name)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("unsafely-treat-insecure-origin-as-secure", sigURL),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns"),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"nsenter", "--net=" + ns, "--", chromium}, cmd.Args[1:]...)
			cmd.Path = nsenter
			cmd.Err = nil
			// ModifyCmdFunc replaces chromedp's own: keep its Pdeathsig.
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}),
	)
	outPath := filepath.Join(t.TempDir(), name+".log")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, chromedp.CombinedOutput(out))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(func(f string, a ...any) { t.Logf(name+": chromedp: "+f, a...) }))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		if t.Failed() {
			b, _ := os.ReadFile(outPath)
			var lines []string
			for l := range strings.Lines(string(b)) {
				if !strings.Contains(strings.ToLower(l), "dbus") && !strings.Contains(strings.ToLower(l), "alsa") {
					lines = append(lines, strings.TrimRight(l, "\n"))
				}
			}
			lines = lines[max(0, len(lines)-30):]
			t.Logf("%s: chromium output without D-Bus and ALSA noise (last %d lines):\n%s", name, len(lines), strings.Join(lines, "\n"))
		}
	})
	p := &mhPage{ctx: bctx}
	slow := time.AfterFunc(60*time.Second, cancelBrowser)
	_, err = chromedp.Run(bctx, chromedp.Navigate(sigURL+"/"))
	slow.Stop()
	if err != nil {
		t.Fatalf("%s: opening %s: %v", name, sigURL, err)
	}
	mhEval[bool](t, p, mhScript+";true")
	return p
}
