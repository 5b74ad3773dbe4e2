package mediarelay

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"runtime"
	"time"

	"github.com/rtcedge/rtcedge/internal/bearer"
	"github.com/rtcedge/rtcedge/registry"
)

// Defaults of Config.
const (
	DefaultIdleTimeout = 30 * time.Second
	DefaultRelayTTL    = 10 * time.Second
	// PathIdleTimeout drops a session's verified client path that carried
	// nothing (no check, no media) for that long; the session stays.
	PathIdleTimeout = 30 * time.Second
	// MaxPaths bounds a session's verified client paths; a new one evicts
	// the least recently active path other than the selected one.
	MaxPaths = registry.MaxClientPaths
	// MaxPacketSize is the largest datagram relayed; larger ones are
	// truncated by the socket read and dropped.
	MaxPacketSize = 1500
	// readBatch is how many datagrams one read of a public socket takes.
	readBatch = 32

	// DefaultTCPMaxConns is Config.TCPMaxConns's default: open ICE-TCP
	// connections, verified or not, across the relay.
	DefaultTCPMaxConns = 4096
	// DefaultTCPMaxConnsPerIP is Config.TCPMaxConnsPerIP's default: open
	// connections from one source IP (a corporate NAT puts many clients
	// behind one address, so it is not 1).
	DefaultTCPMaxConnsPerIP = 64
	// DefaultTCPVerifyTimeout is Config.TCPVerifyTimeout's default: how long
	// a new connection has to deliver a verified Binding request.
	DefaultTCPVerifyTimeout = 5 * time.Second
	// DefaultTCPIdleTimeout is Config.TCPIdleTimeout's default: a verified
	// connection that sends nothing for that long is closed (clients send
	// consent checks every few seconds, RFC 7675).
	DefaultTCPIdleTimeout = 30 * time.Second
	// DefaultTCPWriteQueue is Config.TCPWriteQueue's default: packets
	// waiting for a connection's writer; more are dropped and counted.
	DefaultTCPWriteQueue = 128
)

// Config configures a Relay.
type Config struct {
	// RelayID identifies the relay in the registry: 1-64 of [A-Za-z0-9._-].
	// Required when Registry is set.
	RelayID string
	// Zone is the relay's locality label, used by signaling's relay choice.
	Zone string
	// PublicAddrs are the addresses clients reach the public port on, one
	// candidate each; at least one.
	PublicAddrs []netip.AddrPort
	// GRPCAddress is the host:port signaling dials for this relay's API,
	// written into the relay registration.
	GRPCAddress string
	// IdleTimeout ends a session that received nothing from its client for
	// that long; default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxSessions limits open sessions; 0 is unlimited.
	MaxSessions int
	// Registry, when set, persists sessions and the relay's registration in
	// etcd. nil runs the relay stand-alone.
	Registry *registry.Client
	// RegistrationTTL is the relay lease TTL; default DefaultRelayTTL.
	RegistrationTTL time.Duration
	// Logger receives the relay's logs; nil uses slog.Default().
	Logger *slog.Logger
	// Version is reported by GetStatus and in the registration.
	Version string
	// SocketBuffer sets SO_RCVBUF and SO_SNDBUF of the per-session sockets
	// (ListenUDP takes its own for the public ones); 0 keeps the kernel's.
	SocketBuffer int
	// LookupRate bounds registry lookups for unknown USERNAMEs per second;
	// default 20.
	LookupRate int
	// DataPlane is how packets are read and written: DataPlaneThread (the
	// default), DataPlaneNetpoll or DataPlaneGoroutines. Off Linux it is
	// always DataPlaneGoroutines.
	DataPlane string
	// DataPlaneThreads is how many data-plane threads DataPlaneThread
	// runs (the other planes ignore it); 0 is DefaultDataPlaneThreads().
	// Each thread reads its share of the public sockets Serve gets (give
	// it this many SO_REUSEPORT sockets of the one port, ListenUDP) and of
	// the sessions' sockets toward their origins; see the package doc.
	DataPlaneThreads int
	// PublicTCPAddrs are the addresses clients reach the TCP port
	// (ServeTCP) on, one ICE-TCP passive host candidate each, advertised
	// after the UDP ones with a lower priority (RFC 6544 section 4.2). Empty:
	// no TCP candidates (a relay may still ServeTCP, e.g. behind a load
	// balancer that signaling advertises).
	PublicTCPAddrs []netip.AddrPort
	// TCPMaxConns limits open TCP connections; default DefaultTCPMaxConns.
	// Connections beyond it are closed at once and counted.
	TCPMaxConns int
	// TCPMaxConnsPerIP limits open TCP connections from one source IP (for
	// IPv6, one /64); default DefaultTCPMaxConnsPerIP.
	TCPMaxConnsPerIP int
	// TCPVerifyTimeout is the time a new TCP connection has, from accept,
	// to send a STUN Binding request that verifies as its first frame;
	// default DefaultTCPVerifyTimeout. A connection that has not is closed.
	TCPVerifyTimeout time.Duration
	// TCPIdleTimeout closes a verified TCP connection that sent nothing for
	// that long, or whose writes did not complete for that long (a client
	// that stopped reading); default DefaultTCPIdleTimeout.
	TCPIdleTimeout time.Duration
	// TCPWriteQueue bounds the packets queued for one TCP connection's
	// writer (the data plane never waits on a TCP socket: beyond it packets
	// are dropped and counted); default DefaultTCPWriteQueue.
	TCPWriteQueue int
	// Admin says who may call the admin API (gRPC through the interceptors
	// of Admin.ServerOptions, which the caller installs on its grpc.Server,
	// and REST through HTTPHandler): the zero value allows loopback callers
	// only. /metrics, /healthz and /readyz stay open.
	Admin bearer.Policy
	// Takeover says that this relay replaces a running process of the same
	// RelayID on this host (its public sockets come from
	// ListenUDPTakeover): a session it restores binds its socket toward the
	// origin to the recorded address even while the old process holds it
	// (SO_REUSEPORT), so the origin keeps seeing the same source. Every
	// relay sets SO_REUSEPORT on its origin sockets once they are bound, so
	// that a successor can do this.
	Takeover bool
}

