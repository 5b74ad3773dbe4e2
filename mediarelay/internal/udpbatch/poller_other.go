//go:build !linux

package udpbatch

import (
	"errors"
	"net"
	"net/netip"
)

// Poller is Linux-only; NewPoller fails elsewhere.
type Poller[T any] struct{}

// Conn is a socket of a Poller.
type Conn[T any] struct {
	Value T
	ConnInfo
}

// NewPoller returns ErrPollerUnsupported off Linux.
func NewPoller[T any](batch, size int) (*Poller[T], error) { return nil, ErrPollerUnsupported }

// Dial is unreachable off Linux.
func (p *Poller[T]) Dial(netip.AddrPort, netip.AddrPort, int, T) (*Conn[T], error) {
	return nil, ErrPollerUnsupported
}

// DialShared is unreachable off Linux.
func (p *Poller[T]) DialShared(netip.AddrPort, netip.AddrPort, int, T) (*Conn[T], error) {
	return nil, ErrPollerUnsupported
}

// Run is unreachable off Linux.
func (p *Poller[T]) Run(Handler[T]) error { return ErrPollerUnsupported }

// Close is unreachable off Linux.
func (p *Poller[T]) Close() error { return nil }

// Len is unreachable off Linux.
func (p *Poller[T]) Len() int { return 0 }

// Write is unreachable off Linux.
func (c *Conn[T]) Write([]byte) error { return net.ErrClosed }

// Close is unreachable off Linux.
func (c *Conn[T]) Close() error { return nil }

// ErrNotThreadPoller is returned by AddSource on a runtime-poller Poller.
var ErrNotThreadPoller = errors.New("udpbatch: sources need a thread poller")

// NewThreadPoller returns ErrPollerUnsupported off Linux.
func NewThreadPoller[T any](batch, size int) (*Poller[T], error) { return nil, ErrPollerUnsupported }

// AddSource is unreachable off Linux.
func (p *Poller[T]) AddSource(int, func([]Message)) error { return ErrPollerUnsupported }

// TakeFD returns ErrPollerUnsupported off Linux.
func TakeFD(*net.UDPConn) (int, error) { return -1, ErrPollerUnsupported }

// CloseFD is unreachable off Linux.
func CloseFD(int) error { return ErrPollerUnsupported }
