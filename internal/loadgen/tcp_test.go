//go:build linux

package loadgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// tcpPair returns a load-tool TCP client socket (clientSocket) connected
// to the returned server side, both on loopback.
func tcpPair(t *testing.T, buf int) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, err := clientSocket(TransportTCP, ln.Addr().(*net.TCPAddr).AddrPort(), buf, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return fd, srv
}

// payload returns an n-byte payload filled with seed's byte.
func payload(n int, seed byte) []byte { return bytes.Repeat([]byte{seed}, n) }

// concat joins byte slices.
func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestTCPDrainReassembles writes RFC 4571 streams to a load-tool client
// connection in pieces, as a relay's writes may arrive, and checks that
// the generator's reader (drain) hands over exactly the frames complete
// after each piece: a frame split across reads waits for its rest, frames
// coalesced in one read all come out, and a stream longer than the shared
// read buffer is split at any byte.
func TestTCPDrainReassembles(t *testing.T) {
	a, b, c := payload(1200, 'a'), payload(28, 'b'), payload(1472, 'c')
	fa, fb, fc := frame(a), frame(b), frame(c)
	var burst [][]byte // more than one read buffer's worth
	for i := range streamReadSize/len(fa) + 5 {
		burst = append(burst, payload(1200, byte(i)))
	}
	var burstStream []byte
	for _, p := range burst {
		burstStream = append(burstStream, frame(p)...)
	}
	tests := []struct {
		name  string
		steps [][]byte // written one after the other
		after []int    // frames complete after each step
		want  [][]byte // every frame's payload, in order
	}{
		{"whole frames", [][]byte{fa, fb}, []int{1, 2}, [][]byte{a, b}},
		{"split in the length prefix", [][]byte{fa[:1], fa[1:]}, []int{0, 1}, [][]byte{a}},
		{"split in the payload", [][]byte{fa[:500], fa[500:]}, []int{0, 1}, [][]byte{a}},
		{"split after the length prefix", [][]byte{fc[:2], fc[2:]}, []int{0, 1}, [][]byte{c}},
		{"split in three", [][]byte{fc[:1], fc[1:700], fc[700:]}, []int{0, 0, 1}, [][]byte{c}},
		{"coalesced", [][]byte{concat(fa, fb, fc)}, []int{3}, [][]byte{a, b, c}},
		{"coalesced with a split tail", [][]byte{concat(fa, fb, fc[:9]), fc[9:]}, []int{2, 3}, [][]byte{a, b, c}},
		{"a split frame's rest coalesced with more", [][]byte{fa[:3], concat(fa[3:], fb, fc)}, []int{0, 3}, [][]byte{a, b, c}},
		{"longer than the read buffer", [][]byte{burstStream}, []int{len(burst)}, burst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, srv := tcpPair(t, 256<<10)
			g := newTestGen(t, fd)
			var got [][]byte
			handle := func(p []byte, _ int64) { got = append(got, bytes.Clone(p)) }
			written := 0
			for i, step := range tt.steps {
				if _, err := srv.Write(step); err != nil {
					t.Fatal(err)
				}
				written += len(step)
				// Read until every byte written is either in a frame
				// handed over or carried (a frame's start).
				deadline := time.Now().Add(20 * time.Second)
				for consumed(got)+len(g.clients[0].tcp.carry) < written {
					if time.Now().After(deadline) {
						t.Fatalf("step %d: %d of %d bytes read", i, consumed(got)+len(g.clients[0].tcp.carry), written)
					}
					if _, err := g.poll.wait(100 * time.Millisecond); err != nil {
						t.Fatal(err)
					}
					if !g.drain(0, nil, 4, handle) {
						t.Fatalf("step %d: the connection ended", i)
					}
				}
				if len(got) != tt.after[i] {
					t.Fatalf("after step %d: %d frames, want %d", i, len(got), tt.after[i])
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d frames, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Fatalf("frame %d: %d bytes starting %q, want %d starting %q", i, len(got[i]), got[i][:1], len(tt.want[i]), tt.want[i][:1])
				}
			}
			if g.disconnected != 0 {
				t.Fatalf("%d disconnected", g.disconnected)
			}
		})
	}
}

