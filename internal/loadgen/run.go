//go:build linux

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// Targets Run can load.
const (
	// TargetRelay allocates sessions on a media relay through its gRPC API
	// and sends to its public UDP address.
	TargetRelay = "relay"
	// TargetCForward sends to the C forwarder, which creates a session per
	// client address on its first packet.
	TargetCForward = "cforward"
	// TargetDirect sends straight to the echo origin.
	TargetDirect = "direct"
)

// Transports of the clients (Config.Transport).
const (
	// TransportUDP sends datagrams from a UDP socket per session.
	TransportUDP = "udp"
	// TransportTCP connects a TCP socket per session to the relay's
	// ICE-TCP port (its "tcp" candidate) and frames everything per RFC
	// 4571. Only TargetRelay serves it; the relay's side toward the
	// origin stays UDP.
	TransportTCP = "tcp"
)

// Config configures Run.
type Config struct {
	// Target is TargetRelay, TargetCForward or TargetDirect.
	Target string
	// Transport is how clients reach the target: TransportUDP (default)
	// or TransportTCP (TargetRelay only).
	Transport string
	// Addr is the UDP address to send to, for TargetCForward (required)
	// and TargetDirect (default: Origin).
	Addr netip.AddrPort
	// RelayGRPC is the relay's gRPC address, for TargetRelay.
	RelayGRPC string
	// Origin is the echo origin's UDP address, and OriginUfrag and
	// OriginPwd its ICE credentials (default DefaultEchoUfrag and
	// DefaultEchoPwd).
	Origin                 netip.AddrPort
	OriginUfrag, OriginPwd string
	// Sessions is the number of sessions, each with its own client socket.
	Sessions int
	// Rate is the packets per second each session sends (paced mode). With
	// Rate 0, Window packets per session are kept in flight (closed loop).
	Rate   float64
	Window int
	// Idle sends nothing after the sessions' STUN exchange (Rate and
	// Window are ignored): the window measures the target's memory and
	// CPU with idle sessions.
	Idle bool
	// Warmup is how long traffic runs before the measurement window of
	// length Duration.
	Warmup, Duration time.Duration
	// Size is the packet size in bytes; default 1200.
	Size int
	// PID is the target process to measure (CPU time, memory); 0 measures
	// none.
	PID int
	// ClientBuffer is the SO_RCVBUF/SO_SNDBUF of each client socket;
	// default 256 KiB.
	ClientBuffer int
	// SetupTimeout bounds the STUN exchange of every session, and each
	// TCP connect; default 30s.
	SetupTimeout time.Duration
	// Grace is how long replies are awaited after the last send, at most:
	// the run ends sooner once every packet sent in the window is echoed;
	// default 500ms.
	Grace time.Duration
	// Logger is nil for slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.OriginUfrag == "" {
		c.OriginUfrag = DefaultEchoUfrag
	}
	if c.OriginPwd == "" {
		c.OriginPwd = DefaultEchoPwd
	}
	if c.Size == 0 {
		c.Size = defaultSize
	}
	if c.Transport == "" {
		c.Transport = TransportUDP
	}
	if c.ClientBuffer == 0 {
		c.ClientBuffer = 256 << 10
	}
	if c.SetupTimeout == 0 {
		c.SetupTimeout = 30 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Target == TargetDirect && !c.Addr.IsValid() {
		c.Addr = c.Origin
	}
	switch {
	case c.Target != TargetRelay && c.Target != TargetCForward && c.Target != TargetDirect:
		return fmt.Errorf("loadgen: target %q: want %s, %s or %s", c.Target, TargetRelay, TargetCForward, TargetDirect)
	case c.Transport != TransportUDP && c.Transport != TransportTCP:
		return fmt.Errorf("loadgen: transport %q: want %s or %s", c.Transport, TransportUDP, TransportTCP)
	case c.Transport == TransportTCP && c.Target != TargetRelay:
		return fmt.Errorf("loadgen: transport %s: only target %s has an ICE-TCP port", TransportTCP, TargetRelay)
	case c.Target == TargetRelay && c.RelayGRPC == "":
		return errors.New("loadgen: target relay needs the relay's gRPC address")
	case c.Target == TargetRelay && !c.Origin.IsValid():
		return errors.New("loadgen: target relay needs the echo origin's address")
	case c.Target != TargetRelay && !c.Addr.IsValid():
		return fmt.Errorf("loadgen: target %s needs a UDP address", c.Target)
	case c.Sessions < 1:
		return fmt.Errorf("loadgen: %d sessions: want at least 1", c.Sessions)
	case !c.Idle && (c.Rate < 0 || c.Rate == 0 && c.Window < 1):
		return errors.New("loadgen: want a rate > 0 (paced) or a window >= 1 (closed loop)")
	case c.Size < minPacketSize || c.Size > maxPacketSize:
		return fmt.Errorf("loadgen: size %d: want %d-%d", c.Size, minPacketSize, maxPacketSize)
	case c.Duration <= 0 || c.Warmup < 0:
		return errors.New("loadgen: want a duration > 0 and a warmup >= 0")
	}
	return nil
}

