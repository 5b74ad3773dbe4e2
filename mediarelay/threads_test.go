package mediarelay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/rtcedge/rtcedge/mediarelay/internal/udpbatch"
)

// threadCounts are the data-plane thread counts the multi-threaded tests
// run with (more threads than this machine's cores is fine for
// correctness).
var threadCounts = []int{1, 2, 4}

// threadClient is a client socket with a session on a loopbackRelay.
type threadClient struct {
	c     *net.UDPConn
	s     *session
	ufrag string
}

// newThreadClient allocates a session toward origin and connects a new
// client socket to it with a nominating check, which the echo origin sends
// back.
func newThreadClient(tb testing.TB, l *loopbackRelay, origin netip.AddrPort, ufrag string) *threadClient {
	tb.Helper()
	s := l.allocateUfrag(tb, origin, ufrag)
	tc := &threadClient{c: loopbackClient(tb), s: s, ufrag: ufrag}
	tc.check(tb, l, tc.c)
	return tc
}

// loopbackClient is a client socket on loopback.
func loopbackClient(tb testing.TB) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadBuffer(1 << 20)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// check sends a nominating Binding request of the client's session from
// socket c until the echo origin's copy comes back through the relay.
func (tc *threadClient) check(tb testing.TB, l *loopbackRelay, c *net.UDPConn) {
	tb.Helper()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("orgu:"+tc.ufrag), useCandidate{},
		stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint)
	buf := make([]byte, 2048)
	for range 20 {
		if _, err := c.WriteToUDPAddrPort(req.Raw, l.public); err != nil {
			tb.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err == nil && stun.IsMessage(buf[:n]) {
			if from != l.public {
				tb.Fatalf("the check came back from %s, not the relay's public address %s", from, l.public)
			}
			_ = c.SetReadDeadline(time.Time{})
			return
		}
	}
	tb.Fatalf("session %s: no STUN echo through the relay", tc.ufrag)
}

// echoRTP sends n RTP packets tagged with the client's index from socket
// from and reads them back on socket to (the selected path): every one
// comes back, from the relay's public address.
func echoRTP(tb testing.TB, l *loopbackRelay, from, to *net.UDPConn, index uint32, n int) {
	tb.Helper()
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	binary.BigEndian.PutUint32(pkt[4:], index)
	for j := range n {
		binary.BigEndian.PutUint32(pkt[8:], uint32(j))
		if _, err := from.WriteToUDPAddrPort(pkt, l.public); err != nil {
			tb.Fatal(err)
		}
	}
	seen := map[uint32]bool{}
	buf := make([]byte, 2048)
	_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer to.SetReadDeadline(time.Time{})
	for len(seen) < n {
		k, src, err := to.ReadFromUDPAddrPort(buf)
		if err != nil {
			tb.Fatalf("client %d: %d of %d packets back: %v", index, len(seen), n, err)
		}
		if stun.IsMessage(buf[:k]) {
			continue // a late echo of a check
		}
		if k != len(pkt) || binary.BigEndian.Uint32(buf[4:]) != index || src != l.public {
			tb.Fatalf("client %d got %d bytes of client %d's traffic from %s", index, k, binary.BigEndian.Uint32(buf[4:]), src)
		}
		seen[binary.BigEndian.Uint32(buf[8:])] = true
	}
}