// TestTCPDrainEnds checks that a connection whose stream breaks or ends
// leaves the poller, counted, after the frames before the break.
func TestTCPDrainEnds(t *testing.T) {
	oversize := binary.BigEndian.AppendUint16(nil, maxFrame+1)
	tests := []struct {
		name  string
		write []byte
		close bool // the server closes after writing
		want  int  // frames handed over before the end
	}{
		{"oversize length prefix", concat(frame(payload(100, 'x')), oversize, payload(100, 'y')), false, 1},
		{"closed at a frame boundary", frame(payload(100, 'x')), true, 1},
		{"closed inside a frame", concat(frame(payload(100, 'x')), frame(payload(100, 'z'))[:50]), true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, srv := tcpPair(t, 256<<10)
			g := newTestGen(t, fd)
			if _, err := srv.Write(tt.write); err != nil {
				t.Fatal(err)
			}
			if tt.close {
				_ = srv.Close()
			}
			frames := 0
			handle := func([]byte, int64) { frames++ }
			open := true
			for i := 0; open && i < 200; i++ { // 200 waits of up to 100ms
				if _, err := g.poll.wait(100 * time.Millisecond); err != nil {
					t.Fatal(err)
				}
				open = g.drain(0, nil, 4, handle)
			}
			if open || g.disconnected != 1 || !g.clients[0].gone {
				t.Fatalf("open %t, disconnected %d: want the connection ended and counted", open, g.disconnected)
			}
			if frames != tt.want {
				t.Fatalf("%d frames, want %d", frames, tt.want)
			}
			if evs, err := g.poll.wait(50 * time.Millisecond); err != nil || len(evs) != 0 {
				t.Fatalf("events %v (%v) after the end: want the socket out of the poller", evs, err)
			}
		})
	}
}

// TestTCPSendKeepsFraming fills a client connection whose peer does not
// read, so that the kernel takes frames partly or not at all, then lets
// the peer read: every frame send reported taken arrives whole and in
// order, and no other bytes do.
func TestTCPSendKeepsFraming(t *testing.T) {
	fd, srv := tcpPair(t, 64<<10)
	s := &tcpStream{}
	var taken []uint32 // sequence numbers the kernel took
	mk := func(seq uint32) []byte {
		p := payload(1001, byte(seq)) // odd-sized: partial writes fall anywhere
		binary.BigEndian.PutUint32(p, seq)
		return frame(p)
	}
	partial, refused := false, 0
	var seq uint32
	for ; refused < 5 && seq < 100000; seq++ {
		if s.send(fd, mk(seq)) {
			taken = append(taken, seq)
			partial = partial || len(s.unsent) > 0
		} else {
			refused++
		}
	}
	if refused == 0 || !partial {
		t.Fatalf("refused %d, short write %t: the kernel's buffers never cut a frame, the test proves nothing", refused, partial)
	}
	// The peer reads from now on; the next frame taken goes out after
	// what a short write left.
	got := make(chan []uint32, 1)
	go func() {
		var seqs []uint32
		r := frameStream{r: srv}
		for {
			p, err := r.next()
			if err != nil {
				got <- seqs
				return
			}
			if len(p) != 1001 || !bytes.Equal(p[4:], payload(997, p[3])) {
				seqs = append(seqs, 1<<31) // corrupt
				continue
			}
			seqs = append(seqs, binary.BigEndian.Uint32(p))
		}
	}()
	last := seq
	deadline := time.Now().Add(20 * time.Second)
	for !s.send(fd, mk(last)) {
		if time.Now().After(deadline) {
			t.Fatal("the connection stayed full for 20s with the peer reading")
		}
		time.Sleep(time.Millisecond)
	}
	taken = append(taken, last)
	for !s.flush(fd) { // the rest of a short write
		if time.Now().After(deadline) {
			t.Fatal("the connection stayed full for 20s with the peer reading")
		}
		time.Sleep(time.Millisecond)
	}
	_ = unix.Close(fd)
	seqs := <-got
	if len(seqs) != len(taken) {
		t.Fatalf("%d frames arrived, %d were taken", len(seqs), len(taken))
	}
	for i := range seqs {
		if seqs[i] != taken[i] {
			t.Fatalf("frame %d is %d, want %d (1<<31: corrupt)", i, seqs[i], taken[i])
		}
	}
}