// Result is what one Run measured. Counts and rates are of the measurement
// window: packets sent in it, and the echoes of those packets.
type Result struct {
	Target    string  `json:"target"`
	Transport string  `json:"transport"`
	Sessions  int     `json:"sessions"`
	Mode      string  `json:"mode"` // "paced", "closed" or "idle"
	Rate      float64 `json:"rate_per_session,omitempty"`
	Window    int     `json:"window,omitempty"`
	Size      int     `json:"size"`
	// SetupFailed counts sessions whose STUN exchange did not complete;
	// they sent no traffic.
	SetupFailed int `json:"setup_failed"`
	// Disconnected counts TCP connections the target closed (or whose
	// framing broke) during the run.
	Disconnected int     `json:"disconnected,omitempty"`
	SetupSeconds float64 `json:"setup_seconds"`
	Seconds      float64 `json:"seconds"`

	Sent       uint64  `json:"sent"`
	SendErrors uint64  `json:"send_errors"`
	Received   uint64  `json:"received"`
	LossPct    float64 `json:"loss_pct"`
	// PPS is echoes received per second; each is two packets through a
	// forwarder (ForwardedPPS).
	PPS          float64 `json:"pps"`
	SentPPS      float64 `json:"sent_pps"`
	ForwardedPPS float64 `json:"forwarded_pps"`
	// SenderLagMs is how far the paced sender fell behind its schedule at
	// worst: a large value means the generator, not the target, limited.
	SenderLagMs float64 `json:"sender_lag_ms"`

	RTTP50us  float64 `json:"rtt_p50_us"`
	RTTP99us  float64 `json:"rtt_p99_us"`
	RTTP999us float64 `json:"rtt_p999_us"`
	RTTMaxus  float64 `json:"rtt_max_us"`
	RTTMeanus float64 `json:"rtt_mean_us"`

	// Target process measurements (with Config.PID).
	PID int `json:"pid,omitempty"`
	// CPUSeconds is the target's CPU time in the window, all threads.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPct is CPUSeconds over the window's length, in percent of a core.
	CPUPct float64 `json:"cpu_pct"`
	// CPUPerPacketUs is CPU time per forwarded packet (2 per echo), µs.
	CPUPerPacketUs float64 `json:"cpu_per_packet_us"`
	// MemBefore is before any session, MemAfter at the end of the window.
	MemBefore Memory `json:"mem_before"`
	MemAfter  Memory `json:"mem_after"`
	// RSSPerSessionKiB is the growth of VmRSS per session.
	RSSPerSessionKiB  float64 `json:"rss_per_session_kib"`
	AnonPerSessionKiB float64 `json:"anon_per_session_kib"`

	// ToolCPUPct is this process's CPU time in the window (generator,
	// in-process echo origin and whatever else it runs), in percent of a
	// core: near 100 with the tool pinned to one core, the generator may be
	// what limits.
	ToolCPUPct float64 `json:"tool_cpu_pct"`

	// UDP is the kernel's UDP counters' change in the window (whole
	// network namespace: every process's drops, the generator's too).
	UDP UDPCounters `json:"udp"`
	// Drops are the receive-queue drops in the window by socket, from
	// /proc/net/udp: where the UDP counters' RcvbufErrors happened.
	Drops SocketDrops `json:"socket_drops"`
}

// client is one session's client side.
type client struct {
	fd      int
	ufrag   string
	stunReq []byte // as sent: framed over TCP
	tx      [stun.TransactionIDSize]byte
	bound   bool
	tcp     *tcpStream // nil over UDP
	gone    bool       // its TCP connection ended (receiving side)
}

