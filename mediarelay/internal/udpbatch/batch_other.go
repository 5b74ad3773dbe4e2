//go:build !linux

package udpbatch

import "net"

// batchState is unused off Linux.
type batchState struct{ msgs []Message }

func newBatchState(*net.UDPConn, int, int) (*batchState, error) { return nil, nil }

func (*batchState) read() (int, error) { return 0, nil }
