package mediarelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// errReusePort marks a failure to set SO_REUSEPORT.
var errReusePort = errors.New("SO_REUSEPORT")

// ListenUDP opens n UDP sockets on addr. On Linux they share the port with
// SO_REUSEPORT, so the kernel spreads clients over them by source address
// and port (one per data-plane thread, or one per reader goroutine); where
// that is unsupported (another OS, or a kernel or sandbox that refuses the
// option), or n <= 1, it opens one. buf > 0 sets the sockets' receive and
// send buffers (past net.core.rmem_max when the process has CAP_NET_ADMIN);
// ReceiveBuffer tells what the kernel granted.
//
// Sockets with SO_REUSEPORT would also share a port with another process
// of the same user that holds it the same way, each getting a share of the
// clients. So before it opens several on a fixed port, ListenUDP checks
// that nobody holds the port (a socket without the option must be able to
// bind it): a second relay started on a port in use fails, as it does with
// one socket.
func ListenUDP(ctx context.Context, network, addr string, n, buf int) ([]net.PacketConn, error) {
	if n < 1 || !reusePortSupported {
		n = 1
	}
	if n > 1 {
		if err := checkPortFree(ctx, network, addr); err != nil {
			return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, err)
		}
		conns, err := listenUDP(ctx, network, addr, n, buf, reusePortControl)
		if !errors.Is(err, errReusePort) {
			return conns, err
		}
		// The capability is missing: one socket, one reading thread.
	}
	return listenUDP(ctx, network, addr, 1, buf, nil)
}

// checkPortFree fails when addr names a port that a socket is bound to
// already; a port of 0 is always free.
func checkPortFree(ctx context.Context, network, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if p, err := netip.ParseAddrPort("0.0.0.0:" + port); err == nil && p.Port() == 0 {
		return nil
	}
	var lc net.ListenConfig
	c, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func listenUDP(ctx context.Context, network, addr string, n, buf int, control func(string, string, syscall.RawConn) error) ([]net.PacketConn, error) {
	lc := net.ListenConfig{Control: control}
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