// gen is one Run in progress.
type gen struct {
	cfg     Config
	log     *slog.Logger
	clients []client
	active  []int // indexes of the clients that completed setup
	poll    *poller
	target  netip.AddrPort
	// targetUDP is the target's UDP port (the relay's public one when
	// clients use TCP): where its receive-queue drops count.
	targetUDP netip.AddrPort
	// streamBuf is the read buffer every TCP connection shares.
	streamBuf []byte
	// disconnected counts TCP connections that ended (receiving side).
	disconnected int
	base         time.Time
	stop         atomic.Bool
	// pacedSent is what the paced sender sent in the window, set before
	// pacedDone: the receiver stops once it has every echo.
	pacedSent atomic.Uint64
	pacedDone atomic.Bool

	// Timeline in nanoseconds since base.
	t0, mStart, mEnd, recvEnd int64
}

func (g *gen) now() int64 { return int64(time.Since(g.base)) }

// Run runs one load test: it sets up cfg.Sessions sessions through the
// target, sends traffic through a warmup and a measurement window, and
// reports what it measured. With TargetRelay it releases its sessions
// before it returns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &Result{Target: cfg.Target, Transport: cfg.Transport, Sessions: cfg.Sessions, Size: cfg.Size, PID: cfg.PID}
	switch {
	case cfg.Idle:
		res.Mode = "idle"
	case cfg.Rate > 0:
		res.Mode, res.Rate = "paced", cfg.Rate
	default:
		res.Mode, res.Window = "closed", cfg.Window
	}
	if cfg.PID > 0 {
		m, err := ProcessMemory(cfg.PID)
		if err != nil {
			return nil, err
		}
		res.MemBefore = m
	}
	g := &gen{cfg: cfg, log: cfg.Logger, base: time.Now()}
	defer g.closeClients()

	setupStart := time.Now()
	g.target, g.targetUDP = cfg.Addr, cfg.Addr
	if cfg.Target == TargetRelay {
		release, err := g.allocate(ctx)
		if release != nil {
			defer release()
		}
		if err != nil {
			return nil, err
		}
	}
	if err := g.openClients(); err != nil {
		return nil, err
	}
	if err := g.setup(ctx); err != nil {
		return nil, err
	}
	res.SetupFailed = len(g.clients) - len(g.active)
	res.SetupSeconds = time.Since(setupStart).Seconds()
	g.log.Info("loadgen: sessions set up", "target", cfg.Target, "transport", cfg.Transport, "sessions", len(g.active),
		"failed", res.SetupFailed, "seconds", res.SetupSeconds)
	if err := g.traffic(ctx, res); err != nil {
		return nil, err
	}
	res.Disconnected = g.disconnected
	if g.disconnected > 0 {
		g.log.Warn("loadgen: the target closed TCP connections", "count", g.disconnected)
	}
	return res, nil
}

