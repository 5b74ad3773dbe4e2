package mediarelay

import (
	"context"
	"fmt"
	"net"
)

// ListenUDP opens n UDP sockets on addr. On Linux they share the port with
// SO_REUSEPORT, so the kernel spreads clients over n reader goroutines; where
// that is unsupported, or n <= 1, it opens one. buf > 0 sets the sockets'
// receive and send buffers (past net.core.rmem_max when the process has
// CAP_NET_ADMIN); ReceiveBuffer tells what the kernel granted.
func ListenUDP(ctx context.Context, network, addr string, n, buf int) ([]net.PacketConn, error) {
	if n < 1 || !reusePortSupported {
		n = 1
	}
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = reusePortControl
	}
	conns := make([]net.PacketConn, 0, n)
	for i := 0; i < n; i++ {
		listenAddr := addr
		if i > 0 {
			// Every further socket binds exactly where the first one did
			// (a ":0" port must not pick a new one).
			listenAddr = conns[0].LocalAddr().String()
		}
		c, err := lc.ListenPacket(ctx, network, listenAddr)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, err)
		}
		if u, ok := c.(*net.UDPConn); ok && buf > 0 {
			setSocketBuffers(u, buf)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// ReceiveBuffer returns the usable receive buffer of c in bytes (on Linux
// as the kernel granted it, capped by net.core.rmem_max without
// CAP_NET_ADMIN); 0 when unknown.
func ReceiveBuffer(c net.PacketConn) int {
	u, ok := c.(*net.UDPConn)
	if !ok {
		return 0
	}
	return receiveBuffer(u)
}
