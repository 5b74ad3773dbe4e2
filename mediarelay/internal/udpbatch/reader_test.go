package udpbatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestReaderReceivesEveryDatagram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		addr    string
		batch   int
	}{
		{name: "ipv4 batched", network: "udp4", addr: "127.0.0.1:0", batch: 8},
		{name: "ipv4 single", network: "udp4", addr: "127.0.0.1:0", batch: 1},
		{name: "ipv6 batched", network: "udp6", addr: "[::1]:0", batch: 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := listen(t, tc.network, tc.addr)
			senders := []*net.UDPConn{listen(t, tc.network, tc.addr), listen(t, tc.network, tc.addr)}
			r, err := NewReader(srv, tc.batch, 100)
			if err != nil {
				t.Fatal(err)
			}
			const perSender = 20
			want := map[string]netip.AddrPort{}
			for i := range perSender {
				for j, s := range senders {
					p := fmt.Sprintf("d-%d-%d", j, i)
					want[p] = s.LocalAddr().(*net.UDPAddr).AddrPort()
					if _, err := s.WriteToUDPAddrPort([]byte(p), srv.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
						t.Fatal(err)
					}
				}
			}
			_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			for reads := 0; len(want) > 0 && reads < 2*perSender*len(senders); reads++ {
				msgs, err := r.Read()
				if err != nil {
					t.Fatalf("read: %v (missing %d)", err, len(want))
				}
				if len(msgs) == 0 || len(msgs) > max(tc.batch, 1) {
					t.Fatalf("read %d datagrams", len(msgs))
				}
				for _, m := range msgs {
					p := string(m.Buf[:m.N])
					from, ok := want[p]
					if !ok {
						t.Fatalf("unexpected or duplicate datagram %q", p)
					}
					if m.Addr != from {
						t.Fatalf("%q from %v, want %v", p, m.Addr, from)
					}
					delete(want, p)
				}
			}
			if len(want) > 0 {
				t.Fatalf("%d datagrams missing", len(want))
			}
		})
	}
}

func TestReaderTruncatesToBuffer(t *testing.T) {
	srv := listen(t, "udp4", "127.0.0.1:0")
	snd := listen(t, "udp4", "127.0.0.1:0")
	r, err := NewReader(srv, 4, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snd.WriteToUDPAddrPort(make([]byte, 50), srv.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	msgs, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].N != 10 {
		t.Fatalf("got %d msgs, first %d bytes; want one of 10", len(msgs), msgs[0].N)
	}
}

func TestReaderCloseUnblocks(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run(fmt.Sprint(batch), func(t *testing.T) {
			srv := listen(t, "udp4", "127.0.0.1:0")
			r, err := NewReader(srv, batch, 100)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := r.Read()
				done <- err
			}()
			time.Sleep(10 * time.Millisecond) // let the reader block; the result does not depend on it
			_ = srv.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("err %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Read did not return after Close")
			}
		})
	}
}

func TestReaderDoesNotAllocate(t *testing.T) {
	srv := listen(t, "udp4", "127.0.0.1:0")
	snd := listen(t, "udp4", "127.0.0.1:0")
	r, err := NewReader(srv, 8, 1500)
	if err != nil {
		t.Fatal(err)
	}
	dst := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	pkt := make([]byte, 1200)
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := snd.WriteToUDPAddrPort(pkt, dst); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per read, want 0", allocs)
	}
}

func BenchmarkReadBatch(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			_ = srv.SetReadBuffer(4 << 20)
			snd, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer snd.Close()
			r, err := NewReader(srv, batch, 1501)
			if err != nil {
				b.Fatal(err)
			}
			dst := srv.LocalAddr().(*net.UDPAddr).AddrPort()
			pkt := make([]byte, 1200)
			const burst = 32
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			_ = srv.SetReadDeadline(time.Now().Add(time.Minute))
			// One op is one datagram read. A burst is sent with the timer
			// stopped every burst ops and read back with as few Reads as
			// the reader manages, so the figure is the receive side only.
			sent, reads := 0, 0
			for b.Loop() {
				sent++
				if sent%burst != 0 {
					continue
				}
				b.StopTimer()
				for range burst {
					_, _ = snd.WriteToUDPAddrPort(pkt, dst)
				}
				b.StartTimer()
				for got := 0; got < burst; reads++ {
					msgs, err := r.Read()
					if err != nil {
						b.Fatal(err)
					}
					got += len(msgs)
				}
			}
			b.ReportMetric(float64(sent)/float64(max(reads, 1)), "datagrams/read")
		})
	}
}
