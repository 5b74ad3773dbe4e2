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
// option) it opens one. buf > 0 sets the sockets' receive and send buffers
// (past net.core.rmem_max when the process has CAP_NET_ADMIN);
// ReceiveBuffer tells what the kernel granted.
//
// Sockets with SO_REUSEPORT would also share a port with another process
// of the same user that holds it the same way, each getting a share of the
// clients. So before it opens them on a fixed port, ListenUDP checks that
// nobody holds the port (a socket without the option must be able to bind
// it): a second relay started on a port in use fails, as it would with a
// plain socket. The option is set even on a single socket, so that a
// successor can join the port (ListenUDPTakeover).
func ListenUDP(ctx context.Context, network, addr string, n, buf int) ([]net.PacketConn, error) {
	return listenShared(ctx, network, addr, n, buf, false)
}

// ListenUDPTakeover is ListenUDP for a relay that replaces a running one of
// the same id on this host without a gap (the relay's -takeover): it joins
// the port that relay holds (SO_REUSEPORT, same user) instead of failing,
// and the kernel spreads clients over both processes' sockets until the old
// one closes its own. It fails with ErrTakeoverUnsupported where
// SO_REUSEPORT is unavailable. With nobody on the port it is ListenUDP.
func ListenUDPTakeover(ctx context.Context, network, addr string, n, buf int) ([]net.PacketConn, error) {
	return listenShared(ctx, network, addr, n, buf, true)
}

func listenShared(ctx context.Context, network, addr string, n, buf int, takeover bool) ([]net.PacketConn, error) {
	if n < 1 || !reusePortSupported {
		n = 1
	}
	if !reusePortSupported {
		if takeover {
			return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, ErrTakeoverUnsupported)
		}
		return listenUDP(ctx, network, addr, 1, buf, nil)
	}
	if !takeover {
		if err := checkPortFree(ctx, network, addr); err != nil {
			return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, err)
		}
	}
	conns, err := listenUDP(ctx, network, addr, n, buf, reusePortControl)
	if !errors.Is(err, errReusePort) {
		return conns, err
	}
	if takeover {
		return nil, fmt.Errorf("mediarelay: listen %s: %w: %w", addr, ErrTakeoverUnsupported, err)
	}
	// The capability is missing: one socket, one reading thread.
	return listenUDP(ctx, network, addr, 1, buf, nil)
}

// ListenTCP opens a TCP listener on addr (ICE-TCP, the admin API) with
// SO_REUSEPORT on Linux, so that a successor started with takeover can
// listen on the same port; after the same check as ListenUDP's that nobody
// holds the port, unless takeover is set (then it joins the running
// relay's listener: new connections are spread over both until the old one
// closes its own).
func ListenTCP(ctx context.Context, network, addr string, takeover bool) (net.Listener, error) {
	if !reusePortSupported {
		if takeover {
			return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, ErrTakeoverUnsupported)
		}
		var lc net.ListenConfig
		return lc.Listen(ctx, network, addr)
	}
	if !takeover {
		if err := checkTCPPortFree(ctx, network, addr); err != nil {
			return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, err)
		}
	}
	lc := net.ListenConfig{Control: reusePortControl}
	l, err := lc.Listen(ctx, network, addr)
	if errors.Is(err, errReusePort) && !takeover {
		var plain net.ListenConfig
		return plain.Listen(ctx, network, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("mediarelay: listen %s: %w", addr, err)
	}
	return l, nil
}

// checkPortFree fails when addr names a port that a socket is bound to
// already; a port of 0 is always free.
func checkPortFree(ctx context.Context, network, addr string) error {
	if zeroPort(addr) {
		return nil
	}
	var lc net.ListenConfig
	c, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// checkTCPPortFree is checkPortFree for a TCP listener.
func checkTCPPortFree(ctx context.Context, network, addr string) error {
	if zeroPort(addr) {
		return nil
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// zeroPort reports whether addr asks for any free port.
func zeroPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	p, err := netip.ParseAddrPort("0.0.0.0:" + port)
	return err == nil && p.Port() == 0
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
