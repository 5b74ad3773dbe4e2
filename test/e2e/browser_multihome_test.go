package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// Issue 14's end-to-end proof: headless Chromium with three addresses
// (loopback and both ends of a veth pair) publishes through signaling and a
// relay to the demo origin while a second Chromium, on the same addresses,
// plays it. Chromium checks its backup candidate pairs every ~25 s; the relay
// must keep following the selected pair (no unknown_source drops, frames
// decoded throughout), and must never show the client its origin-facing
// socket (the selected local candidate is one of the client's own host
// candidates, not a prflx learned from a passed-through XOR-MAPPED-ADDRESS).
//
// The host's network is never touched: the test re-executes its own binary
// in a new network namespace (CLONE_NEWNET), where it brings up lo and a
// veth pair and runs everything (etcd, relay, signaling, origin, both
// browsers). The namespace goes away with the child's processes.

const (
	mhChildEnv     = "RTCEDGE_E2E_MULTIHOME_CHILD" // set in the re-executed child
	mhParentNetEnv = "RTCEDGE_E2E_MULTIHOME_PARENT_NETNS"
	mhMeasure      = 65 * time.Second // both sessions connected → end
	mhMaxGap       = 500 * time.Millisecond
)

// mhOwnAddrs are the client's addresses inside the namespace.
var mhOwnAddrs = []string{"127.0.0.1", "10.77.0.1", "10.77.0.2"}

func TestBrowserMultihomed(t *testing.T) {
	if os.Getenv(mhChildEnv) == "1" {
		mhChild(t)
		return
	}
	if os.Getenv("RTCEDGE_E2E_BROWSER") != "1" {
		t.Skip("set RTCEDGE_E2E_BROWSER=1 (make e2e does) to run Chromium")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace with a veth pair")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip) for the veth pair")
	}
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
	}
	netns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	runInOwnNetns(t, "TestBrowserMultihomed", 170*time.Second, mhChildEnv+"=1", mhParentNetEnv+"="+netns)
}

