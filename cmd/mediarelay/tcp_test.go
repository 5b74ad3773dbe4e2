package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func TestParseTCPConfig(t *testing.T) {
	etcd := []string{"-etcd-endpoints", "x"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c tcpConfig)
	}{
		{name: "defaults", check: func(t *testing.T, c tcpConfig) {
			if c.off() || c.listenAddr != "" || c.maxConns != mediarelay.DefaultTCPMaxConns || c.maxConnsPerIP != mediarelay.DefaultTCPMaxConnsPerIP ||
				c.verifyTimeout != mediarelay.DefaultTCPVerifyTimeout || c.idleTimeout != mediarelay.DefaultTCPIdleTimeout || c.writeQueue != mediarelay.DefaultTCPWriteQueue {
				t.Errorf("defaults %+v", c)
			}
		}},
		{name: "off", args: []string{"-tcp-listen", "off"}, check: func(t *testing.T, c tcpConfig) {
			if !c.off() {
				t.Error("not off")
			}
		}},
		{name: "off from env", env: map[string]string{"RTCEDGE_TCP_LISTEN": "off"}, check: func(t *testing.T, c tcpConfig) {
			if !c.off() {
				t.Error("not off")
			}
		}},
		{name: "explicit listen and 443 advertised", args: []string{"-tcp-listen", ":8443", "-public-tcp-addr", "203.0.113.7:443"}},
		{name: "limits from env", env: map[string]string{"RTCEDGE_TCP_MAX_CONNS": "100", "RTCEDGE_TCP_MAX_CONNS_PER_IP": "10",
			"RTCEDGE_TCP_VERIFY_TIMEOUT": "2s", "RTCEDGE_TCP_IDLE_TIMEOUT": "1m", "RTCEDGE_TCP_WRITE_QUEUE": "64"},
			check: func(t *testing.T, c tcpConfig) {
				if c.maxConns != 100 || c.maxConnsPerIP != 10 || c.verifyTimeout != 2*time.Second || c.idleTimeout != time.Minute || c.writeQueue != 64 {
					t.Errorf("limits %+v", c)
				}
			}},
		{name: "public addresses from env", env: map[string]string{"RTCEDGE_PUBLIC_TCP_ADDR": "203.0.113.7:443,2001:db8::7"},
			check: func(t *testing.T, c tcpConfig) {
				if !slices.Equal(c.publicAddrs, cli.StringList{"203.0.113.7:443", "2001:db8::7"}) {
					t.Errorf("public %v", c.publicAddrs)
				}
			}},
		{name: "listen without port", args: []string{"-tcp-listen", "127.0.0.1"}, wantErr: "-tcp-listen"},
		{name: "listen bad port", args: []string{"-tcp-listen", ":http"}, wantErr: "want a port"},
		{name: "advertised while off", args: []string{"-tcp-listen", "off", "-public-tcp-addr", "203.0.113.7:443"}, wantErr: "nothing would accept"},
		{name: "bad advertised address", args: []string{"-public-tcp-addr", "relay.example:443"}, wantErr: "-public-tcp-addr"},
		{name: "advertised port 0", args: []string{"-public-tcp-addr", "203.0.113.7:0"}, wantErr: "-public-tcp-addr"},
		{name: "no connections", args: []string{"-tcp-max-conns", "0"}, wantErr: "-tcp-max-conns 0"},
		{name: "per IP above total", args: []string{"-tcp-max-conns", "10", "-tcp-max-conns-per-ip", "11"}, wantErr: "-tcp-max-conns-per-ip 11"},
		{name: "per IP zero", args: []string{"-tcp-max-conns-per-ip", "0"}, wantErr: "-tcp-max-conns-per-ip 0"},
		{name: "verify too short", args: []string{"-tcp-verify-timeout", "10ms"}, wantErr: "-tcp-verify-timeout"},
		{name: "verify too long", args: []string{"-tcp-verify-timeout", "5m"}, wantErr: "-tcp-verify-timeout"},
		{name: "idle too short", args: []string{"-tcp-idle-timeout", "500ms"}, wantErr: "-tcp-idle-timeout"},
		{name: "no write queue", args: []string{"-tcp-write-queue", "0"}, wantErr: "-tcp-write-queue"},
		{name: "bad env limit", env: map[string]string{"RTCEDGE_TCP_MAX_CONNS": "many"}, wantErr: "RTCEDGE_TCP_MAX_CONNS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(append(slices.Clone(etcd), tc.args...), func(k string) string { return tc.env[k] })
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if err == nil && tc.check != nil {
				tc.check(t, c.tcp)
			}
		})
	}
}