// frameStream reads RFC 4571 frames from a blocking reader (the test's
// server side).
type frameStream struct{ r io.Reader }

func (f frameStream) next() ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		return nil, err
	}
	p := make([]byte, binary.BigEndian.Uint16(h[:]))
	_, err := io.ReadFull(f.r, p)
	return p, err
}

// newTestGen returns a generator with one TCP client on fd, in its poller.
func newTestGen(t *testing.T, fd int) *gen {
	t.Helper()
	p, err := newPoller(8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	if err := p.add(fd, 0); err != nil {
		t.Fatal(err)
	}
	return &gen{
		cfg: Config{Transport: TransportTCP}, log: slog.Default(), poll: p, base: time.Now(),
		clients: []client{{fd: fd, tcp: &tcpStream{}}}, streamBuf: make([]byte, streamReadSize),
	}
}

// consumed is the stream bytes the frames got were: payloads and prefixes.
func consumed(got [][]byte) int {
	n := 0
	for _, p := range got {
		n += frameHeader + len(p)
	}
	return n
}

// TestRunRelay runs the relay binary (built from this tree) as a child
// process with an embedded etcd and loads it over each transport: every
// session sets up, and at a low rate every packet sent in the window comes
// back (TCP: framed both ways, over the relay's ICE-TCP port) with the
// relay's CPU and memory measured.
func TestRunRelay(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the relay")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mediarelay")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mediarelay")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{UnsafeNoFsync: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	e := startEcho(t, "")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"udp", Config{Transport: TransportUDP, Sessions: 3, Rate: 50}},
		// More sessions than the relay's default connections per IP (64):
		// compare's relay takes them.
		{"tcp", Config{Transport: TransportTCP, Sessions: 70, Rate: 5}},
		{"tcp closed loop", Config{Transport: TransportTCP, Sessions: 3, Window: 4}},
		{"tcp idle", Config{Transport: TransportTCP, Sessions: 3, Idle: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, grpcAddr, err := startRelay(ctx, CompareConfig{RelayBin: bin, CPUTarget: -1, SocketBuffer: 1 << 20}, etcd.Endpoints(), tt.cfg.Sessions)
			if err != nil {
				t.Fatal(err)
			}
			cfg := tt.cfg
			cfg.Target, cfg.RelayGRPC, cfg.PID = TargetRelay, grpcAddr, c.pid()
			cfg.Origin, cfg.OriginUfrag, cfg.OriginPwd = e.Addr(), e.Ufrag(), e.Pwd()
			cfg.Warmup, cfg.Duration = 300*time.Millisecond, time.Second
			cfg.Grace = 30 * time.Second // a deadline: the run ends once every echo is in
			cfg.Logger = quiet
			res, err := Run(ctx, cfg)
			if stopErr := c.stop(); stopErr != nil {
				t.Errorf("the relay did not exit cleanly: %v", stopErr)
			}
			if err != nil {
				t.Fatalf("%v (relay stderr: %s)", err, c.stderrTail())
			}
			if res.SetupFailed != 0 || res.Disconnected != 0 || res.Transport != cfg.Transport {
				t.Fatalf("setup failed %d, disconnected %d, transport %q", res.SetupFailed, res.Disconnected, res.Transport)
			}
			if res.MemAfter.RSSKiB == 0 {
				t.Fatal("the relay's memory was not measured")
			}
			if cfg.Idle {
				if res.Sent != 0 || res.Received != 0 || res.Mode != "idle" {
					t.Fatalf("idle run sent %d, received %d, mode %q", res.Sent, res.Received, res.Mode)
				}
				return
			}
			if res.Sent == 0 || res.Received != res.Sent || res.LossPct != 0 || res.SendErrors != 0 {
				t.Fatalf("sent %d (errors %d), received %d, loss %v%%: want every packet back", res.Sent, res.SendErrors, res.Received, res.LossPct)
			}
			if res.CPUSeconds <= 0 || res.CPUPerPacketUs <= 0 || res.RTTP50us <= 0 {
				t.Fatalf("CPU %vµs per packet, RTT p50 %vµs: not measured", res.CPUPerPacketUs, res.RTTP50us)
			}
		})
	}
}