// mhChild runs inside the new network namespace.
func mhChild(t *testing.T) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if parent := os.Getenv(mhParentNetEnv); parent == "" || parent == self {
		t.Fatalf("not in a network namespace of our own (%s, parent %q): refusing to touch the network", self, parent)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "mh0", "type", "veth", "peer", "name", "mh1"},
		{"addr", "add", "10.77.0.1/24", "dev", "mh0"},
		{"addr", "add", "10.77.0.2/24", "dev", "mh1"},
		{"link", "set", "mh0", "up"},
		{"link", "set", "mh1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := exec.Command("ip", "-br", "-4", "addr").CombinedOutput(); err == nil {
		t.Logf("namespace %s addresses:\n%s", self, out)
	}

	// The relay logs at debug into a file: the client-binding history is the
	// evidence when this fails.
	logPath := filepath.Join(t.TempDir(), "stack.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})))

	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	relay := startRelay(t, reg, "relay-mh", "a")
	sig := startSignaling(t, reg, "a")
	origin := startOrigin(t, sig.grpc)
	mhWait(t, 20*time.Second, "the relay and the origin registered", func() bool {
		rs, err := reg.Relays(t.Context())
		origins, err2 := reg.ListOrigins(t.Context())
		return err == nil && err2 == nil && len(rs) == 1 && len(origins) == 1
	})
	t.Logf("relay public %s, signaling %s", relay.public, sig.url)

	pub := mhBrowser(t, "publisher", sig.url+"/")
	play := mhBrowser(t, "player", sig.url+"/")
	const stream = "live/multihome"

	// Publish, then play once the origin has the publisher's media.
	if res := pub.start(t, "publisher", sig.url+"/whip/"+stream); res.Status != 201 {
		t.Fatalf("publish: %d %s", res.Status, res.Body)
	}
	mhWait(t, 30*time.Second, "the publisher's ICE connected", func() bool { return pub.state(t).connected() })
	mhWait(t, 30*time.Second, "the publisher's media at the origin", func() bool { return origin.origin.Stats().PacketsForwarded > 0 })
	mhWait(t, 30*time.Second, "the player's session", func() bool {
		res := play.start(t, "player", sig.url+"/whep/"+stream)
		if res.Status != 201 {
			t.Logf("play: %d %s", res.Status, res.Body)
		}
		return res.Status == 201
	})
	mhWait(t, 30*time.Second, "the player's ICE connected", func() bool { return play.state(t).connected() })

	// From here on nothing may be dropped.
	ctx := t.Context()
	base := mhRelayCounters(t, ctx, relay)
	t0 := time.Now()
	pubAt0, playAt0 := pub.report(t), play.report(t)
	t.Logf("both connected; measuring for %s; relay at the start: unknown_source=%d sessions=%s", mhMeasure, base.unknown, base.describe())
	mhWait(t, 30*time.Second, "the player's first decoded frame", func() bool { return play.state(t).Frames > 0 })

	// Watch the relay while the browsers run: when unknown_source rises or a
	// session's client address moves, say when.
	last := base
	for time.Since(t0) < mhMeasure {
		time.Sleep(time.Second)
		now := mhRelayCounters(t, ctx, relay)
		if now.unknown != last.unknown {
			t.Logf("t+%5.1fs relay unknown_source +%d (total %d since connected)", time.Since(t0).Seconds(), now.unknown-last.unknown, now.unknown-base.unknown)
		}
		for id, s := range now.sessions {
			if p, ok := last.sessions[id]; ok && p.GetClientAddress() != s.GetClientAddress() {
				t.Logf("t+%5.1fs %s session client_address %s -> %s", time.Since(t0).Seconds(), mhRole(s), p.GetClientAddress(), s.GetClientAddress())
			}
		}
		last = now
	}
	end := mhRelayCounters(t, ctx, relay)
	tEnd := time.Now()
	pubRep, playRep := pub.report(t), play.report(t)

	// What the relay saw, for diagnosis whatever the outcome.
	for _, s := range end.sessions {
		var paths []string
		for _, p := range s.GetClientPaths() {
			sel := ""
			if p.GetSelected() {
				sel = " (selected)"
			}
			paths = append(paths, fmt.Sprintf("%s%s active t%+.1fs", p.GetAddress(), sel, p.GetLastActivityTime().AsTime().Sub(t0).Seconds()))
		}
		t.Logf("relay %s session %s: client_address=%s client_paths=%v relay_address=%s address_changes=%d c2o=%d pkts o2c=%d pkts drops=%d {%v}",
			mhRole(s), s.GetId(), s.GetClientAddress(), paths, s.GetRelayAddress(), s.GetAddressChanges(),
			s.GetClientToOrigin().GetPackets(), s.GetOriginToClient().GetPackets(), dropSumMH(s.GetDrops()), s.GetDrops())
	}
	t.Logf("origin: %+v", origin.origin.Stats())
	pubRep.log(t, "publisher", t0)
	playRep.log(t, "player", t0)

	// 1. No unknown_source drops, relay-wide and per session.
	t.Logf("relay unknown_source: %d at connect, %d at the end", base.unknown, end.unknown)
	if d := end.unknown - base.unknown; d != 0 {
		t.Errorf("relay unknown_source rose by %d after both sessions connected, want 0", d)
	}
	for id, s := range end.sessions {
		b := base.sessions[id]
		if d := dropSumMH(s.GetDrops()) - dropSumMH(b.GetDrops()); d != 0 {
			t.Errorf("%s session %s dropped %d packets after connecting (now %+v, then %+v)", mhRole(s), id, d, s.GetDrops(), b.GetDrops())
		}
	}
	if len(end.sessions) != 2 {
		t.Errorf("relay has %d sessions at the end, want 2", len(end.sessions))
	}

	// 2. Frames decoded throughout.
	gaps, maxGap, n := mhGaps(playRep.Samples, t0.UnixMilli(), tEnd.UnixMilli())
	t.Logf("player: %d samples, framesDecoded %.0f, longest gap without a new decoded frame %d ms (at %s)", n, playRep.lastFrames(), maxGap, mhWhere(playRep.Samples, t0.UnixMilli(), maxGap))
	if n < int(mhMeasure/time.Second) {
		t.Errorf("only %d framesDecoded samples in the measurement window", n)
	}
	if len(gaps) > 0 {
		t.Errorf("player decoded nothing for over %s %d times: %s", mhMaxGap, len(gaps), strings.Join(gaps, ", "))
	}
	if pg, pmax, _ := mhGaps(pubRep.Samples, t0.UnixMilli(), tEnd.UnixMilli()); len(pg) > 0 {
		t.Logf("note: the publisher itself encoded nothing for over %s %d times (longest %d ms): %s", mhMaxGap, len(pg), pmax, strings.Join(pg, ", "))
	}

	// 3. The clients really are multi-homed.
	hosts := pubRep.hostAddrs()
	t.Logf("publisher's local UDP host candidates: %v", hosts)
	if len(hosts) < 2 {
		t.Errorf("publisher gathered host candidates on %v only; the test needs several addresses", hosts)
	} else if len(hosts) < len(mhOwnAddrs) {
		t.Logf("note: not every namespace address was gathered (%v)", mhOwnAddrs)
	}
	// ... and checked their backup pairs while measured (every ~25 s), which
	// is what the relay must not follow.
	for _, c := range []struct {
		role      string
		at0, last *mhReport
	}{{"publisher", pubAt0, pubRep}, {"player", playAt0, playRep}} {
		b0, b1 := c.at0.backupRequests(), c.last.backupRequests()
		t.Logf("%s: STUN requests on backup pairs: %.0f at connect, %.0f at the end", c.role, b0, b1)
		if b1 <= b0 {
			t.Errorf("%s sent no check on a backup pair while measured: the test did not exercise what it proves", c.role)
		}
	}

	// 4. The selected local candidate is the client's own host candidate,
	// never the relay's origin-facing socket (nor a prflx of it).
	relaySockets := map[string]string{}
	for _, s := range end.sessions {
		relaySockets[s.GetRelayAddress()] = mhRole(s)
	}
	for _, c := range []struct {
		role string
		rep  *mhReport
	}{{"publisher", pubRep}, {"player", playRep}} {
		if len(c.rep.Changes) == 0 {
			t.Errorf("%s: no selected candidate pair", c.role)
		}
		for _, ch := range c.rep.Changes {
			l := ch.Local
			if l.Address == "" {
				continue // before selection
			}
			at := fmt.Sprintf("t%+.1fs", float64(ch.T-t0.UnixMilli())/1000)
			if who, ok := relaySockets[net.JoinHostPort(l.Address, fmt.Sprint(l.Port))]; ok {
				t.Errorf("%s %s: selected local candidate %s is the relay's origin-facing socket of the %s session", c.role, at, l, who)
			} else if l.Type != "host" || !slices.Contains(mhOwnAddrs, l.Address) {
				t.Errorf("%s %s: selected local candidate %s, want a host candidate on one of %v", c.role, at, l, mhOwnAddrs)
			}
			if ch.Remote.Address+":"+fmt.Sprint(ch.Remote.Port) != relay.public.String() {
				t.Errorf("%s %s: selected remote candidate %s, want the relay %s", c.role, at, ch.Remote, relay.public)
			}
		}
	}

	pub.stop(t)
	play.stop(t)
	if t.Failed() {
		mhDumpLog(t, logPath)
	}
}