func TestTCPAdvertise(t *testing.T) {
	udpPublic := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:8000"), netip.MustParseAddrPort("[2001:db8::7]:8000")}
	tests := []struct {
		name     string
		flagged  []string
		udp      []netip.AddrPort
		samePort bool     // the UDP port has the listener's number
		want     []string // with the listener's port as PORT
	}{
		{name: "unset: the UDP public IPs with the TCP port", udp: udpPublic, want: []string{"198.51.100.7:PORT", "[2001:db8::7]:PORT"}},
		{name: "unset, same port number: the UDP public addresses", udp: udpPublic, samePort: true, want: []string{"198.51.100.7:8000", "[2001:db8::7]:8000"}},
		{name: "same port number, flagged wins", flagged: []string{"203.0.113.7:443"}, udp: udpPublic, samePort: true, want: []string{"203.0.113.7:443"}},
		{name: "443 behind a load balancer", flagged: []string{"203.0.113.7:443"}, udp: udpPublic, want: []string{"203.0.113.7:443"}},
		{name: "bare IP takes the bound port", flagged: []string{"203.0.113.7"}, udp: udpPublic, want: []string{"203.0.113.7:PORT"}},
		{name: "duplicates once", flagged: []string{"203.0.113.7:443", "203.0.113.7:443"}, udp: udpPublic, want: []string{"203.0.113.7:443"}},
		{name: "unset, same IP twice", udp: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")}, want: []string{"127.0.0.1:PORT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
			c := tcpConfig{publicAddrs: tc.flagged}
			udpPort := uint16(1) // not the listener's
			if tc.samePort {
				udpPort = ln.Addr().(*net.TCPAddr).AddrPort().Port()
			}
			_, got, err := c.advertise(ln, udpPort, tc.udp)
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, a := range got {
				s = append(s, strings.ReplaceAll(a.String(), ":"+port, ":PORT"))
			}
			if !slices.Equal(s, tc.want) {
				t.Errorf("got %v, want %v", s, tc.want)
			}
		})
	}
}

// TestTCPListenDefault: unset, -tcp-listen takes -udp-listen's host and the
// UDP port's number; when that number is taken for TCP it fails if the UDP
// port was chosen, and takes any port if the kernel chose it.
func TestTCPListenDefault(t *testing.T) {
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).AddrPort().Port()
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := free.Addr().(*net.TCPAddr).AddrPort().Port()
	_ = free.Close()
	tests := []struct {
		name      string
		udpListen string
		udpPort   uint16
		listen    string
		wantPort  func(uint16) bool
		wantErr   string
	}{
		{name: "same number as the UDP port", udpListen: fmt.Sprintf("127.0.0.1:%d", freePort), udpPort: freePort,
			wantPort: func(p uint16) bool { return p == freePort }},
		{name: "same number, UDP port 0", udpListen: "127.0.0.1:0", udpPort: freePort,
			wantPort: func(p uint16) bool { return p == freePort }},
		{name: "number taken, UDP port chosen", udpListen: fmt.Sprintf("127.0.0.1:%d", takenPort), udpPort: takenPort,
			wantErr: "set -tcp-listen"},
		{name: "number taken, UDP port 0", udpListen: "127.0.0.1:0", udpPort: takenPort,
			wantPort: func(p uint16) bool { return p != takenPort && p != 0 }},
		{name: "explicit", udpListen: "127.0.0.1:0", udpPort: takenPort, listen: "127.0.0.1:0",
			wantPort: func(p uint16) bool { return p != 0 }},
		{name: "explicit, taken", udpListen: "127.0.0.1:0", udpPort: freePort, listen: taken.Addr().String(), wantErr: "-tcp-listen"},
		{name: "off", udpListen: "127.0.0.1:0", udpPort: freePort, listen: tcpOff},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tcpConfig{listenAddr: tc.listen}
			udpPublic := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tc.udpPort)}
			ln, public, err := c.listen(t.Context(), tc.udpListen, udpPublic[0], udpPublic, false)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.listen == tcpOff {
				if ln != nil || len(public) != 0 {
					t.Fatalf("off: listener %v, public %v", ln, public)
				}
				return
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
			if !tc.wantPort(port) {
				t.Errorf("bound port %d (UDP %d)", port, tc.udpPort)
			}
			if len(public) != 1 || public[0] != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port) {
				t.Errorf("advertised %v, want 127.0.0.1:%d", public, port)
			}
		})
	}
}

