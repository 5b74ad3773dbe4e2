// Package mediarelay is rtcedge's media relay: one public UDP port shared by
// every session, and one connected UDP socket per session toward its origin.
//
// A session exists only through Allocate (the gRPC AllocateSession). It is
// keyed by its ICE ufrag pair: a client's STUN Binding request whose
// USERNAME is "<origin-ufrag>:<client-ufrag>" and whose MESSAGE-INTEGRITY
// verifies with the origin's ice-pwd (and FINGERPRINT, when present) binds
// the session to the request's source address, or moves it there (consent
// freshness, RFC 7675). A STUN that does not verify never changes the
// address. Everything from a bound address (STUN, DTLS, SRTP, SRTCP) is
// forwarded to the origin unchanged; everything the origin sends to the
// session's socket goes back to the bound address from the public port.
//
// The per-packet decision (decideClientPacket) is a pure function of the
// packet, its source and the session tables; the socket loops around it only
// read, look up and write. Packets are classified by their first byte (RFC
// 7983): only STUN is parsed, and from a bound address only STUN, DTLS and
// RTP/RTCP are forwarded. The public sockets are read in batches (recvmmsg
// on Linux, see internal/udpbatch) into reused buffers; forwarding
// allocates nothing per packet. Sessions end by Release, by the idle timeout, or
// by a Drain deadline; each frees its socket, its goroutine, its table
// entries and its registry record.
//
// With a registry the relay registers itself under a lease, writes its
// sessions to etcd, reloads them when it restarts with the same id, and may
// adopt a session assigned to it that it does not know yet (one etcd lookup
// per unknown USERNAME, behind a negative cache and a rate limit, off the
// forwarding path).
package mediarelay
