package udpbatch

import (
	"errors"
	"net/netip"
)

// ErrPollerUnsupported is returned by NewPoller where the platform has no
// poller (anything but Linux); callers fall back to a goroutine per socket.
var ErrPollerUnsupported = errors.New("udpbatch: poller unsupported on this platform")

// Handler receives what a Poller reads. Buffers passed to Packets stay valid
// until EndBatch returns, so a handler may queue them (for a Writer) and
// flush in EndBatch. Both are called from the poller's goroutine only.
type Handler[T any] interface {
	// Packets delivers datagrams read from one socket; Buf[:N] is each
	// payload (Addr is unset: the socket is connected). A datagram of
	// len(Buf) bytes may have been truncated.
	Packets(c *Conn[T], msgs []Message)
	// EndBatch ends a round of reads.
	EndBatch()
}

// ConnInfo describes a socket opened by a Poller.
type ConnInfo struct {
	Local, Remote netip.AddrPort
}
