//go:build linux

package udpbatch

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recorder is a Handler that copies what it receives, by conn value.
type recorder struct {
	mu      sync.Mutex
	got     map[int][]uint32 // conn value -> sequence numbers received
	batches int
	// writer, when set, echoes each datagram to to from inside the round
	// (exercising the buffers-valid-until-EndBatch contract).
	writer *Writer
	to     netip.AddrPort
}

func (r *recorder) Packets(c *Conn[int], msgs []Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		if m.N < 4 {
			continue
		}
		r.got[c.Value] = append(r.got[c.Value], binary.BigEndian.Uint32(m.Buf))
		if r.writer != nil {
			if full, _ := r.writer.Add(m.Buf[:m.N], r.to); full {
				r.writer.Flush()
			}
		}
	}
}

func (r *recorder) EndBatch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	if r.writer != nil {
		r.writer.Flush()
	}
}

func (r *recorder) count(v int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[v])
}

// echoServer sends every datagram back to its source.
func echoServer(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c := listen(t, network, addr)
	_ = c.SetReadBuffer(4 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], src)
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return c
}

// pollerModes are the two kinds of Poller.
var pollerModes = []struct {
	name   string
	thread bool
}{
	{name: "runtime poller"},
	{name: "thread", thread: true},
}

func startPoller(t *testing.T, h Handler[int], batch int, thread bool) *Poller[int] {
	t.Helper()
	newPoller := NewPoller[int]
	if thread {
		newPoller = NewThreadPoller[int]
	}
	p, err := newPoller(batch, 1500)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(h) }()
	t.Cleanup(func() {
		_ = p.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after Close")
		}
	})
	return p
}