// allocate allocates the relay sessions, sets g.target to the relay's
// public address of the configured transport (and g.targetUDP to its UDP
// one), and returns a function releasing the sessions.
func (g *gen) allocate(ctx context.Context) (func(), error) {
	conn, err := grpc.NewClient(g.cfg.RelayGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("loadgen: relay gRPC: %w", err)
	}
	api := relayv1.NewRelayServiceClient(conn)
	tag := randomAlnum(6)
	g.clients = make([]client, g.cfg.Sessions)
	ids := make([]string, g.cfg.Sessions)
	var cands atomic.Pointer[[]*relayv1.Candidate]
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(16)
	for i := range g.clients {
		g.clients[i] = client{fd: -1, ufrag: "L" + tag + strconv.Itoa(i)}
		eg.Go(func() error {
			cctx, cancel := context.WithTimeout(ectx, 10*time.Second)
			defer cancel()
			resp, err := api.AllocateSession(cctx, &relayv1.AllocateSessionRequest{
				Stream:          "load/" + tag + "/" + strconv.Itoa(i),
				Direction:       relayv1.Direction_DIRECTION_PUBLISH,
				ClientIce:       &relayv1.IceCredentials{Ufrag: g.clients[i].ufrag, Pwd: randomICE(24)},
				OriginIce:       &relayv1.IceCredentials{Ufrag: g.cfg.OriginUfrag, Pwd: g.cfg.OriginPwd},
				OriginAddresses: []string{g.cfg.Origin.String()},
				Labels:          map[string]string{"loadgen": tag},
			})
			if err != nil {
				return fmt.Errorf("loadgen: allocating session %d: %w", i, err)
			}
			ids[i] = resp.GetSession().GetId()
			if c := resp.GetCandidates(); len(c) > 0 {
				cands.CompareAndSwap(nil, &c)
			}
			return nil
		})
	}
	err = eg.Wait()
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		var failed atomic.Int64
		for _, id := range ids {
			if id == "" {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := api.ReleaseSession(rctx, &relayv1.ReleaseSessionRequest{Id: id}); err != nil {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			g.log.Warn("loadgen: releasing relay sessions failed", "failed", n)
		}
		_ = conn.Close()
	}
	if err != nil {
		return release, err
	}
	var all []*relayv1.Candidate
	if c := cands.Load(); c != nil {
		all = *c
	}
	if g.target, err = candidateAddr(all, g.cfg.Transport); err != nil {
		return release, err
	}
	g.targetUDP = g.target
	if g.cfg.Transport != TransportUDP {
		g.targetUDP, _ = candidateAddr(all, TransportUDP)
	}
	return release, nil
}

// candidateAddr returns the address of the first of the relay's
// candidates with protocol transport.
func candidateAddr(cands []*relayv1.Candidate, transport string) (netip.AddrPort, error) {
	for _, c := range cands {
		if !strings.EqualFold(c.GetProtocol(), transport) {
			continue
		}
		a, err := netip.ParseAddr(c.GetAddress())
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("loadgen: relay candidate %q: %w", c.GetAddress(), err)
		}
		return netip.AddrPortFrom(a, uint16(c.GetPort())), nil
	}
	if transport == TransportTCP {
		return netip.AddrPort{}, errors.New("loadgen: the relay advertises no ICE-TCP candidate (is its -tcp-listen off?)")
	}
	return netip.AddrPort{}, fmt.Errorf("loadgen: the relay returned no %s candidate", transport)
}

// openClients opens a client socket per session toward g.target (a TCP
// connection is established when it returns) and prepares its STUN
// Binding request.
func (g *gen) openClients() error {
	if g.clients == nil {
		tag := randomAlnum(6)
		g.clients = make([]client, g.cfg.Sessions)
		for i := range g.clients {
			g.clients[i] = client{fd: -1, ufrag: "L" + tag + strconv.Itoa(i)}
		}
	}
	p, err := newPoller(1024)
	if err != nil {
		return err
	}
	g.poll = p
	tcp := g.cfg.Transport == TransportTCP
	if tcp {
		g.streamBuf = make([]byte, streamReadSize)
	}
	for i := range g.clients {
		c := &g.clients[i]
		fd, err := clientSocket(g.cfg.Transport, g.target, g.cfg.ClientBuffer, g.cfg.SetupTimeout)
		if err != nil {
			return fmt.Errorf("loadgen: session %d: %w", i, err)
		}
		c.fd = fd
		if err := g.poll.add(fd, i); err != nil {
			return err
		}
		m, err := bindingRequest(g.cfg.OriginUfrag, c.ufrag, g.cfg.OriginPwd)
		if err != nil {
			return err
		}
		c.stunReq, c.tx = m.Raw, m.TransactionID
		if tcp {
			c.tcp = &tcpStream{}
			c.stunReq = frame(m.Raw)
		}
	}
	return nil
}

// send sends packet b (framed over TCP: its length prefix included) from
// client c, and reports whether the kernel took it.
func (g *gen) send(c *client, b []byte) bool {
	if c.tcp != nil {
		return c.tcp.send(c.fd, b)
	}
	return sendOne(c.fd, b)
}

// packetBuf returns a buffer for the packets of a run and the packet
// within it: over TCP the buffer starts with the packet's length prefix.
func (g *gen) packetBuf() (wire, pkt []byte) {
	if g.cfg.Transport != TransportTCP {
		b := make([]byte, g.cfg.Size)
		return b, b
	}
	wire = make([]byte, frameHeader+g.cfg.Size)
	putFrameHeader(wire, g.cfg.Size)
	return wire, wire[frameHeader:]
}