// dropSumMH sums a session's drop counters.
func dropSumMH(d *relayv1.DropCounters) uint64 {
	return d.GetStunIntegrity() + d.GetUnboundSource() + d.GetWriteErrors() + d.GetForeignSource()
}

func mhRole(s *relayv1.Session) string {
	if s.GetDirection() == relayv1.Direction_DIRECTION_PUBLISH {
		return "publisher"
	}
	return "player"
}

type mhCounters struct {
	unknown  uint64
	sessions map[string]*relayv1.Session
}

func (c mhCounters) describe() string {
	var b strings.Builder
	for _, s := range c.sessions {
		fmt.Fprintf(&b, "[%s %s client=%s drops=%d] ", mhRole(s), s.GetId(), s.GetClientAddress(), dropSumMH(s.GetDrops()))
	}
	return b.String()
}

func mhRelayCounters(t *testing.T, ctx context.Context, r *relayNode) mhCounters {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := r.admin.GetStatus(ctx, &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	ls, err := r.admin.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	c := mhCounters{unknown: st.GetUnknownSource(), sessions: map[string]*relayv1.Session{}}
	for _, s := range ls.GetSessions() {
		c.sessions[s.GetId()] = s
	}
	return c
}

// mhGaps finds the stretches in [from, to] (ms since the epoch) in which
// the sampled frame counter did not rise for more than mhMaxGap. It starts
// at the first rise in the window and ends at the window's end.
func mhGaps(samples [][4]float64, from, to int64) (gaps []string, maxGap int64, n int) {
	var lastRise int64 = -1
	prev := -1.0
	for _, s := range samples {
		ts, frames := int64(s[0]), s[1]
		if ts < from || ts > to {
			prev = frames
			continue
		}
		n++
		if prev >= 0 && frames > prev {
			if lastRise >= 0 {
				if g := ts - lastRise; g > maxGap {
					maxGap = g
				}
				if g := ts - lastRise; g > mhMaxGap.Milliseconds() {
					gaps = append(gaps, fmt.Sprintf("%d ms at t+%.1fs", g, float64(lastRise-from)/1000))
				}
			}
			lastRise = ts
		}
		prev = frames
	}
	if lastRise < 0 {
		return []string{"no frame at all in the window"}, to - from, n
	}
	if g := to - lastRise; g > mhMaxGap.Milliseconds()+250 { // the tail: allow one sampling period
		gaps = append(gaps, fmt.Sprintf("%d ms at the end (t+%.1fs)", g, float64(lastRise-from)/1000))
		maxGap = max(maxGap, g)
	}
	return gaps, maxGap, n
}

// mhWhere says when the first gap of length g (as mhGaps measures it)
// began, relative to from.
func mhWhere(samples [][4]float64, from, g int64) string {
	var lastRise int64 = -1
	prev := -1.0
	for _, s := range samples {
		ts, frames := int64(s[0]), s[1]
		if ts >= from && prev >= 0 && frames > prev {
			if lastRise >= 0 && ts-lastRise == g {
				return fmt.Sprintf("t+%.1fs", float64(lastRise-from)/1000)
			}
			lastRise = ts
		}
		prev = frames
	}
	return "the end"
}

// mhDumpLog shows the relay's debug lines (client bindings, verification
// failures) from the run.
func mhDumpLog(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("reading %s: %v", path, err)
		return
	}
	var lines []string
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, "relay:") {
			lines = append(lines, strings.TrimRight(l, "\n"))
		}
	}
	const keep = 80
	t.Logf("relay debug log: %d lines; the last %d:", len(lines), min(keep, len(lines)))
	for _, l := range lines[max(0, len(lines)-keep):] {
		t.Log("  " + l)
	}
}

