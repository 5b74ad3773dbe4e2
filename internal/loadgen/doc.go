// Package loadgen is rtcedge's media load generator (issue 8): it measures
// how much CPU the media relay spends per forwarded packet, against a
// minimal C forwarder (test/cforward) as the baseline.
//
// It has three parts:
//
//   - Echo, a UDP origin that echoes every datagram to its sender and
//     answers STUN Binding requests as an ICE agent with fixed credentials
//     would, plus a WHIP endpoint over HTTP that answers offers with SDP
//     pointing at its UDP port;
//   - Run, the generator: N sessions, each with its own client UDP socket
//     (or, with TransportTCP, its own TCP connection to the relay's ICE-TCP
//     port, everything framed per RFC 4571), set up through a target (the
//     relay's gRPC API and STUN, the C forwarder, or the echo origin
//     directly), then RTP-shaped packets at a paced rate or with a fixed
//     window in flight (or none: Idle), measuring loss, round trip times,
//     the target process's CPU time per forwarded packet, its resident
//     memory per session, and the kernel's UDP buffer drops;
//   - Compare, which runs the C forwarder and the relay binary as fresh,
//     CPU-pinned child processes for each session count and tabulates both.
//
// The data path uses raw Linux syscalls: one epoll set over every client
// socket, recvmmsg batches (over TCP, reads into one buffer shared by every
// connection, a frame a read cut off carried in its connection's own), and
// one sender goroutine on a sorted schedule, so that thousands of sessions
// cost two goroutines, not thousands. It is Linux-only.
package loadgen