func waitCount(t *testing.T, r *recorder, v, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.count(v) < want {
		if time.Now().After(deadline) {
			t.Fatalf("conn %d: %d datagrams, want %d", v, r.count(v), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seq(i uint32) []byte {
	b := make([]byte, 100)
	binary.BigEndian.PutUint32(b, i)
	return b
}

func TestPollerDeliversPerConn(t *testing.T) {
	for _, tc := range []struct {
		name, network, addr string
		conns, perConn      int
		batch               int
	}{
		{name: "ipv4 many conns", network: "udp4", addr: "127.0.0.1:0", conns: 50, perConn: 40, batch: 16},
		{name: "ipv4 batch of one", network: "udp4", addr: "127.0.0.1:0", conns: 3, perConn: 20, batch: 1},
		{name: "ipv6", network: "udp6", addr: "[::1]:0", conns: 5, perConn: 20, batch: 8},
	} {
		for _, m := range pollerModes {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				testPollerDelivers(t, tc.network, tc.addr, tc.conns, tc.perConn, tc.batch, m.thread)
			})
		}
	}
}

func testPollerDelivers(t *testing.T, network, addr string, nconns, perConn, batch int, thread bool) {
	echo := echoServer(t, network, addr)
	rec := &recorder{got: map[int][]uint32{}}
	p := startPoller(t, rec, batch, thread)
	conns := make([]*Conn[int], nconns)
	for i := range conns {
		c, err := p.Dial(echo.LocalAddr().(*net.UDPAddr).AddrPort(), netip.AddrPort{}, 1<<20, i)
		if err != nil {
			t.Fatal(err)
		}
		if c.Remote != echo.LocalAddr().(*net.UDPAddr).AddrPort() || !c.Local.IsValid() || c.Local.Port() == 0 {
			t.Fatalf("conn info %+v", c.ConnInfo)
		}
		conns[i] = c
	}
	for j := range perConn {
		for _, c := range conns {
			if err := c.Write(seq(uint32(j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range conns {
		waitCount(t, rec, i, perConn)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i := range conns {
		seen := map[uint32]bool{}
		for _, s := range rec.got[i] {
			if seen[s] || s >= uint32(perConn) {
				t.Fatalf("conn %d: duplicate or foreign sequence %d", i, s)
			}
			seen[s] = true
		}
	}
	if rec.batches == 0 {
		t.Fatal("EndBatch never called")
	}
}

func TestPollerCloseStopsDelivery(t *testing.T) {
	for _, m := range pollerModes {
		t.Run(m.name, func(t *testing.T) { testPollerCloseStopsDelivery(t, m.thread) })
	}
}

func testPollerCloseStopsDelivery(t *testing.T, thread bool) {
	echo := echoServer(t, "udp4", "127.0.0.1:0")
	rec := &recorder{got: map[int][]uint32{}}
	p := startPoller(t, rec, 8, thread)
	dst := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	a, err := p.Dial(dst, netip.AddrPort{}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Write(seq(1)); err != nil {
		t.Fatal(err)
	}
	waitCount(t, rec, 1, 1)
	_ = a.Close()
	_ = a.Close() // idempotent
	if err := a.Write(seq(2)); err == nil {
		t.Fatal("write on a closed conn succeeded")
	}
	if p.Len() != 0 {
		t.Fatalf("Len %d after Close, want 0", p.Len())
	}
	// A new conn takes the freed slot; stale readiness of the old one
	// must not be delivered as the new one's.
	b, err := p.Dial(dst, netip.AddrPort{}, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(seq(3)); err != nil {
		t.Fatal(err)
	}
	waitCount(t, rec, 2, 1)
	if n := rec.count(1); n != 1 {
		t.Fatalf("closed conn delivered %d datagrams, want 1", n)
	}
	// A new conn can take the local address of a closed one (a restarted
	// relay keeps its source address toward an origin), and only then.
	c, err := p.Dial(dst, a.Local, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if c.Local != a.Local {
		t.Fatalf("bound to %s, want %s", c.Local, a.Local)
	}
	if err := c.Write(seq(4)); err != nil {
		t.Fatal(err)
	}
	waitCount(t, rec, 4, 1)
	for _, local := range []netip.AddrPort{c.Local, netip.MustParseAddrPort("[::1]:0")} {
		if d, err := p.Dial(dst, local, 0, 5); err == nil {
			t.Fatalf("Dial bound to %s while taken or of another family: %s", local, d.Local)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Dial(dst, netip.AddrPort{}, 0, 3); err == nil {
		t.Fatal("Dial on a closed poller succeeded")
	}
}

func TestWriterSendsToManyDestinations(t *testing.T) {
	for _, tc := range []struct {
		name, network, addr string
		dstNetwork, dstAddr string
	}{
		{name: "ipv4 socket", network: "udp4", addr: "127.0.0.1:0", dstNetwork: "udp4", dstAddr: "127.0.0.1:0"},
		{name: "dual-stack socket to ipv4", network: "udp", addr: "[::]:0", dstNetwork: "udp4", dstAddr: "127.0.0.1:0"},
		{name: "ipv6 socket", network: "udp6", addr: "[::1]:0", dstNetwork: "udp6", dstAddr: "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := listen(t, tc.network, tc.addr)
			w, err := NewWriter(src, 4)
			if err != nil {
				t.Fatal(err)
			}
			dsts := []*net.UDPConn{listen(t, tc.dstNetwork, tc.dstAddr), listen(t, tc.dstNetwork, tc.dstAddr)}
			const n = 10
			bufs := make([][]byte, 0, n*len(dsts))
			sent := 0
			for i := range n {
				for _, d := range dsts {
					b := seq(uint32(i))
					bufs = append(bufs, b)
					to := d.LocalAddr().(*net.UDPAddr).AddrPort()
					if tc.network == "udp" {
						to = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), to.Port())
					}
					full, ok := w.Add(b, to)
					if !ok {
						t.Fatalf("Add refused %v", to)
					}
					if full {
						s, dropped := w.Flush()
						sent += s
						if dropped != 0 {
							t.Fatalf("%d dropped", dropped)
						}
					}
				}
			}
			s, dropped := w.Flush()
			sent += s
			if sent != n*len(dsts) || dropped != 0 {
				t.Fatalf("sent %d dropped %d, want %d, 0", sent, dropped, n*len(dsts))
			}
			buf := make([]byte, 200)
			for _, d := range dsts {
				_ = d.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i := range n {
					k, _, err := d.ReadFromUDPAddrPort(buf)
					if err != nil {
						t.Fatalf("datagram %d: %v", i, err)
					}
					if k != 100 || binary.BigEndian.Uint32(buf) != uint32(i) {
						t.Fatalf("datagram %d: %d bytes, seq %d", i, k, binary.BigEndian.Uint32(buf))
					}
				}
			}
		})
	}
}

func TestWriterRefusesUnreachableFamily(t *testing.T) {
	src := listen(t, "udp4", "127.0.0.1:0")
	w, err := NewWriter(src, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.Add(seq(1), netip.MustParseAddrPort("[::1]:9")); ok {
		t.Fatal("an IPv4 socket queued an IPv6 destination")
	}
	if w.Queued() != 0 {
		t.Fatalf("queued %d", w.Queued())
	}
}

// TestPollerEchoPathDoesNotAllocate pins a whole round (recvmmsg on a conn,
// sendmmsg from a public socket) at zero allocations.
func TestPollerEchoPathDoesNotAllocate(t *testing.T) {
	for _, m := range pollerModes {
		t.Run(m.name, func(t *testing.T) { testPollerEchoPathDoesNotAllocate(t, m.thread) })
	}
}

func testPollerEchoPathDoesNotAllocate(t *testing.T, thread bool) {
	echo := echoServer(t, "udp4", "127.0.0.1:0")
	pub := listen(t, "udp4", "127.0.0.1:0")
	sink := listen(t, "udp4", "127.0.0.1:0")
	_ = sink.SetReadBuffer(4 << 20)
	w, err := NewWriter(pub, 16)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{got: map[int][]uint32{}, writer: w, to: sink.LocalAddr().(*net.UDPAddr).AddrPort()}
	p := startPoller(t, rec, 16, thread)
	c, err := p.Dial(echo.LocalAddr().(*net.UDPAddr).AddrPort(), netip.AddrPort{}, 1<<20, 7)
	if err != nil {
		t.Fatal(err)
	}
	pkt := seq(1)
	buf := make([]byte, 200)
	_ = sink.SetReadDeadline(time.Now().Add(30 * time.Second))
	// Reserve the recorder's slice so that appends do not count.
	rec.mu.Lock()
	rec.got[7] = make([]uint32, 0, 4096)
	rec.mu.Unlock()
	// Not testing.AllocsPerRun: it sets GOMAXPROCS to 1, and a thread
	// poller holds a P while it waits.
	allocs := allocsPerRun(300, func() {
		if err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per echoed datagram, want 0", allocs)
	}
}

// allocsPerRun is testing.AllocsPerRun without changing GOMAXPROCS: the
// average number of allocations (of the whole process) per call of f, after
// one warm-up call, rounded down.
func allocsPerRun(runs int, f func()) float64 {
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64((after.Mallocs - before.Mallocs) / uint64(runs))
}

// rawUDP returns a non-blocking IPv4 UDP socket on loopback, closed at
// cleanup, and its address.
func rawUDP(t *testing.T) (int, netip.AddrPort) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, addrPortOf(sa)
}

// TestThreadPollerSources runs the relay's shape on a thread poller: a
// client's datagrams arrive on a source socket, whose callback (outside
// the poller's lock) writes them to a conn; the conn's replies come back
// through Packets and leave from the source socket in sendmmsg batches
// (NewWriterFD).
func TestThreadPollerSources(t *testing.T) {
	const n = 200
	echo := echoServer(t, "udp4", "127.0.0.1:0")
	srcFD, srcAddr := rawUDP(t)
	client := listen(t, "udp4", "127.0.0.1:0")
	clientAddr := client.LocalAddr().(*net.UDPAddr).AddrPort()

	if np, err := NewPoller[int](8, 1500); err != nil {
		t.Fatal(err)
	} else {
		if err := np.AddSource(srcFD, func([]Message) {}); err != ErrNotThreadPoller {
			t.Errorf("AddSource on a runtime poller: %v", err)
		}
		_ = np.Close()
	}

	p, err := NewThreadPoller[int](8, 1500)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriterFD(srcFD, 8)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{got: map[int][]uint32{}, writer: w, to: clientAddr}
	var conn *Conn[int]
	var mu sync.Mutex
	var senders []netip.AddrPort
	if err := p.AddSource(srcFD, func(msgs []Message) {
		for _, m := range msgs {
			mu.Lock()
			senders = append(senders, m.Addr)
			mu.Unlock()
			if err := conn.Write(m.Buf[:m.N]); err != nil {
				t.Errorf("write to the conn: %v", err)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if conn, err = p.Dial(echo.LocalAddr().(*net.UDPAddr).AddrPort(), netip.AddrPort{}, 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(rec) }()
	defer func() {
		_ = p.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	got := map[uint32]bool{}
	buf := make([]byte, 1500)
	for i := range n {
		if _, err := client.WriteToUDPAddrPort(seq(uint32(i)), srcAddr); err != nil {
			t.Fatal(err)
		}
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, from, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if from != srcAddr || k != 100 {
			t.Fatalf("reply %d: %d bytes from %s", i, k, from)
		}
		got[binary.BigEndian.Uint32(buf)] = true
	}
	if len(got) != n {
		t.Fatalf("%d distinct replies, want %d", len(got), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range senders {
		if a != clientAddr {
			t.Fatalf("source callback saw sender %s, want %s", a, clientAddr)
		}
	}
	if err := p.AddSource(srcFD, func([]Message) {}); err == nil {
		t.Error("AddSource after Run succeeded")
	}
}