// mhWait polls cond every 250 ms until it holds or d passes.
func mhWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// mhPage is one Chromium with the test's script loaded into a page served
// by signaling (so WHIP/WHEP requests are same-origin).
type mhPage struct {
	ctx context.Context
}

func mhBrowser(t *testing.T, name, page string) *mhPage {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
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
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns"),
	)
	// Chromium's own output goes to a file, shown when the test fails.
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
		b, _ := os.ReadFile(outPath)
		// SRTP replay/auth failures say duplicated or mangled media.
		if i := strings.LastIndex(string(b), "Failed to unprotect"); i >= 0 {
			l, _, _ := strings.Cut(string(b[i:]), "\n")
			t.Logf("%s: chromium reported SRTP failures; the last: %s", name, l)
		}
		if t.Failed() {
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
	// The first Run starts the browser and binds it to its context, so it
	// runs on bctx itself; a timer bounds it instead of a derived context.
	slow := time.AfterFunc(60*time.Second, cancelBrowser)
	_, err = chromedp.Run(bctx, chromedp.Navigate(page))
	slow.Stop()
	if err != nil {
		t.Fatalf("%s: opening %s: %v", name, page, err)
	}
	mhEval[bool](t, p, mhScript+";true")
	return p
}

func mhEval[T any](t *testing.T, p *mhPage, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%.60s: %v", js, err)
	}
	return v
}

