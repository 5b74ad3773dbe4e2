//go:build !linux

package mediarelay

import (
	"net"
	"syscall"
)

const reusePortSupported = false

func reusePortControl(_, _ string, _ syscall.RawConn) error { return nil }

// setReusePort does nothing off Linux.
func setReusePort(*net.UDPConn) {}

// setSocketBuffers sets the socket's buffers to n bytes.
func setSocketBuffers(c *net.UDPConn, n int) {
	_ = c.SetReadBuffer(n)
	_ = c.SetWriteBuffer(n)
}

// receiveBuffer is unknown off Linux.
func receiveBuffer(*net.UDPConn) int { return 0 }
