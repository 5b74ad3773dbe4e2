package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/rtcedge/rtcedge/internal/cli"
	"github.com/rtcedge/rtcedge/mediarelay"
)

// tcpOff is the -tcp-listen value that turns ICE-TCP off.
const tcpOff = "off"

// tcpConfig is the ICE-TCP port's flags (issue 16): where it listens, what
// the answers advertise, and the relay's limits on connections.
type tcpConfig struct {
	listenAddr    string
	publicAddrs   cli.StringList
	maxConns      int
	maxConnsPerIP int
	verifyTimeout time.Duration
	idleTimeout   time.Duration
	writeQueue    int
}

func (c *tcpConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.listenAddr, "tcp-listen", "", "ICE-TCP address for clients that cannot use UDP (RFC 6544 passive, RFC 4571 framing); "+
		"unset: -udp-listen's host with the bound UDP port's number (with a UDP port of 0: that number when free, else any); "+
		"host:port to choose; \"off\" disables ICE-TCP")
	fs.Var(&c.publicAddrs, "public-tcp-addr", "advertised ip:port clients reach the ICE-TCP port on (one tcptype passive candidate each), "+
		"e.g. 203.0.113.7:443 behind a load balancer or NAT; repeatable or comma-separated; a bare IP takes the bound TCP port; "+
		"unset: the advertised UDP addresses when the TCP port has the UDP port's number (a NAT or published port maps both alike), else their IPs with the bound TCP port")
	fs.IntVar(&c.maxConns, "tcp-max-conns", mediarelay.DefaultTCPMaxConns, "maximum open ICE-TCP connections, verified or not; more are closed at accept")
	fs.IntVar(&c.maxConnsPerIP, "tcp-max-conns-per-ip", mediarelay.DefaultTCPMaxConnsPerIP, "maximum open ICE-TCP connections from one source IP, an IPv6 one counted by its /64 (at most -tcp-max-conns)")
	fs.DurationVar(&c.verifyTimeout, "tcp-verify-timeout", mediarelay.DefaultTCPVerifyTimeout, "time a new ICE-TCP connection has to send its first frame, a Binding request whose MESSAGE-INTEGRITY verifies; else it is closed")
	fs.DurationVar(&c.idleTimeout, "tcp-idle-timeout", mediarelay.DefaultTCPIdleTimeout, "close a verified ICE-TCP connection that sent nothing for this long (clients send consent checks every few seconds), or whose writes did not complete for this long (a client that stopped reading)")
	fs.IntVar(&c.writeQueue, "tcp-write-queue", mediarelay.DefaultTCPWriteQueue, "packets queued toward one ICE-TCP connection; beyond it packets are dropped and counted, the data plane never waits on a TCP socket")
}

// off reports whether ICE-TCP is disabled.
func (c *tcpConfig) off() bool { return c.listenAddr == tcpOff }

func (c *tcpConfig) validate() error {
	if !c.off() && c.listenAddr != "" {
		_, port, err := net.SplitHostPort(c.listenAddr)
		if err != nil {
			return fmt.Errorf("-tcp-listen %q: want host:port or %q: %w", c.listenAddr, tcpOff, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("-tcp-listen %q: want a port 0-65535", c.listenAddr)
		}
	}
	if c.off() && len(c.publicAddrs) > 0 {
		return fmt.Errorf("-public-tcp-addr %s with -tcp-listen %s: nothing would accept the connections", c.publicAddrs.String(), tcpOff)
	}
	for _, s := range c.publicAddrs {
		if _, err := parsePublic(s, 0); err != nil {
			return fmt.Errorf("-public-tcp-addr %q: want ip or ip:port", s)
		}
	}
	switch {
	case c.maxConns < 1:
		return fmt.Errorf("-tcp-max-conns %d: want at least 1", c.maxConns)
	case c.maxConnsPerIP < 1 || c.maxConnsPerIP > c.maxConns:
		return fmt.Errorf("-tcp-max-conns-per-ip %d: want 1 to -tcp-max-conns (%d)", c.maxConnsPerIP, c.maxConns)
	case c.verifyTimeout < 100*time.Millisecond || c.verifyTimeout > time.Minute:
		return fmt.Errorf("-tcp-verify-timeout %s: want 100ms to 1m", c.verifyTimeout)
	case c.idleTimeout < time.Second:
		return fmt.Errorf("-tcp-idle-timeout %s: want at least 1s", c.idleTimeout)
	case c.writeQueue < 1 || c.writeQueue > 1<<16:
		return fmt.Errorf("-tcp-write-queue %d: want 1 to 65536", c.writeQueue)
	}
	return nil
}

// parsePublic reads an advertised address: ip:port, or a bare IP taking
// port.
func parsePublic(s string, port uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a.Unmap(), port), nil
}

// listen binds the ICE-TCP port and returns it with the addresses to
// advertise; nil and none when ICE-TCP is off. udpListen is -udp-listen,
// udpBound the UDP port it bound and udpPublic what the relay advertises
// for it. takeover joins the port of a running relay of the same id
// (mediarelay.ListenTCP).
func (c *tcpConfig) listen(ctx context.Context, udpListen string, udpBound netip.AddrPort, udpPublic []netip.AddrPort, takeover bool) (net.Listener, []netip.AddrPort, error) {
	if c.off() {
		return nil, nil, nil
	}
	addr := c.listenAddr
	if addr == "" {
		host, port, err := net.SplitHostPort(udpListen)
		if err != nil {
			return nil, nil, fmt.Errorf("-udp-listen %q: %w", udpListen, err)
		}
		addr = net.JoinHostPort(host, strconv.Itoa(int(udpBound.Port())))
		ln, err := mediarelay.ListenTCP(ctx, "tcp", addr, takeover)
		if err != nil && (port == "0" || port == "") && errors.Is(err, syscall.EADDRINUSE) {
			// The kernel picked the UDP port; its number is taken for TCP.
			addr = net.JoinHostPort(host, "0")
			ln, err = mediarelay.ListenTCP(ctx, "tcp", addr, takeover)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("ICE-TCP on the UDP port's number, %s: %w (set -tcp-listen, or -tcp-listen %s)", addr, err, tcpOff)
		}
		return c.advertise(ln, udpBound.Port(), udpPublic)
	}
	ln, err := mediarelay.ListenTCP(ctx, "tcp", addr, takeover)
	if err != nil {
		return nil, nil, fmt.Errorf("-tcp-listen %s: %w", addr, err)
	}
	return c.advertise(ln, udpBound.Port(), udpPublic)
}

// advertise returns ln with the addresses the relay advertises for it:
// -public-tcp-addr; else, when ln has the UDP port's number (udpPort), the
// UDP public addresses themselves (whatever maps the UDP port to a public
// one, a NAT or Docker's -p, maps the TCP port of the same number alike);
// else the UDP public addresses' IPs with ln's port.
func (c *tcpConfig) advertise(ln net.Listener, udpPort uint16, udpPublic []netip.AddrPort) (net.Listener, []netip.AddrPort, error) {
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	add := func(ap netip.AddrPort) {
		if !seen[ap] {
			seen[ap] = true
			out = append(out, ap)
		}
	}
	for _, s := range c.publicAddrs {
		ap, err := parsePublic(s, port)
		if err != nil {
			_ = ln.Close()
			return nil, nil, fmt.Errorf("-public-tcp-addr %q: want ip or ip:port", s)
		}
		add(ap)
	}
	if len(out) == 0 {
		for _, u := range udpPublic {
			if port == udpPort {
				add(u)
			} else {
				add(netip.AddrPortFrom(u.Addr(), port))
			}
		}
	}
	return ln, out, nil
}
