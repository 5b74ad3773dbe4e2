//go:build linux

package mediarelay

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// verifiedTCPConn returns the relay's side of its only verified TCP
// connection.
func verifiedTCPConn(t *testing.T, r *Relay) *tcpConn {
	t.Helper()
	r.tcp.mu.Lock()
	defer r.tcp.mu.Unlock()
	for tc := range r.tcp.conns {
		if tc.path.Load() != nil {
			return tc
		}
	}
	t.Fatal("no verified TCP connection")
	return nil
}

// TestTCPDirectWrites: what the origin sends a TCP path that reads is
// written by the thread that handles it, no writer goroutine involved;
// a client that stops reading gets the rest queued (a short write's tail
// first), in order, and frames whole; once the writer has drained the
// queue, frames are written directly again; a packet that the queue has
// no room for is dropped and counted, never waited on.
func TestTCPDirectWrites(t *testing.T) {
	for _, plane := range dataPlanes {
		t.Run(plane, func(t *testing.T) {
			l := startLoopbackRelayMode(t, plane)
			addr := serveLoopbackTCP(t, l)
			origin := udpSink(t, true)
			s := l.allocate(t, origin.LocalAddr().(*net.UDPAddr).AddrPort())
			c := dialVerifiedTCP(t, addr, "cliu", true)
			defer c.Close()
			r := l.r
			tc := verifiedTCPConn(t, r)

			// Echoes one at a time: the socket always has room.
			pkt := make([]byte, 1000)
			pkt[0] = 0x80
			scratch := make([]byte, 2048)
			buf := make([]byte, 2048)
			const echoes = 200
			for i := range echoes {
				if err := writeFrame(c, scratch, pkt); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := readFrame(c, buf); err != nil || n != len(pkt) {
					t.Fatalf("echo %d: %d bytes, %v", i, n, err)
				}
			}
			if d, out := r.tcp.directWrites.Load(), r.tcp.framesOut.Load(); d != out || d < echoes {
				t.Fatalf("%d of %d frames written directly, want all (at least %d)", d, out, echoes)
			}
			if tc.writing.Load() {
				t.Fatal("a writer goroutine runs though every frame was written directly")
			}

			// The client stops reading: numbered packets from the origin
			// fill the socket (the last one written maybe in part), then
			// the queue, until one is dropped.
			seq := func(p []byte, n uint32) []byte {
				binary.BigEndian.PutUint32(p[4:], n)
				return p
			}
			drops := r.tcp.queueDrops.Load()
			var sent uint32
			for sent < 100_000 && r.tcp.queueDrops.Load() == drops {
				sent++
				tc.send(s, seq(pkt, sent))
			}
			if r.tcp.queueDrops.Load() != drops+1 {
				t.Fatalf("%d packets to a client that does not read: %d dropped, want 1", sent, r.tcp.queueDrops.Load()-drops)
			}
			// Read it all: every packet before the dropped one, whole and
			// in order.
			for want := uint32(1); want < sent; want++ {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := readFrame(c, buf)
				if err != nil {
					t.Fatalf("packet %d of %d: %v", want, sent-1, err)
				}
				if n != len(pkt) || buf[0] != 0x80 {
					t.Fatalf("packet %d: a frame of %d bytes, first byte %#x", want, n, buf[0])
				}
				if num := binary.BigEndian.Uint32(buf[4:]); num != want {
					t.Fatalf("packet %d where %d was due", num, want)
				}
			}
			// The writer empties the queue, then direct writes resume.
			for i := 0; ; i++ {
				tc.wmu.Lock()
				busy := tc.busy
				tc.wmu.Unlock()
				if !busy {
					break
				}
				if i == 1000 {
					t.Fatal("the queue is still marked busy 10 s after it was read")
				}
				time.Sleep(10 * time.Millisecond)
			}
			direct := r.tcp.directWrites.Load()
			sent++
			tc.send(s, seq(pkt, sent))
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := readFrame(c, buf); err != nil || n != len(pkt) || binary.BigEndian.Uint32(buf[4:]) != sent {
				t.Fatalf("after the queue drained: %d bytes, %v", n, err)
			}
			if r.tcp.directWrites.Load() != direct+1 {
				t.Fatal("the frame after the queue drained was not written directly")
			}
		})
	}
}

// TestTCPDirectWriteDoesNotAllocate: a frame written directly to a
// connection allocates nothing once the frame pool is warm.
func TestTCPDirectWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops a share of what is put back under the race detector")
	}
	l := startLoopbackRelay(t)
	addr := serveLoopbackTCP(t, l)
	origin := udpSink(t, true)
	s := l.allocate(t, origin.LocalAddr().(*net.UDPAddr).AddrPort())
	c := dialVerifiedTCP(t, addr, "cliu", true)
	defer c.Close()
	tc := verifiedTCPConn(t, l.r)
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	buf := make([]byte, 2048)
	const runs = 500
	before := l.r.tcp.directWrites.Load()
	// The client reads meanwhile, so the socket keeps room.
	read := make(chan error, 1)
	go func() {
		for range runs + 1 {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := readFrame(c, buf); err != nil {
				read <- err
				return
			}
		}
		read <- nil
	}()
	if allocs := allocsPerRun(runs, func() { tc.send(s, pkt) }); allocs != 0 {
		t.Fatalf("%.1f allocations per frame, want 0", allocs)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if d := l.r.tcp.directWrites.Load() - before; d < runs {
		t.Fatalf("%d of %d frames written directly: the test measured the queue", d, runs+1)
	}
}