type mhStartResult struct {
	Status   int    `json:"status"`
	Body     string `json:"body"`
	Location string `json:"location"`
}

func (p *mhPage) start(t *testing.T, role, url string) mhStartResult {
	t.Helper()
	return mhEval[mhStartResult](t, p, fmt.Sprintf("window.mh.start(%q, %q)", role, url))
}

type mhState struct {
	ICE    string  `json:"ice"`
	Conn   string  `json:"conn"`
	Frames float64 `json:"frames"`
}

func (s mhState) connected() bool { return s.ICE == "connected" || s.ICE == "completed" }

func (p *mhPage) state(t *testing.T) mhState {
	t.Helper()
	return mhEval[mhState](t, p, "window.mh.state()")
}

func (p *mhPage) stop(t *testing.T) {
	t.Helper()
	mhEval[bool](t, p, "window.mh.stop()")
}

type mhCand struct {
	Kind     string `json:"kind"` // local or remote, in the candidate list
	Address  string `json:"address"`
	Port     int    `json:"port"`
	Type     string `json:"type"`
	Protocol string `json:"protocol"`
	Network  string `json:"network"`
}

func (c mhCand) String() string {
	return strings.TrimSpace(fmt.Sprintf("%s %s %s:%d %s", c.Kind, c.Protocol, c.Address, c.Port, c.Type))
}

type mhPair struct {
	Local             mhCand  `json:"local"`
	Remote            mhCand  `json:"remote"`
	State             string  `json:"state"`
	Nominated         bool    `json:"nominated"`
	Selected          bool    `json:"selected"`
	RequestsSent      float64 `json:"requestsSent"`
	ResponsesReceived float64 `json:"responsesReceived"`
	RequestsReceived  float64 `json:"requestsReceived"`
	ResponsesSent     float64 `json:"responsesSent"`
	PacketsSent       float64 `json:"packetsSent"`
	PacketsReceived   float64 `json:"packetsReceived"`
}

type mhChange struct {
	T      int64  `json:"t"`
	Local  mhCand `json:"local"`
	Remote mhCand `json:"remote"`
}

type mhReport struct {
	// Samples are [ms since the epoch, frames (decoded or encoded), RTP
	// packets (received or sent), packets lost].
	Samples    [][4]float64 `json:"samples"`
	Changes    []mhChange   `json:"changes"`
	Candidates []mhCand     `json:"candidates"`
	Pairs      []mhPair     `json:"pairs"`
	Media      string       `json:"media"`
}

func (p *mhPage) report(t *testing.T) *mhReport {
	t.Helper()
	r := mhEval[mhReport](t, p, "window.mh.report()")
	return &r
}

func (r *mhReport) lastFrames() float64 {
	if len(r.Samples) == 0 {
		return 0
	}
	return r.Samples[len(r.Samples)-1][1]
}

