// Package mediarelay is rtcedge's media relay: one public UDP port shared by
// every session, and one connected UDP socket per session toward its origin.
//
// A session exists only through Allocate (the gRPC AllocateSession). It is
// keyed by the ICE ufrag pair the client uses: a client's STUN Binding
// request whose USERNAME is "<server-ufrag>:<client-ufrag>" and whose
// MESSAGE-INTEGRITY verifies with the server ice-pwd (and FINGERPRINT, when
// present) proves the request's source address. The server credentials are
// the origin's, until the edge answers an ICE restart itself (see below).
//
// # Paths and the selected path
//
// Real clients have several candidates (one host candidate per interface,
// server-reflexive, IPv6) and keep checking their backup pairs after ICE
// has selected one: Chromium about every 25 s, without USE-CANDIDATE, while
// media stays on the selected pair; libnice checks nothing once connected.
// So a session keeps a set of paths, not one address:
//
//   - Every address from which a verified Binding request arrived is a path
//     of the session (RFC 8445 section 7.3: a check that succeeds makes a
//     valid pair). Packets from any path are forwarded to the origin;
//     nothing from any other address ever is. A replay of a verified
//     request from another address proves nothing (its transaction is
//     remembered with its source) and is dropped.
//   - At most MaxPaths paths; a new one evicts the least recently active
//     path other than the selected one, so a flood of verified checks from
//     new ports costs that session's bound, and cannot move its selected
//     path. A path that carries nothing, neither checks nor media, for
//     PathIdleTimeout is dropped, not the session. A path that carries
//     media stays valid without checks.
//   - Downstream (everything the origin sends) goes to the selected path
//     only. The first verified check selects its path. After that the
//     selected path moves only when (a) a verified check carrying
//     USE-CANDIDATE arrives from another path: the controlling agent
//     (in WHIP and WHEP always the client, the offerer, or the full agent
//     facing an ICE-lite origin) nominates a pair (RFC 8445 section 8.1.1;
//     renomination repeats it), or (b) DTLS, RTP or RTCP arrives from
//     another path while the selected one has carried no media for
//     mediaSwitchAfter: a client that switched paths without nominating
//     (aggressive nomination in libnice, a network change, an ICE restart)
//     shows it by sending its media there (RFC 8445 section 10's consent
//     and keepalive traffic never moves it). A plain check on a backup
//     pair selects nothing. If the selected path expires, the most recently
//     active remaining path is selected.
//   - The origin's answer to a check goes back to the path that sent that
//     check (matched by STUN transaction ID in a small per-session table),
//     or the client's check on that pair would fail.
//
// # ICE-TCP: clients that cannot use UDP
//
// ServeTCP accepts TCP connections on the relay's TCP port, which the
// relay advertises as "tcptype passive" host candidates (Config.PublicTCPAddrs,
// after the UDP candidates and with a lower priority, RFC 6544 section 4.2:
// local preference 2^13 * 4 + other-pref). Every packet on a connection is
// framed with a two-byte length (RFC 4571); a frame longer than
// MaxPacketSize closes the connection. The origin side stays UDP, so any
// origin serves TCP-only clients and origins need not be reachable from
// clients at all.
//
//   - A connection proves itself as a UDP address does: its first frame must
//     be a STUN Binding request whose USERNAME names a session and whose
//     MESSAGE-INTEGRITY (and FINGERPRINT, when present) verifies, within
//     TCPVerifyTimeout of the accept, the whole frame included (a slowloris
//     gets no more time). A USERNAME the relay does not know is looked up
//     in the registry within that time. Anything else closes the
//     connection, counted by reason. A transaction is remembered with its
//     connection: a check replayed on another connection, or captured on
//     UDP and replayed over TCP, proves nothing.
//   - A verified connection is one more path of its session, identified by
//     the connection (not by its address: a UDP datagram from the same
//     address proves nothing), under the rules above: it is selected by
//     the first check, by USE-CANDIDATE or by media while the selected path
//     is silent, counts against MaxPaths (an evicted or expired TCP path's
//     connection is closed), and is a path of that session only (a check
//     for another session on it fails). Its frames go to the origin over
//     the session's socket, STUN translated and re-signed as for UDP; the
//     origin's answer to a check on it comes back on it, with
//     XOR-MAPPED-ADDRESS = the connection's remote address.
//   - TCP paths are not written to the registry: a connection does not
//     survive the relay process. After a restart the client connects again
//     (or its ICE agent moves to another pair) and verifies anew.
//   - The data plane never waits on a TCP socket: what goes to a selected
//     TCP path is framed and, while nothing is queued for the connection,
//     written at once by the thread that handles the origin's packet, one
//     non-blocking write (Linux; no goroutine woken). What the socket does
//     not take at once (the tail of a short write, or the whole frame) is
//     queued in a pooled frame without blocking (at most TCPWriteQueue
//     frames per connection), and so is every frame after it until the
//     connection's writer goroutine, which writes the queue in batches
//     (writev), has emptied it: frames never overtake each other. A client
//     that reads slower than its media arrives loses packets, counted, and
//     one that stops reading for TCPIdleTimeout is closed; so is one that
//     sends nothing for that long.
//   - Limits: TCPMaxConns connections in all, TCPMaxConnsPerIP from one IP
//     (one /64 for IPv6), refused at accept and counted. A connection costs
//     a reader goroutine and a 2 KiB frame buffer; once something had to be
//     queued, its queue (TCPWriteQueue pointers) and, while there is
//     something to write and for tcpWriterLinger after, a writer goroutine.
//     Frames and STUN scratch space come from pools. An idle verified
//     connection costs about 9 KiB (BenchmarkTCPIdleSessionMemory) on top
//     of its session.
//
// # What clients learn
//
// A Binding success response carries the requester's address as the
// responder saw it (RFC 8489 section 14.2). Passed through unchanged, the
// origin's responses would tell clients the relay's per-session socket
// toward the origin (Chromium reports it as its own prflx candidate). The
// relay verifies each origin response with the origin's ice-pwd (one that
// does not verify is dropped, not rewritten), sets XOR-MAPPED-ADDRESS to
// the client path's address as the relay saw it, re-signs it with the key
// the client's request was signed with and recomputes FINGERPRINT, all
// with pion/stun and without allocating.
//
// # Restarts the origin never sees
//
// signaling answers an ICE restart itself: the client gets new server
// credentials, the origin keeps its own and the client's original ones.
// From then on the relay translates: a client check ("<new-server>:<new-
// client>", signed with the new server pwd) reaches the origin as
// "<origin>:<original-client>" signed with the origin's pwd; the origin's
// response is re-signed with the new server pwd; a full-ICE origin's check
// toward the client is re-addressed to the client's new credentials and
// signed with its new pwd, and the client's response re-signed with the
// original client pwd. Paths verified before the restart may go on checking
// with the previous credentials until the client nominates a new path. A
// restart onto another relay (the session record moved in the registry) is
// just as invisible to the origin, which sees a new source that passes its
// own checks. That source is a new peer-reflexive candidate of the client
// with the PRIORITY of the client's checks, the same as the old relay's,
// and an origin that takes a newly nominated pair only when its priority is
// strictly higher (pion/ice: MediaMTX, the demo origin) would go on sending
// to the relay the session left. So the relay raises the PRIORITY of the
// checks it forwards by the session's moves (registry.Session.Moves,
// counted by RekeySession), re-signed with the origin's pwd
// (TestProcPlayerMovedToAnotherRelay).
//
// # The data path
//
// The per-packet decision (decideClientPacket) is a pure function of the
// packet, its source, the session tables and the time; the socket loops
// around it only read, look up and write. Packets are classified by their
// first byte (RFC 7983): only STUN is parsed, and from a path only STUN,
// DTLS and RTP/RTCP are forwarded. The public sockets are read in batches
// (recvmmsg on Linux, see internal/udpbatch) into reused buffers;
// forwarding, STUN rewriting included, allocates nothing per packet.
// Sessions end by Release, by the idle timeout (only forwarded traffic is
// activity; dropped packets are not), or by a Drain deadline; each frees
// its socket, its goroutine, its table entries and its registry record. A
// record whose removal fails (etcd unreachable) is removed in the
// background, retried with backoff (1 s doubling to 5 s) until it is gone,
// unless it names another relay by then or a new session under the same id
// (rtcedge_relay_pending_record_removals counts them).
//
// # Data-plane threads: one port, every core
//
// The default data plane (DataPlaneThread, Linux) runs
// Config.DataPlaneThreads OS threads (default: the cores the process may
// use minus one, at least 1), each blocked in epoll_wait on a set of its
// own, outside the Go scheduler. Each thread owns:
//
//   - one socket of an SO_REUSEPORT group on the public port (ListenUDP
//     opens one per thread, all bound to the same address and port). The
//     kernel hashes each client's source address and port to one socket of
//     the group, so each path is read by one thread; a session with several
//     paths, or whose client changes port (a new path, a NAT rebinding),
//     may be read by several, and keeps its session: the tables are the
//     relay's, not a thread's.
//   - the sockets toward origins of its share of the sessions: a session's
//     socket goes, when it is opened, to the thread that reads the fewest.
//
// Nothing is handed from one thread to another. A client's packet is
// handled entirely on the thread that read it: the decision, and the write
// to the session's socket toward its origin, whichever thread reads that
// socket (a write on a connected UDP socket is safe from any thread). An
// origin's packet is handled on the thread that reads the session's socket:
// it goes to the selected path through that thread's own socket of the
// public address the path arrived on (every socket of the group has the
// same address and port, so the client sees one source whichever thread
// sends), or is written to a selected TCP path's connection from that
// thread (queued for its writer when the socket does not take it at once). No lock
// is shared by the threads per packet: the tables are copy-on-write shards
// behind atomic pointers, counters are per session or per thread
// (rtcedge_relay_data_plane_packets_total{thread}), and each thread has
// its own receive buffers, batch writers and STUN scratch space; a poller's
// own mutex is taken by its thread and by the control plane opening and
// closing sockets. What threads do share is the cache lines of a session
// whose client is read on one thread and whose origin socket on another
// ((N-1)/N of sessions with N threads); docs/PERFORMANCE.md has what that
// costs, measured, and the designs that would avoid it and why they were
// not taken (moving a session's socket to its selected path's thread, a
// queue per thread, a reuseport BPF program steering clients).
//
// A thread that stops on an error ends Serve with that error and closes
// the relay, as one data plane did: a relay that forwards for some
// sessions only must not go on looking healthy. Serve raises GOMAXPROCS to
// one more than the data-plane threads in the process: each keeps a P
// while it waits.
//
// With a registry the relay registers itself under a lease, writes its
// sessions to etcd (with their verified paths, rate-limited and off the
// forwarding path), reloads them when it restarts with the same id, so
// media from a previously verified path flows at once, consent checks or
// not, and may adopt a session assigned to it that it does not know yet
// (one etcd lookup per unknown USERNAME, behind a negative cache and a rate
// limit, off the forwarding path).
package mediarelay
