package mediarelay_test

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestRandomUfragFlood floods the public port with STUN Binding requests
// for random USERNAMEs (at least 50 000 packets/s) while 20 real sessions
// exchange media: the sessions lose less than 0.1 % and the registry
// lookups the flood triggers stay within the relay's rate limit. It needs
// the CPU to itself, so it runs with RTCEDGE_FLOOD=1 (`make abuse`, without
// the race detector).
func TestRandomUfragFlood(t *testing.T) {
	if os.Getenv("RTCEDGE_FLOOD") != "1" {
		t.Skip("set RTCEDGE_FLOOD=1 (make abuse) to flood the relay")
	}
	const (
		sessions  = 20
		perSecond = 100 // packets per session per second
		duration  = 5 * time.Second
		floodPPS  = 60000
		rate      = 20 // registry lookups per second
	)
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	relay := startRelay(t, reg, "flood-relay", "127.0.0.1:0", func(c *mediarelay.Config) { c.LookupRate = rate; c.SocketBuffer = 8 << 20 })
	origin := startEcho(t)

	type client struct {
		conn *net.UDPConn
		got  int
	}
	clients := make([]*client, sessions)
	for i := range clients {
		cr := newCreds(strconv.Itoa(100 + i))
		if _, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/flood", cr, origin.addr)); err != nil {
			t.Fatal(err)
		}
		c := &client{conn: clientSocket(t)}
		connect(t, c.conn, relay.public, cr)
		clients[i] = c
	}

	// The flood: pre-built requests for random USERNAMEs, paced.
	msgs := make([][]byte, 4096)
	for i := range msgs {
		var b [8]byte
		_, _ = rand.Read(b[:])
		u := hex.EncodeToString(b[:4]) + ":" + hex.EncodeToString(b[4:])
		msgs[i] = stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(u),
			stun.NewShortTermIntegrity("floodpasswordfloodpassword"), stun.Fingerprint).Raw
	}
	attacker, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(relay.public))
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	_ = attacker.SetWriteBuffer(8 << 20)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var flooded int
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stop:
				flooded = i
				return
			default:
			}
			if _, err := attacker.Write(msgs[i%len(msgs)]); err != nil {
				continue
			}
			if i%500 == 499 {
				// Pace to floodPPS.
				if ahead := time.Duration(i+1)*time.Second/floodPPS - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
	}()

	// The sessions: paced media, echoed by the origin.
	sent := 0
	tick := time.NewTicker(time.Second / perSecond)
	floodStart := time.Now()
	for time.Since(floodStart) < duration {
		<-tick.C
		for _, c := range clients {
			if _, err := c.conn.WriteToUDPAddrPort(rtp(uint32(sent), 1000), relay.public); err != nil {
				t.Fatal(err)
			}
		}
		sent++
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	floodSecs := time.Since(floodStart).Seconds()

	lost := 0
	buf := make([]byte, 2048)
	for _, c := range clients {
		_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for c.got < sent {
			n, _, err := c.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if n == 1000 && buf[0] == 0x80 && binary.BigEndian.Uint32(buf[8:12]) < uint32(sent) {
				c.got++
			}
		}
		lost += sent - c.got
	}
	total := sent * sessions
	pps := float64(flooded) / floodSecs
	lookups := metric(t, relay.relay.HTTPHandler(), "rtcedge_relay_registry_lookups_total")
	t.Logf("flood: %d packets at %.0f/s; sessions: %d of %d packets lost (%.3f %%); registry lookups %v", flooded, pps, lost, total, 100*float64(lost)/float64(total), lookups)
	if pps < 50000 {
		t.Errorf("the flood reached only %.0f packets/s; the test needs at least 50 000", pps)
	}
	if float64(lost) > 0.001*float64(total) {
		t.Errorf("the sessions lost %d of %d packets under the flood (> 0.1 %%)", lost, total)
	}
	if maxLookups := rate*(floodSecs+3) + rate; lookups > maxLookups {
		t.Errorf("%v registry lookups, over the rate limit's %v", lookups, maxLookups)
	}
}

// metric reads one unlabelled counter from the relay's /metrics.
func metric(t *testing.T, h http.Handler, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