// backupRequests sums the STUN requests sent on pairs that are not the
// selected one.
func (r *mhReport) backupRequests() float64 {
	n := 0.0
	for _, p := range r.Pairs {
		if !p.Selected {
			n += p.RequestsSent
		}
	}
	return n
}

// hostAddrs are the distinct addresses of the UDP host candidates gathered.
func (r *mhReport) hostAddrs() []string {
	var out []string
	for _, c := range r.Candidates {
		if c.Kind == "local" && c.Type == "host" && c.Protocol == "udp" && !slices.Contains(out, c.Address) {
			out = append(out, c.Address)
		}
	}
	slices.Sort(out)
	return out
}

func (r *mhReport) log(t *testing.T, role string, t0 time.Time) {
	t.Helper()
	var cs []string
	for _, c := range r.Candidates {
		cs = append(cs, c.String())
	}
	t.Logf("%s candidates (local and remote): %s", role, strings.Join(cs, "; "))
	for _, p := range r.Pairs {
		mark := ""
		if p.Selected {
			mark = " SELECTED"
		}
		t.Logf("%s pair %s -> %s state=%s nominated=%v%s requests sent/received %v/%v responses received/sent %v/%v packets sent/received %v/%v",
			role, p.Local, p.Remote, p.State, p.Nominated, mark, p.RequestsSent, p.RequestsReceived, p.ResponsesReceived, p.ResponsesSent, p.PacketsSent, p.PacketsReceived)
	}
	for _, c := range r.Changes {
		t.Logf("%s selected pair at t%+.1fs: %s -> %s", role, float64(c.T-t0.UnixMilli())/1000, c.Local, c.Remote)
	}
	t.Logf("%s media: %s", role, r.Media)
}