// drain reads what client idx has waiting, in at most rounds reads, and
// calls handle with each packet (a datagram, or a TCP frame's payload:
// valid until handle returns) and the time of the read that returned it.
// It returns false when the client's TCP connection ended (closed by the
// target, or its framing broke): the client leaves the poller and counts
// in g.disconnected.
func (g *gen) drain(idx int, rb *recvBatch, rounds int, handle func(b []byte, now int64)) bool {
	c := &g.clients[idx]
	if c.gone {
		return false
	}
	for range rounds {
		if c.tcp == nil {
			n := rb.read(c.fd)
			now := g.now()
			for i := range n {
				handle(rb.msg(i), now)
			}
			if n < len(rb.hdrs) {
				return true
			}
			continue
		}
		n, open := c.tcp.fill(c.fd, g.streamBuf)
		now := g.now()
		buf, off := g.streamBuf[:n], 0
		for open {
			p, next, err := nextFrame(buf, off)
			if err != nil {
				g.log.Debug("loadgen: broken TCP stream", "session", idx, "err", err)
				open = false
			}
			if p == nil {
				break
			}
			handle(p, now)
			off = next
		}
		if !open {
			c.gone = true
			g.disconnected++
			g.poll.remove(c.fd)
			return false
		}
		c.tcp.keep(buf[off:])
		if n < len(g.streamBuf) {
			return true // the read did not fill the buffer: the socket is drained
		}
	}
	return true
}

func (g *gen) closeClients() {
	for i := range g.clients {
		if g.clients[i].fd >= 0 {
			_ = unix.Close(g.clients[i].fd)
		}
	}
	if g.poll != nil {
		g.poll.close()
	}
}

// setup runs every session's STUN exchange: a Binding request,
// retransmitted every 300ms (every 2s over TCP, where only the relay's
// UDP leg to the origin can lose it), until the echoed Binding success
// verifies or SetupTimeout passes. Requests go out in chunks so that
// thousands of sessions do not overflow the target's buffers.
func (g *gen) setup(ctx context.Context) error {
	const chunk = 128
	resend := 300 * time.Millisecond
	if g.cfg.Transport == TransportTCP {
		resend = 2 * time.Second
	}
	rb := newRecvBatch(16, 2048)
	pending := len(g.clients)
	deadline := time.Now().Add(g.cfg.SetupTimeout)
	var lastRound time.Time
	next := 0     // next client of the current send round
	var c *client // the client whose packets handle is given
	handle := func(b []byte, _ int64) {
		if c.bound || !stun.IsMessage(b) {
			return
		}
		if _, err := checkBindingSuccess(b, c.tx, g.cfg.OriginPwd); err != nil {
			g.log.Debug("loadgen: STUN answer refused", "ufrag", c.ufrag, "err", err)
			return
		}
		c.bound = true
		pending--
	}
	for pending > 0 && time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if next >= len(g.clients) && time.Since(lastRound) >= resend {
			next = 0
		}
		if next == 0 {
			lastRound = time.Now()
		}
		for sent := 0; next < len(g.clients) && sent < chunk; next++ {
			if c := &g.clients[next]; !c.bound && !c.gone {
				g.send(c, c.stunReq)
				sent++
			}
		}
		evs, err := g.poll.wait(5 * time.Millisecond)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			c = &g.clients[ev.Fd]
			if wasGone := c.gone; !g.drain(int(ev.Fd), rb, 4, handle) && !wasGone && !c.bound {
				pending-- // its connection ended: it failed
			}
		}
	}
	for i := range g.clients {
		if g.clients[i].bound && !g.clients[i].gone {
			g.active = append(g.active, i)
		}
	}
	if len(g.active) == 0 {
		return fmt.Errorf("loadgen: no session completed its STUN exchange with %s over %s within %s",
			g.cfg.Target, g.cfg.Transport, g.cfg.SetupTimeout)
	}
	if failed := len(g.clients) - len(g.active); failed > 0 {
		g.log.Warn("loadgen: sessions failed their STUN exchange", "failed", failed)
	}
	return nil
}

// sideStats are what one traffic goroutine counted.
type sideStats struct {
	hist                    Histogram
	sentWin, sendErrWin     uint64
	recvWin, recvAll, stray uint64
	maxLag                  int64
}

