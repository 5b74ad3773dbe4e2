//go:build !linux

package udpbatch

import (
	"net"
	"net/netip"
)

// Writer is Linux-only; NewWriter fails elsewhere.
type Writer struct{}

// NewWriter returns ErrPollerUnsupported off Linux.
func NewWriter(*net.UDPConn, int) (*Writer, error) { return nil, ErrPollerUnsupported }

// Add is unreachable off Linux.
func (w *Writer) Add([]byte, netip.AddrPort) (full, ok bool) { return false, false }

// Queued is unreachable off Linux.
func (w *Writer) Queued() int { return 0 }

// Flush is unreachable off Linux.
func (w *Writer) Flush() (sent, dropped int) { return 0, 0 }

// Failed is unreachable off Linux.
func (w *Writer) Failed(int) bool { return false }

// NewWriterFD returns ErrPollerUnsupported off Linux.
func NewWriterFD(int, int) (*Writer, error) { return nil, ErrPollerUnsupported }