// TestDataPlaneThreads runs 64 sessions through relays with 1, 2 and 4
// data-plane threads on as many SO_REUSEPORT sockets of one port: the
// kernel spreads the clients over the threads' sockets, the sessions'
// sockets toward the origin are spread evenly, every thread forwards in
// both directions, packets that cross threads (a client read on one, its
// session's socket on another) arrive, and every reply leaves from the one
// public address.
func TestDataPlaneThreads(t *testing.T) {
	const sessions, perSession = 64, 20
	for _, n := range threadCounts {
		t.Run(fmt.Sprintf("threads=%d", n), func(t *testing.T) {
			l := startLoopbackRelayThreads(t, DataPlaneThread, n)
			if runtime.GOOS != "linux" {
				t.Skip("data-plane threads are Linux-only")
			}
			if len(l.r.pollers) != n || len(l.sockets(t)) != n {
				t.Fatalf("%d threads and %d public sockets, want %d of each", len(l.r.pollers), len(l.sockets(t)), n)
			}
			origin := udpSink(t, true)
			clients := make([]*threadClient, sessions)
			for i := range clients {
				clients[i] = newThreadClient(t, l, origin.LocalAddr().(*net.UDPAddr).AddrPort(), fmt.Sprintf("thr%d", i))
			}
			before := make([][2]uint64, sessions)
			for i, c := range clients {
				before[i] = [2]uint64{c.s.c2oPackets.Load(), c.s.o2cPackets.Load()}
				echoRTP(t, l, c.c, c.c, uint32(i), perSession)
			}
			crossed := 0
			for _, c := range clients {
				if c.s.client.Load().sock.thread != c.s.up.Load().thread {
					crossed++
				}
			}
			t.Logf("%d of %d sessions are read on one thread and sent to their origin's socket on another", crossed, sessions)
			if n > 1 && crossed == 0 {
				t.Error("no session crosses threads: the kernel put every client on its session socket's thread")
			}
			for i, p := range l.r.pollers {
				st := l.r.stats[i]
				if p.Len() != sessions/n {
					t.Errorf("thread %d reads %d session sockets, want %d", i, p.Len(), sessions/n)
				}
				// 64 clients leave a thread without any with a chance of
				// n * (1 - 1/n)^64: 4e-8 at 4 threads.
				if st.fromClients.Load() == 0 || st.fromOrigins.Load() == 0 {
					t.Errorf("thread %d read %d packets from clients and %d from the origin, want some of each",
						i, st.fromClients.Load(), st.fromOrigins.Load())
				}
			}
			perThread := threadMetrics(t, l.r)
			var total float64
			for i := range n {
				total += perThread[strconv.Itoa(i)+"/client"]
			}
			if len(perThread) != 2*n || total < sessions*perSession {
				t.Errorf("rtcedge_relay_data_plane_packets_total: %v, want client and origin series for %d threads, %d client packets in all", perThread, n, sessions*perSession)
			}
			// Each session's counters grew by its media both ways (a
			// retransmitted check may add to them on a busy machine).
			for i, c := range clients {
				if c.s.c2oPackets.Load()-before[i][0] < perSession || c.s.o2cPackets.Load()-before[i][1] < perSession {
					t.Fatalf("session %s: c2o %d o2c %d after %d each way", c.ufrag, c.s.c2oPackets.Load()-before[i][0], c.s.o2cPackets.Load()-before[i][1], perSession)
				}
			}
			// Relay-wide figures add up every thread's: media from 16
			// strangers (spread over the threads) are 16 unknown-source
			// drops in GetStatus.
			pkt := make([]byte, 200)
			pkt[0] = 0x80
			for range 16 {
				if _, err := loopbackClient(t).WriteToUDPAddrPort(pkt, l.public); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(20 * time.Second)
			for l.r.Status().UnknownSource != 16 {
				if time.Now().After(deadline) {
					t.Fatalf("unknown-source drops %d, want 16", l.r.Status().UnknownSource)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// threadMetrics gathers rtcedge_relay_data_plane_packets_total as
// "thread/source" -> value.
func threadMetrics(t *testing.T, r *Relay) map[string]float64 {
	t.Helper()
	mfs, err := r.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "rtcedge_relay_data_plane_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			out[labels["thread"]+"/"+labels["source"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

// sockets returns the relay's public sockets once Serve has set them up.
func (l *loopbackRelay) sockets(tb testing.TB) []*pubSock {
	l.sock(tb)
	l.r.mu.Lock()
	defer l.r.mu.Unlock()
	return l.r.socks
}

// TestClientPortChangeAcrossThreads: a client whose source port changes (a
// new path, or a NAT rebinding) is hashed by the kernel to another
// thread's socket; once its check there verifies, it keeps its session:
// its media goes on to the origin, and the origin's packets follow it to
// the new path, whichever thread reads the session's socket.
func TestClientPortChangeAcrossThreads(t *testing.T) {
	for _, n := range threadCounts {
		t.Run(fmt.Sprintf("threads=%d", n), func(t *testing.T) {
			l := startLoopbackRelayThreads(t, DataPlaneThread, n)
			if runtime.GOOS != "linux" {
				t.Skip("data-plane threads are Linux-only")
			}
			origin := udpSink(t, true)
			c := newThreadClient(t, l, origin.LocalAddr().(*net.UDPAddr).AddrPort(), "moving")
			echoRTP(t, l, c.c, c.c, 1, 10)
			first := c.s.client.Load()
			// New source ports until one lands on another thread (each
			// does with a chance of 1 - 1/n; with one thread, the first).
			var moved *net.UDPConn
			for range 40 {
				nc := loopbackClient(t)
				c.check(t, l, nc)
				p := l.r.tabs.byAddr(nc.LocalAddr().(*net.UDPAddr).AddrPort())
				if p == nil || p.s != c.s {
					t.Fatalf("the new port's check made no path of the session: %v", p)
				}
				if n == 1 || p.sock.thread != first.sock.thread {
					moved = nc
					break
				}
			}
			if moved == nil {
				t.Fatalf("40 new ports all hashed to thread %d of %d", first.sock.thread, n)
			}
			sel := c.s.client.Load()
			if sel.addr != moved.LocalAddr().(*net.UDPAddr).AddrPort() {
				t.Fatalf("the nominating check from the new port did not select it: selected %s", sel.addr)
			}
			t.Logf("client moved from thread %d to thread %d; the session's socket is on thread %d", first.sock.thread, sel.sock.thread, c.s.up.Load().thread)
			// Media from the new port comes back to it, and so does media
			// still arriving on the old one (a verified path).
			before := c.s.c2oPackets.Load()
			echoRTP(t, l, moved, moved, 2, 10)
			echoRTP(t, l, c.c, moved, 3, 10)
			if got := c.s.c2oPackets.Load() - before; got < 20 {
				t.Fatalf("%d packets forwarded to the origin after the move, want 20", got)
			}
			if l.r.sessionCount() != 1 {
				t.Fatalf("%d sessions, want the one", l.r.sessionCount())
			}
		})
	}
}

// TestDataPlaneThreadsForwardWithoutAllocations counts the allocations of
// the whole process while packets go through relays with several
// data-plane threads, both ways, many of them across threads: none.
func TestDataPlaneThreadsForwardWithoutAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without the race detector (make test runs -run Alloc without it)")
	}
	const sessions, burst, rounds = 8, 4, 50
	for _, n := range threadCounts {
		t.Run(fmt.Sprintf("threads=%d", n), func(t *testing.T) {
			l := startLoopbackRelayThreads(t, DataPlaneThread, n)
			if runtime.GOOS != "linux" {
				t.Skip("data-plane threads are Linux-only")
			}
			origin := udpSink(t, true)
			clients := make([]*threadClient, sessions)
			for i := range clients {
				clients[i] = newThreadClient(t, l, origin.LocalAddr().(*net.UDPAddr).AddrPort(), fmt.Sprintf("alloc%d", i))
				_ = clients[i].c.SetReadDeadline(time.Now().Add(time.Minute))
			}
			pkt := make([]byte, 1200)
			pkt[0] = 0x80
			buf := make([]byte, 2048)
			lost := 0
			round := func() {
				for _, c := range clients {
					for range burst {
						_, _ = c.c.WriteToUDPAddrPort(pkt, l.public)
					}
				}
				for _, c := range clients {
					for range burst {
						if _, _, err := c.c.ReadFromUDPAddrPort(buf); err != nil {
							lost++
						}
					}
				}
			}
			packets := sessions * burst * 2 // both ways
			if allocs := allocsPerRun(rounds, round) / float64(packets); allocs >= 1 {
				t.Fatalf("%.1f allocations per forwarded packet, want 0", allocs)
			}
			if lost != 0 {
				t.Fatalf("%d packets lost", lost)
			}
		})
	}
}

// TestDataPlaneThreadStopTakesTheRelayDown: a data-plane thread that stops
// on an error ends Serve with that error and closes the relay, as one data
// plane always did: a relay that forwards only some sessions must not go on
// looking healthy.
func TestDataPlaneThreadStopTakesTheRelayDown(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("data-plane threads are Linux-only")
	}
	broken := errors.New("epoll set broken")
	conns, err := ListenUDP(context.Background(), "udp4", "127.0.0.1:0", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	public := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	r, err := New(Config{PublicAddrs: []netip.AddrPort{public}, Logger: slog.New(slog.DiscardHandler),
		DataPlane: DataPlaneThread, DataPlaneThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	run := runPoller
	runPoller = func(p *udpbatch.Poller[*session], h *upstreamHandler) error {
		if p == r.pollers[1] {
			<-stop
			return broken
		}
		return run(p, h)
	}
	t.Cleanup(func() { runPoller = run })
	served := make(chan error, 1)
	go func() { served <- r.Serve(context.Background(), conns...) }()
	l := &loopbackRelay{r: r, public: public}
	l.sock(t)
	close(stop)
	select {
	case err := <-served:
		if !errors.Is(err, broken) || !strings.Contains(err.Error(), "data-plane thread 1 stopped") {
			t.Fatalf("Serve returned %v, want the thread's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve goes on after a data-plane thread stopped")
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if !closed {
		t.Fatal("the relay is still open after a data-plane thread stopped")
	}
}

// BenchmarkForwardThreadsCrossing measures what a session costs when its
// client is read on one data-plane thread and its origin socket on another
// (crossed), against one whose both are on the same thread (aligned): two
// threads, 96 sessions split by where they landed, each group forwarding
// as BenchmarkForwardThreads does. The difference is what moving each
// session's origin socket to its client's thread could save.
func BenchmarkForwardThreadsCrossing(b *testing.B) {
	l := startLoopbackRelayThreads(b, DataPlaneThread, 2)
	origin := udpSink(b, true)
	var aligned, crossed []*threadClient
	for i := range 96 {
		c := newThreadClient(b, l, origin.LocalAddr().(*net.UDPAddr).AddrPort(), fmt.Sprintf("cross%d", i))
		if c.s.client.Load().sock.thread == c.s.up.Load().thread {
			aligned = append(aligned, c)
		} else {
			crossed = append(crossed, c)
		}
	}
	n := min(len(aligned), len(crossed))
	for _, g := range []struct {
		name    string
		clients []*threadClient
	}{{"aligned", aligned[:n]}, {"crossed", crossed[:n]}} {
		b.Run(g.name, func(b *testing.B) { benchmarkForwardClients(b, l, g.clients) })
	}
}

// benchmarkForwardClients is BenchmarkForwardThreads' loop over clients.
func benchmarkForwardClients(b *testing.B, l *loopbackRelay, clients []*threadClient) {
	const burst = 8
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	buf := make([]byte, 2048)
	lost, sent := 0, 0
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		c := clients[(sent/burst)%len(clients)]
		_, _ = c.c.WriteToUDPAddrPort(pkt, l.public)
		sent++
		if sent%(burst*len(clients)) == 0 {
			for _, c := range clients {
				for range burst {
					_ = c.c.SetReadDeadline(time.Now().Add(time.Second))
					if _, _, err := c.c.ReadFromUDPAddrPort(buf); err != nil {
						lost++
						break
					}
				}
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(lost), "lost")
}

// BenchmarkForwardThreads sends 1200-byte packets from 64 sessions'
// clients through relays with 1, 2 and 4 data-plane threads to an echo
// origin and back, in bursts of 8 per client; one op is one packet's round
// trip. cpu-ns/op is the whole process's CPU per round trip (clients and
// origin included, the same for every thread count). Run with
// -mutexprofile and -blockprofile for the locks the threads contend for
// (docs/PERFORMANCE.md).
func BenchmarkForwardThreads(b *testing.B) {
	for _, n := range threadCounts {
		b.Run(fmt.Sprintf("threads=%d", n), func(b *testing.B) {
			l := startLoopbackRelayThreads(b, DataPlaneThread, n)
			origin := udpSink(b, true)
			clients := make([]*threadClient, 64)
			for i := range clients {
				clients[i] = newThreadClient(b, l, origin.LocalAddr().(*net.UDPAddr).AddrPort(), fmt.Sprintf("bench%d", i))
			}
			benchmarkForwardClients(b, l, clients)
		})
	}
}