// traffic runs the warmup and the measurement window and fills res.
func (g *gen) traffic(ctx context.Context, res *Result) error {
	g.t0 = g.now()
	g.mStart = g.t0 + int64(g.cfg.Warmup)
	g.mEnd = g.mStart + int64(g.cfg.Duration)
	g.recvEnd = g.mEnd + int64(g.cfg.Grace)

	var send, recv sideStats
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.receive(&recv)
	}()
	if g.paced() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.sendPaced(&send)
		}()
	}
	var cpu0, cpu1, self0, self1 uint64
	var udp0, udp1 UDPCounters
	var socks0, socks1 map[uint64]udpSocket
	var errs []error
	wait := func(until int64) bool {
		t := time.NewTimer(time.Duration(until - g.now()))
		defer t.Stop()
		select {
		case <-ctx.Done():
			g.stop.Store(true)
			return false
		case <-t.C:
			return true
		}
	}
	measured := wait(g.mStart)
	if measured {
		var err error
		udp0, err = ReadUDPCounters()
		errs = append(errs, err)
		socks0, err = readUDPSockets()
		errs = append(errs, err)
		self0, err = ProcessCPU(os.Getpid())
		errs = append(errs, err)
		if g.cfg.PID > 0 {
			cpu0, err = ProcessCPU(g.cfg.PID)
			errs = append(errs, err)
		}
		measured = wait(g.mEnd)
	}
	if measured {
		var err error
		if g.cfg.PID > 0 {
			cpu1, err = ProcessCPU(g.cfg.PID)
			errs = append(errs, err)
			res.MemAfter, err = ProcessMemory(g.cfg.PID)
			errs = append(errs, err)
		}
		self1, err = ProcessCPU(os.Getpid())
		errs = append(errs, err)
		udp1, err = ReadUDPCounters()
		errs = append(errs, err)
		socks1, err = readUDPSockets()
		errs = append(errs, err)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	recv.hist.Merge(&send.hist)
	secs := g.cfg.Duration.Seconds()
	res.Seconds = secs
	res.Sent = send.sentWin + recv.sentWin
	res.SendErrors = send.sendErrWin + recv.sendErrWin
	res.Received = recv.recvWin
	if res.Sent > 0 {
		res.LossPct = 100 * (1 - float64(res.Received)/float64(res.Sent))
	}
	res.PPS = float64(res.Received) / secs
	res.SentPPS = float64(res.Sent) / secs
	res.ForwardedPPS = 2 * res.PPS
	res.SenderLagMs = float64(send.maxLag) / 1e6
	h := &recv.hist
	res.RTTP50us = float64(h.Quantile(0.50)) / 1e3
	res.RTTP99us = float64(h.Quantile(0.99)) / 1e3
	res.RTTP999us = float64(h.Quantile(0.999)) / 1e3
	res.RTTMaxus = float64(h.Max()) / 1e3
	res.RTTMeanus = h.Mean() / 1e3
	res.UDP = udp1.Sub(udp0)
	clientPorts := make(map[uint16]bool, len(g.clients))
	for _, c := range g.clients {
		if c.tcp == nil {
			clientPorts[localAddr(c.fd).Port()] = true
		}
	}
	res.Drops = socketDrops(socks0, socks1, clientPorts, g.cfg.Origin.Port(), g.targetUDP.Port())
	res.ToolCPUPct = 100 * float64(self1-self0) / 1e9 / secs
	if g.cfg.PID > 0 {
		res.CPUSeconds = float64(cpu1-cpu0) / 1e9
		res.CPUPct = 100 * res.CPUSeconds / secs
		if res.Received > 0 {
			res.CPUPerPacketUs = float64(cpu1-cpu0) / 1e3 / float64(2*res.Received)
		}
		n := float64(len(g.active))
		res.RSSPerSessionKiB = (float64(res.MemAfter.RSSKiB) - float64(res.MemBefore.RSSKiB)) / n
		res.AnonPerSessionKiB = (float64(res.MemAfter.AnonKiB) - float64(res.MemBefore.AnonKiB)) / n
	}
	if recv.stray > 0 {
		g.log.Warn("loadgen: unexpected datagrams received", "count", recv.stray)
	}
	return nil
}

// inWindow reports whether a packet sent at t counts in the measurement.
func (g *gen) inWindow(t int64) bool { return t >= g.mStart && t < g.mEnd }

// paced reports whether a sender goroutine paces the packets; else the
// receiver sends them (closed loop), or nobody does (idle).
func (g *gen) paced() bool { return !g.cfg.Idle && g.cfg.Rate > 0 }

