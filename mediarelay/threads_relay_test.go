package mediarelay_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestRestartReloadAndDrainWithThreads: with 2 and 4 data-plane threads,
// sessions spread over the threads survive a restart of the relay (same
// id and port, the same number of threads): the restarted relay reloads
// them from etcd with their verified paths, and media alone (no consent
// check) flows again for every one, whichever thread the kernel now hands
// each client to. A drain with a deadline then releases them all.
func TestRestartReloadAndDrainWithThreads(t *testing.T) {
	const sessions = 12
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprintf("threads=%d", n), func(t *testing.T) {
			threads := func(c *mediarelay.Config) { c.DataPlaneThreads = n }
			etcd := embedetcd.StartForTest(t)
			reg := embedetcd.NewClientForTest(t, etcd)
			origin := startEcho(t)
			relay := startRelay(t, reg, "relay-a", "127.0.0.1:0", threads)
			ids := make([]string, sessions)
			clients := make([]*net.UDPConn, sessions)
			for i := range sessions {
				cr := newCreds(fmt.Sprint(i))
				resp, err := relay.client.AllocateSession(t.Context(), allocReq(fmt.Sprintf("v/live/%d", i), cr, origin.addr))
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = resp.Session.Id
				clients[i] = clientSocket(t)
				connect(t, clients[i], relay.public, cr)
			}
			for i, id := range ids {
				waitFor(t, func() bool {
					rs, err := reg.GetSession(t.Context(), id)
					return err == nil && len(rs.ClientPaths) == 1 && rs.ClientPaths[0].Addr == clients[i].LocalAddr().String()
				}, "the client paths in the registry")
			}
			relay.stop()
			again := startRelay(t, reg, "relay-a", relay.public.String(), threads)
			buf := make([]byte, 2048)
			for i, c := range clients {
				pkt := rtp(uint32(i), 300)
				if _, err := c.WriteToUDPAddrPort(pkt, again.public); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					k, _, err := c.ReadFromUDPAddrPort(buf)
					if err == nil && stun.IsMessage(buf[:k]) {
						continue // a late echo of a retransmitted check
					}
					if err != nil || k != 300 || binary.BigEndian.Uint32(buf[8:]) != uint32(i) {
						t.Fatalf("session %d after the restart: %d bytes, %v", i, k, err)
					}
					break
				}
			}
			st, err := again.client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if st.SessionCount != sessions || st.UnknownSource != 0 {
				t.Fatalf("after the restart: %d sessions, %d unknown-source drops; want %d and 0", st.SessionCount, st.UnknownSource, sessions)
			}
			if _, err := again.client.Drain(t.Context(), &relayv1.DrainRequest{Deadline: durationpb.New(time.Second)}); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				waitFor(t, func() bool {
					_, err := again.client.GetSession(t.Context(), &relayv1.GetSessionRequest{Id: id})
					return status.Code(err) == codes.NotFound
				}, "the drain deadline releasing the session")
			}
		})
	}
}

// TestTCPPathWithThreads: with several data-plane threads, the origin's
// packets for a session whose selected path moves between a UDP address
// (read on one thread) and an ICE-TCP connection go to the selected path
// only, whichever thread reads the session's origin socket.
func TestTCPPathWithThreads(t *testing.T) {
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprintf("threads=%d", n), func(t *testing.T) {
			testTCPSelectedPathMovesBetweenTransports(t, func(c *mediarelay.Config) { c.DataPlaneThreads = n })
		})
	}
}