// Data planes of Config.DataPlane.
const (
	// DataPlaneThread serves the sockets (the public ones and every
	// session's socket toward its origin) from Config.DataPlaneThreads OS
	// threads of their own, each blocked in epoll_wait outside the Go
	// scheduler, with recvmmsg and sendmmsg: the cost of a minimal C
	// forwarder per thread (docs/PERFORMANCE.md). Serve takes the public
	// sockets' descriptors over, and raises GOMAXPROCS to one more than the
	// data-plane threads serving in the process (each thread keeps a P
	// while it waits).
	DataPlaneThread = "thread"
	// DataPlaneNetpoll reads each public socket from a goroutine and the
	// session sockets from one epoll-driven goroutine, through the Go
	// runtime's poller: about 1.4x the CPU per packet of DataPlaneThread.
	DataPlaneNetpoll = "netpoll"
	// DataPlaneGoroutines gives each public socket and each session socket
	// a reader goroutine: the portable path.
	DataPlaneGoroutines = "goroutines"
)

// MaxDataPlaneThreads bounds Config.DataPlaneThreads.
const MaxDataPlaneThreads = 256

// initialProcs is GOMAXPROCS as the process started (Go derives it from
// the CPU affinity mask and the cgroup CPU limit), before a relay raises
// it for its data-plane threads.
var initialProcs = runtime.GOMAXPROCS(0)

// DefaultDataPlaneThreads returns the default of Config.DataPlaneThreads:
// the cores the process may use (its CPU affinity, GOMAXPROCS as it
// started, whichever is fewer) minus one for everything else (gRPC,
// registry, TCP readers, the Go runtime), at least 1.
func DefaultDataPlaneThreads() int {
	return max(1, min(runtime.NumCPU(), initialProcs)-1)
}

var relayIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c *Config) setDefaults() error {
	if c.Registry != nil && !relayIDPattern.MatchString(c.RelayID) {
		return fmt.Errorf("%w: relay id %q: want 1-64 of [A-Za-z0-9._-]", ErrInvalid, c.RelayID)
	}
	if c.RelayID == "" {
		c.RelayID = "relay"
	}
	if len(c.PublicAddrs) == 0 {
		return fmt.Errorf("%w: at least one public address is required", ErrInvalid)
	}
	for _, a := range c.PublicAddrs {
		if !a.IsValid() || a.Port() == 0 {
			return fmt.Errorf("%w: public address %s: want ip:port", ErrInvalid, a)
		}
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.IdleTimeout < time.Second {
		return fmt.Errorf("%w: idle timeout %s: want at least 1s", ErrInvalid, c.IdleTimeout)
	}
	if c.MaxSessions < 0 {
		return fmt.Errorf("%w: max sessions %d", ErrInvalid, c.MaxSessions)
	}
	if c.RegistrationTTL == 0 {
		c.RegistrationTTL = DefaultRelayTTL
	}
	for _, a := range c.PublicTCPAddrs {
		if !a.IsValid() || a.Port() == 0 {
			return fmt.Errorf("%w: public TCP address %s: want ip:port", ErrInvalid, a)
		}
	}
	if c.TCPMaxConns < 0 || c.TCPMaxConnsPerIP < 0 || c.TCPVerifyTimeout < 0 || c.TCPIdleTimeout < 0 || c.TCPWriteQueue < 0 {
		return fmt.Errorf("%w: negative TCP limit", ErrInvalid)
	}
	if c.TCPMaxConns == 0 {
		c.TCPMaxConns = DefaultTCPMaxConns
	}
	if c.TCPMaxConnsPerIP == 0 {
		c.TCPMaxConnsPerIP = DefaultTCPMaxConnsPerIP
	}
	if c.TCPVerifyTimeout == 0 {
		c.TCPVerifyTimeout = DefaultTCPVerifyTimeout
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if c.TCPWriteQueue == 0 {
		c.TCPWriteQueue = DefaultTCPWriteQueue
	}
	if c.LookupRate <= 0 {
		c.LookupRate = 20
	}
	switch c.DataPlane {
	case "":
		c.DataPlane = DataPlaneThread
	case DataPlaneThread, DataPlaneNetpoll, DataPlaneGoroutines:
	default:
		return fmt.Errorf("%w: data plane %q: want %s, %s or %s", ErrInvalid, c.DataPlane, DataPlaneThread, DataPlaneNetpoll, DataPlaneGoroutines)
	}
	switch {
	case c.DataPlaneThreads == 0:
		c.DataPlaneThreads = DefaultDataPlaneThreads()
	case c.DataPlaneThreads < 0 || c.DataPlaneThreads > MaxDataPlaneThreads:
		return fmt.Errorf("%w: data-plane threads %d: want 1-%d", ErrInvalid, c.DataPlaneThreads, MaxDataPlaneThreads)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
