// Package udpbatch reads UDP datagrams several at a time where the platform
// allows it: recvmmsg(2) on Linux, one ReadFromUDPAddrPort per call
// elsewhere. Reading allocates nothing per datagram: buffers, headers and
// source-address storage are allocated once per Reader and reused.
//
// The Linux path issues recvmmsg through the socket's syscall.RawConn, so
// it shares the runtime poller with the net package (blocking reads park
// the goroutine; Close wakes it with net.ErrClosed). golang.org/x/net's
// ipv4.PacketConn.ReadBatch does the same but allocates a *net.UDPAddr per
// datagram, which the relay's hot path cannot afford.
package udpbatch
