package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
)

// Message is one received datagram: its payload is Buf[:N], sent from Addr.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
}

// Reader reads datagrams from one UDP socket into reused buffers. A Reader
// is not safe for concurrent use: each socket gets its own reader goroutine.
type Reader struct {
	conn  *net.UDPConn
	msgs  []Message
	batch *batchState // nil: one datagram per call
}

// NewReader returns a reader of up to batch datagrams per call, each at
// most size bytes (a longer one is truncated to size, so pass one byte more
// than the largest datagram accepted and drop those that fill the buffer).
// batch <= 1, or a platform without recvmmsg, reads one at a time.
func NewReader(c *net.UDPConn, batch, size int) (*Reader, error) {
	if size < 1 {
		return nil, fmt.Errorf("udpbatch: buffer size %d", size)
	}
	batch = max(batch, 1)
	r := &Reader{conn: c}
	if batch > 1 {
		b, err := newBatchState(c, batch, size)
		if err != nil {
			return nil, err
		}
		r.batch = b
		r.msgs = b.msgs
		return r, nil
	}
	r.msgs = []Message{{Buf: make([]byte, size)}}
	return r, nil
}

// Batched reports whether the reader uses a multi-datagram system call.
func (r *Reader) Batched() bool { return r.batch != nil }

// Read blocks until at least one datagram arrives and returns the
// datagrams read; the slice and its buffers are valid until the next Read.
// It returns an error wrapping net.ErrClosed once the socket is closed.
func (r *Reader) Read() ([]Message, error) {
	if r.batch != nil {
		n, err := r.batch.read()
		if err != nil {
			return nil, err
		}
		return r.msgs[:n], nil
	}
	m := &r.msgs[0]
	n, addr, err := r.conn.ReadFromUDPAddrPort(m.Buf)
	if err != nil {
		return nil, err
	}
	m.N, m.Addr = n, addr
	return r.msgs[:1], nil
}