// mhScript is the page side: one RTCPeerConnection per browser (publisher
// or player), WHIP/WHEP by fetch, and a getStats sampler every 250 ms that
// records frames and every change of the selected candidate pair.
const mhScript = `
window.mh = window.mh || (function () {
  'use strict';
  var s = { pc: null, location: null, media: null, samples: [], changes: [], lastSel: '', timer: null, busy: false, role: '' };

  function waitGathering(pc, ms) {
    return new Promise(function (resolve) {
      if (pc.iceGatheringState === 'complete') { resolve(); return; }
      var timer = setTimeout(done, ms);
      function check() { if (pc.iceGatheringState === 'complete') { done(); } }
      function done() { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); }
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  function cand(c) {
    if (!c) { return { address: '', port: 0, type: '', protocol: '', network: '' }; }
    return { address: c.address || c.ip || '', port: c.port || 0, type: c.candidateType || '', protocol: c.protocol || '', network: c.networkType || '' };
  }

  function selectedPair(report) {
    var byId = new Map(), pairId = null;
    report.forEach(function (r) {
      byId.set(r.id, r);
      if (r.type === 'transport' && r.selectedCandidatePairId) { pairId = r.selectedCandidatePairId; }
    });
    return { byId: byId, pair: pairId ? byId.get(pairId) : null };
  }

  async function sample() {
    if (s.busy || !s.pc) { return; }
    s.busy = true;
    try {
      var t = Date.now();
      var report = await s.pc.getStats();
      var frames = 0, pkts = 0, lost = 0;
      report.forEach(function (r) {
        if (r.type === 'inbound-rtp' && r.kind === 'video') { frames += r.framesDecoded || 0; pkts += r.packetsReceived || 0; lost += r.packetsLost || 0; }
        if (r.type === 'outbound-rtp' && r.kind === 'video') { frames += r.framesEncoded || 0; pkts += r.packetsSent || 0; }
      });
      s.samples.push([t, frames, pkts, lost]);
      var sp = selectedPair(report);
      if (sp.pair) {
        var l = cand(sp.byId.get(sp.pair.localCandidateId)), r = cand(sp.byId.get(sp.pair.remoteCandidateId));
        var key = JSON.stringify([l, r]);
        if (key !== s.lastSel) { s.lastSel = key; s.changes.push({ t: t, local: l, remote: r }); }
      }
    } catch (e) { /* closed */ } finally { s.busy = false; }
  }

  async function start(role, url) {
    if (s.pc) { s.pc.close(); s.pc = null; }
    s.role = role;
    var pc = new RTCPeerConnection();
    if (role === 'publisher') {
      if (!s.media) { s.media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 30 }, audio: true }); }
      s.media.getTracks().forEach(function (t) { pc.addTransceiver(t, { direction: 'sendonly', streams: [s.media] }); });
    } else {
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      var v = document.getElementById('mh-video') || document.createElement('video');
      v.id = 'mh-video'; v.autoplay = true; v.muted = true; v.playsInline = true;
      document.body.appendChild(v);
      var ms = new MediaStream();
      v.srcObject = ms;
      pc.ontrack = function (ev) { ms.addTrack(ev.track); };
    }
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc, 10000);
    var resp = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    var body = await resp.text();
    if (resp.status !== 201) { pc.close(); return { status: resp.status, body: body.slice(0, 300), location: '' }; }
    s.pc = pc;
    s.location = new URL(resp.headers.get('Location'), url).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    if (!s.timer) { s.timer = setInterval(sample, 250); }
    return { status: 201, body: '', location: s.location };
  }

  function state() {
    var last = s.samples.length ? s.samples[s.samples.length - 1] : null;
    return { ice: s.pc ? s.pc.iceConnectionState : 'none', conn: s.pc ? s.pc.connectionState : 'none', frames: last ? last[1] : 0 };
  }

  async function report() {
    var out = { samples: s.samples, changes: s.changes, candidates: [], pairs: [], media: '' };
    if (!s.pc) { return out; }
    var rep = await s.pc.getStats();
    var sp = selectedPair(rep);
    rep.forEach(function (r) {
      if (r.type === 'local-candidate' || r.type === 'remote-candidate') { var c = cand(r); c.kind = r.type === 'local-candidate' ? 'local' : 'remote'; out.candidates.push(c); }
      if (r.type === 'candidate-pair') {
        out.pairs.push({ local: cand(sp.byId.get(r.localCandidateId)), remote: cand(sp.byId.get(r.remoteCandidateId)), state: r.state,
          nominated: !!r.nominated, selected: !!(sp.pair && sp.pair.id === r.id),
          requestsSent: r.requestsSent || 0, responsesReceived: r.responsesReceived || 0, requestsReceived: r.requestsReceived || 0,
          responsesSent: r.responsesSent || 0, packetsSent: r.packetsSent || 0, packetsReceived: r.packetsReceived || 0 });
      }
      if (r.type === 'inbound-rtp' || r.type === 'outbound-rtp') {
        out.media += r.type + '/' + r.kind + ' packets=' + (r.packetsReceived || r.packetsSent || 0) +
          (r.type === 'inbound-rtp' ? ' lost=' + (r.packetsLost || 0) + ' framesDecoded=' + (r.framesDecoded || 0) + ' freezes=' + (r.freezeCount || 0) + ' pli=' + (r.pliCount || 0) + ' nack=' + (r.nackCount || 0)
            : ' framesEncoded=' + (r.framesEncoded || 0) + ' keyFrames=' + (r.keyFramesEncoded || 0) + ' pli=' + (r.pliCount || 0) + ' nack=' + (r.nackCount || 0) + ' limitation=' + (r.qualityLimitationReason || '')) + '; ';
      }
    });
    return out;
  }

  async function stop() {
    if (s.timer) { clearInterval(s.timer); s.timer = null; }
    if (s.location) { try { await fetch(s.location, { method: 'DELETE' }); } catch (e) { } }
    if (s.pc) { s.pc.close(); s.pc = null; }
    if (s.media) { s.media.getTracks().forEach(function (t) { t.stop(); }); }
    return true;
  }

  return { start: start, state: state, report: report, stop: stop };
})()`