// TestRunTCP starts the relay binary with ICE-TCP on (by default, on an
// explicit port advertised as 443) and off: the listener comes up and is in
// the ready file, AllocateSession returns a tcptype passive candidate for
// the advertised address after the UDP one, and the port closes at exit.
func TestRunTCP(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	tests := []struct {
		name string
		args []string
		// wantPublic is the advertised TCP address, with BOUND for the
		// bound one; empty when TCP is off.
		wantPublic string
		samePort   bool // the TCP port is the UDP port's number
	}{
		{name: "default", wantPublic: "BOUND", samePort: true},
		{name: "explicit listen advertised as 443", args: []string{"-tcp-listen", "127.0.0.1:0", "-public-tcp-addr", "127.0.0.1:443"}, wantPublic: "127.0.0.1:443"},
		{name: "off", args: []string{"-tcp-listen", "off"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ready.json")
			env := map[string]string{"RTCEDGE_ETCD_ENDPOINTS": etcd.Endpoints()[0], "RTCEDGE_READY_FILE": path}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			ready := make(chan [2]string, 1)
			go func() {
				done <- run(ctx, append([]string{"-udp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-http-listen", "127.0.0.1:0",
					"-relay-id", fmt.Sprintf("tcp-relay-%d", i), "-log-level", "warn"}, tc.args...), func(k string) string { return env[k] }, ready)
			}()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("run: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("run was not ready within 30s")
			}
			r, err := cli.ReadReadyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantPublic == "" {
				if len(r.TCP) != 0 || len(r.PublicTCP) != 0 {
					t.Errorf("TCP off, ready file %+v", r)
				}
			} else {
				if len(r.TCP) != 1 || len(r.PublicTCP) != 1 {
					t.Fatalf("ready file %+v: want one tcp and one public_tcp", r)
				}
				bound := netip.MustParseAddrPort(r.TCP[0])
				udp := netip.MustParseAddrPort(r.UDP[0])
				if tc.samePort && bound.Port() != udp.Port() {
					// The kernel chose the UDP port; its number may have
					// been taken for TCP (then any port is right).
					t.Logf("TCP port %d, UDP port %d: the UDP port's number was taken", bound.Port(), udp.Port())
				}
				want := strings.ReplaceAll(tc.wantPublic, "BOUND", bound.String())
				if r.PublicTCP[0] != want {
					t.Errorf("public_tcp %v, want %s", r.PublicTCP, want)
				}
				// The listener is up.
				c, err := net.DialTimeout("tcp", bound.String(), 5*time.Second)
				if err != nil {
					t.Fatalf("dial the TCP port: %v", err)
				}
				_ = c.Close()
			}

			conn, err := grpc.NewClient(r.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			resp, err := relayv1.NewRelayServiceClient(conn).AllocateSession(t.Context(), &relayv1.AllocateSessionRequest{
				Stream: "v/live/tcp", Direction: relayv1.Direction_DIRECTION_PUBLISH,
				ClientIce:       &relayv1.IceCredentials{Ufrag: fmt.Sprintf("cli%d", i), Pwd: "clientpasswordclientpassword"},
				OriginIce:       &relayv1.IceCredentials{Ufrag: fmt.Sprintf("ori%d", i), Pwd: "originpasswordoriginpassword"},
				OriginAddresses: []string{"127.0.0.1:9"},
			})
			if err != nil {
				t.Fatal(err)
			}
			var tcpCands []*relayv1.Candidate
			for i, c := range resp.GetCandidates() {
				switch c.GetProtocol() {
				case "udp":
					if len(tcpCands) > 0 {
						t.Errorf("UDP candidate %d after a TCP one: %v", i, resp.GetCandidates())
					}
					if net.JoinHostPort(c.GetAddress(), fmt.Sprint(c.GetPort())) != r.Public[0] {
						t.Errorf("UDP candidate %v, want %s", c, r.Public[0])
					}
				case "tcp":
					tcpCands = append(tcpCands, c)
				default:
					t.Errorf("candidate %v", c)
				}
			}
			if tc.wantPublic == "" {
				if len(tcpCands) != 0 {
					t.Errorf("TCP off, candidates %v", resp.GetCandidates())
				}
			} else if len(tcpCands) != 1 || tcpCands[0].GetTcpType() != "passive" || tcpCands[0].GetType() != "host" ||
				net.JoinHostPort(tcpCands[0].GetAddress(), fmt.Sprint(tcpCands[0].GetPort())) != r.PublicTCP[0] ||
				tcpCands[0].GetPriority() >= resp.GetCandidates()[0].GetPriority() {
				t.Errorf("candidates %v: want one tcptype passive host candidate for %v below the UDP one", resp.GetCandidates(), r.PublicTCP)
			}

			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the ready file outlived the process: %v", err)
			}
			if len(r.TCP) > 0 {
				if c, err := net.DialTimeout("tcp", r.TCP[0], time.Second); err == nil {
					_ = c.Close()
					t.Errorf("the TCP port %s still accepts after the exit", r.TCP[0])
				}
			}
		})
	}
}