// sendPaced sends every active session's packets on one schedule: packet j
// of the whole run goes to session active[j % n] at t0 + j/(n*rate), so the
// sessions' packets are spread evenly over time. It sends until mEnd.
func (g *gen) sendPaced(st *sideStats) {
	defer func() {
		g.pacedSent.Store(st.sentWin)
		g.pacedDone.Store(true)
	}()
	wire, pkt := g.packetBuf()
	seqs := make([]uint64, len(g.clients))
	n := uint64(len(g.active))
	interval := 1e9 / (float64(n) * g.cfg.Rate) // ns between packets
	const maxBurst = 256
	var j uint64
	for !g.stop.Load() {
		now := g.now()
		if now >= g.mEnd {
			return
		}
		due := uint64(float64(now-g.t0)/interval) + 1
		if due > j {
			st.maxLag = max(st.maxLag, int64(float64(due-j)*interval))
		}
		for burst := 0; j < due && burst < maxBurst; burst++ {
			idx := g.active[j%n]
			t := g.now()
			putPacket(pkt, uint32(idx), seqs[idx], t)
			seqs[idx]++
			ok := g.send(&g.clients[idx], wire)
			if g.inWindow(t) {
				if ok {
					st.sentWin++
				} else {
					st.sendErrWin++
				}
			}
			j++
		}
		if j >= due {
			next := g.t0 + int64(float64(j)*interval)
			if d := next - g.now(); d > 0 {
				time.Sleep(time.Duration(d))
			}
		}
	}
}

// receive reads every client socket through the poller until recvEnd, or
// until every packet sent in the window is echoed, and measures round
// trips. In closed-loop mode it also sends: Window packets per session at
// the start, one more per echo, and a new window for a session that heard
// nothing for a second (its packets were lost).
func (g *gen) receive(st *sideStats) {
	closed := !g.cfg.Idle && g.cfg.Rate == 0
	rb := newRecvBatch(32, 2048)
	var wire, pkt []byte
	var seqs, inflight []uint64
	var progress []int64
	sendNext := func(idx int, now int64) {
		putPacket(pkt, uint32(idx), seqs[idx], now)
		seqs[idx]++
		ok := g.send(&g.clients[idx], wire)
		if ok {
			inflight[idx]++
		}
		if g.inWindow(now) {
			if ok {
				st.sentWin++
			} else {
				st.sendErrWin++
			}
		}
	}
	fill := func(idx int, now int64) {
		progress[idx] = now
		for inflight[idx] < uint64(g.cfg.Window) {
			before := inflight[idx]
			sendNext(idx, g.now())
			if inflight[idx] == before {
				break // the socket refused: try again on the next check
			}
		}
	}
	var lastCheck int64
	if closed {
		wire, pkt = g.packetBuf()
		seqs = make([]uint64, len(g.clients))
		inflight = make([]uint64, len(g.clients))
		progress = make([]int64, len(g.clients))
		now := g.now()
		for _, idx := range g.active {
			fill(idx, now)
		}
		lastCheck = now
	}
	var idx int   // the session whose packets handle is given
	var now int64 // the time of the last read
	handle := func(b []byte, t int64) {
		now = t
		sidx, _, sent, ok := parsePacket(b)
		if !ok || int(sidx) != idx {
			st.stray++
			return
		}
		st.recvAll++
		if g.inWindow(sent) {
			st.recvWin++
			st.hist.Record(now - sent)
		}
		if closed {
			if inflight[idx] > 0 {
				inflight[idx]--
			}
			progress[idx] = now
			if now < g.mEnd {
				sendNext(idx, now)
			}
		}
	}
	for !g.stop.Load() {
		now = g.now()
		if now >= g.recvEnd || now >= g.mEnd && g.allEchoed(st) {
			return
		}
		evs, err := g.poll.wait(10 * time.Millisecond)
		if err != nil {
			g.log.Error("loadgen: poll", "err", err)
			return
		}
		for _, ev := range evs {
			idx = int(ev.Fd)
			g.drain(idx, rb, 8, handle)
		}
		if closed && now-lastCheck >= int64(100*time.Millisecond) && now < g.mEnd {
			lastCheck = now
			for _, idx := range g.active {
				if now-progress[idx] >= int64(time.Second) {
					inflight[idx] = 0
					fill(idx, now)
				}
			}
		}
	}
}

// allEchoed reports, once the window has ended, whether the receiver has
// the echo of every packet sent in the window (st is the receiver's).
func (g *gen) allEchoed(st *sideStats) bool {
	if !g.paced() {
		return st.recvWin >= st.sentWin
	}
	return g.pacedDone.Load() && st.recvWin >= g.pacedSent.Load()
}
