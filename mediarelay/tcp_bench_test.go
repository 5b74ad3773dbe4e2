package mediarelay

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

// serveLoopbackTCP runs ServeTCP for l on a loopback port and returns it.
func serveLoopbackTCP(tb testing.TB, l *loopbackRelay) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- l.r.ServeTCP(ln) }()
	tb.Cleanup(func() {
		_ = l.r.Close()
		if err := <-served; err != nil {
			tb.Errorf("ServeTCP: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// writeFrame writes p as one RFC 4571 frame through scratch.
func writeFrame(w io.Writer, scratch, p []byte) error {
	binary.BigEndian.PutUint16(scratch, uint16(len(p)))
	n := copy(scratch[frameHeader:], p)
	_, err := w.Write(scratch[:frameHeader+n])
	return err
}

// readFrame reads one frame into buf.
func readFrame(r io.Reader, buf []byte) (int, error) {
	if _, err := io.ReadFull(r, buf[:frameHeader]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(buf))
	_, err := io.ReadFull(r, buf[:n])
	return n, err
}

// dialVerifiedTCP connects to the relay's TCP port and verifies with a
// check for the session of ufrag cliUfrag; the echo origin returns the
// check, which proves the path works both ways.
func dialVerifiedTCP(tb testing.TB, addr netip.AddrPort, cliUfrag string, wait bool) *net.TCPConn {
	tb.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		tb.Fatal(err)
	}
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("orgu:"+cliUfrag),
		useCandidate{}, stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint)
	if err != nil {
		tb.Fatal(err)
	}
	scratch := make([]byte, 2048)
	if err := writeFrame(c, scratch, req.Raw); err != nil {
		tb.Fatal(err)
	}
	if wait {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readFrame(c, scratch); err != nil {
			tb.Fatalf("no STUN echo over TCP: %v", err)
		}
		_ = c.SetReadDeadline(time.Time{})
	}
	return c
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkForwardTransport compares a packet's round trip through the
// relay over UDP and over TCP (client -> relay -> UDP echo origin ->
// relay -> client, bursts of 32), per data plane. cpu-ns/op is the whole
// process's CPU per packet (client and origin included, the same for
// both; the thread data plane's wait included), the figure issue 16
// compares (TCP at most 2x UDP).
func BenchmarkForwardTransport(b *testing.B) {
	for _, plane := range []string{DataPlaneThread, DataPlaneGoroutines} {
		b.Run("udp/"+plane, func(b *testing.B) { benchmarkForwardLoopbackCPU(b, plane) })
		b.Run("tcp/"+plane, func(b *testing.B) { benchmarkForwardTCP(b, plane) })
	}
}

func benchmarkForwardLoopbackCPU(b *testing.B, plane string) {
	start := cpuTime()
	benchmarkForwardLoopback(b, plane)
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func benchmarkForwardTCP(b *testing.B, plane string) {
	l := startLoopbackRelayMode(b, plane)
	addr := serveLoopbackTCP(b, l)
	origin := udpSink(b, true)
	l.allocate(b, origin.LocalAddr().(*net.UDPAddr).AddrPort())
	c := dialVerifiedTCP(b, addr, "cliu", true)
	defer c.Close()
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	scratch := make([]byte, 2048)
	buf := make([]byte, 2048)
	const burst = 32
	lost := 0
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	start := cpuTime()
	sent := 0
	for b.Loop() {
		if err := writeFrame(c, scratch, pkt); err != nil {
			b.Fatal(err)
		}
		sent++
		if sent%burst == 0 {
			for range burst {
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := readFrame(c, buf); err != nil {
					lost++
					break // a frame lost on the UDP legs: the rest of the burst too, maybe
				}
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	if lost > 0 {
		b.ReportMetric(float64(lost), "short-bursts")
	}
}

// BenchmarkTCPIdleSessionMemory holds b.N verified, idle TCP connections,
// one per session, and reports the Go heap and goroutine stacks they add
// per connection (sessions allocated beforehand and not counted; the
// client side's sockets, a few hundred bytes each, are; kernel socket
// buffers are not user space).
func BenchmarkTCPIdleSessionMemory(b *testing.B) {
	l := startLoopbackRelayMode(b, DataPlaneThread)
	l.r.cfg.TCPMaxConnsPerIP = b.N // all from 127.0.0.1; set before ServeTCP starts
	l.r.cfg.TCPMaxConns = b.N
	addr := serveLoopbackTCP(b, l)
	origin := udpSink(b, false)
	dst := origin.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := range b.N {
		l.allocateUfrag(b, dst, fmt.Sprintf("cl%05d", i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	conns := make([]*net.TCPConn, 0, b.N)
	for i := range b.N {
		conns = append(conns, dialVerifiedTCP(b, addr, fmt.Sprintf("cl%05d", i), false))
	}
	for i := 0; ; i++ {
		l.r.tcp.mu.Lock()
		n := l.r.tcp.verified
		l.r.tcp.mu.Unlock()
		if n == b.N {
			break
		}
		if i == 1000 {
			b.Fatalf("%d of %d connections verified", n, b.N)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse) - float64(before.HeapInuse)
	stack := float64(after.StackInuse) - float64(before.StackInuse)
	b.ReportMetric(heap/float64(b.N), "heap-B/conn")
	b.ReportMetric(stack/float64(b.N), "stack-B/conn")
	b.ReportMetric((heap+stack)/float64(b.N), "B/conn")
	for _, c := range conns {
		_ = c.Close()
	}
}
