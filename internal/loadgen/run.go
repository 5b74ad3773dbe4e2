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

// Config configures Run.
type Config struct {
	// Target is TargetRelay, TargetCForward or TargetDirect.
	Target string
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
	// SetupTimeout bounds the STUN exchange of every session; default 30s.
	SetupTimeout time.Duration
	// Grace is how long replies are awaited after the last send; default
	// 500ms.
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
	case c.Target == TargetRelay && c.RelayGRPC == "":
		return errors.New("loadgen: target relay needs the relay's gRPC address")
	case c.Target == TargetRelay && !c.Origin.IsValid():
		return errors.New("loadgen: target relay needs the echo origin's address")
	case c.Target != TargetRelay && !c.Addr.IsValid():
		return fmt.Errorf("loadgen: target %s needs a UDP address", c.Target)
	case c.Sessions < 1:
		return fmt.Errorf("loadgen: %d sessions: want at least 1", c.Sessions)
	case c.Rate < 0 || c.Rate == 0 && c.Window < 1:
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
	Target   string  `json:"target"`
	Sessions int     `json:"sessions"`
	Mode     string  `json:"mode"` // "paced" or "closed"
	Rate     float64 `json:"rate_per_session,omitempty"`
	Window   int     `json:"window,omitempty"`
	Size     int     `json:"size"`
	// SetupFailed counts sessions whose STUN exchange did not complete;
	// they sent no traffic.
	SetupFailed  int     `json:"setup_failed"`
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
	stunReq []byte
	tx      [stun.TransactionIDSize]byte
	bound   bool
}

// gen is one Run in progress.
type gen struct {
	cfg     Config
	log     *slog.Logger
	clients []client
	active  []int // indexes of the clients that completed setup
	poll    *poller
	target  netip.AddrPort
	base    time.Time
	stop    atomic.Bool

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
	res := &Result{Target: cfg.Target, Sessions: cfg.Sessions, Size: cfg.Size, PID: cfg.PID}
	if cfg.Rate > 0 {
		res.Mode, res.Rate = "paced", cfg.Rate
	} else {
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
	target := cfg.Addr
	if cfg.Target == TargetRelay {
		a, release, err := g.allocate(ctx)
		if release != nil {
			defer release()
		}
		if err != nil {
			return nil, err
		}
		target = a
	}
	g.target = target
	if err := g.openClients(target); err != nil {
		return nil, err
	}
	if err := g.setup(ctx); err != nil {
		return nil, err
	}
	res.SetupFailed = len(g.clients) - len(g.active)
	res.SetupSeconds = time.Since(setupStart).Seconds()
	g.log.Info("loadgen: sessions set up", "target", cfg.Target, "sessions", len(g.active),
		"failed", res.SetupFailed, "seconds", res.SetupSeconds)
	if err := g.traffic(ctx, res); err != nil {
		return nil, err
	}
	return res, nil
}

// allocate allocates the relay sessions and returns the relay's public
// address and a function releasing them.
func (g *gen) allocate(ctx context.Context) (netip.AddrPort, func(), error) {
	conn, err := grpc.NewClient(g.cfg.RelayGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("loadgen: relay gRPC: %w", err)
	}
	api := relayv1.NewRelayServiceClient(conn)
	tag := randomAlnum(6)
	g.clients = make([]client, g.cfg.Sessions)
	ids := make([]string, g.cfg.Sessions)
	var addr atomic.Pointer[netip.AddrPort]
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
			if c := resp.GetCandidates(); len(c) > 0 && addr.Load() == nil {
				a, err := netip.ParseAddr(c[0].GetAddress())
				if err != nil {
					return fmt.Errorf("loadgen: relay candidate %q: %w", c[0].GetAddress(), err)
				}
				ap := netip.AddrPortFrom(a, uint16(c[0].GetPort()))
				addr.CompareAndSwap(nil, &ap)
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
		return netip.AddrPort{}, release, err
	}
	if addr.Load() == nil {
		return netip.AddrPort{}, release, errors.New("loadgen: the relay returned no candidate")
	}
	return *addr.Load(), release, nil
}

// openClients opens a client socket per session toward target and
// prepares its STUN Binding request.
func (g *gen) openClients(target netip.AddrPort) error {
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
	for i := range g.clients {
		c := &g.clients[i]
		fd, err := clientSocket(target, g.cfg.ClientBuffer)
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
	}
	return nil
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
// retransmitted every 300ms, until the echoed Binding success verifies or
// SetupTimeout passes. Requests go out in chunks so that thousands of
// sessions do not overflow the target's buffers.
func (g *gen) setup(ctx context.Context) error {
	const chunk = 128
	rb := newRecvBatch(16, 2048)
	pending := len(g.clients)
	deadline := time.Now().Add(g.cfg.SetupTimeout)
	var lastRound time.Time
	next := 0 // next client of the current send round
	for pending > 0 && time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if next >= len(g.clients) && time.Since(lastRound) >= 300*time.Millisecond {
			next = 0
		}
		if next == 0 {
			lastRound = time.Now()
		}
		for sent := 0; next < len(g.clients) && sent < chunk; next++ {
			if c := &g.clients[next]; !c.bound {
				sendOne(c.fd, c.stunReq)
				sent++
			}
		}
		evs, err := g.poll.wait(5 * time.Millisecond)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			c := &g.clients[ev.Fd]
			for range 4 {
				n := rb.read(c.fd)
				for i := range n {
					b := rb.msg(i)
					if c.bound || !stun.IsMessage(b) {
						continue
					}
					if _, err := checkBindingSuccess(b, c.tx, g.cfg.OriginPwd); err != nil {
						g.log.Debug("loadgen: STUN answer refused", "session", ev.Fd, "err", err)
						continue
					}
					c.bound = true
					pending--
				}
				if n < len(rb.hdrs) {
					break
				}
			}
		}
	}
	for i := range g.clients {
		if g.clients[i].bound {
			g.active = append(g.active, i)
		}
	}
	if len(g.active) == 0 {
		return fmt.Errorf("loadgen: no session completed its STUN exchange with %s within %s", g.cfg.Target, g.cfg.SetupTimeout)
	}
	if pending > 0 {
		g.log.Warn("loadgen: sessions failed their STUN exchange", "failed", pending)
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
	if g.cfg.Rate > 0 {
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
		clientPorts[localAddr(c.fd).Port()] = true
	}
	res.Drops = socketDrops(socks0, socks1, clientPorts, g.cfg.Origin.Port(), g.target.Port())
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

// sendPaced sends every active session's packets on one schedule: packet j
// of the whole run goes to session active[j % n] at t0 + j/(n*rate), so the
// sessions' packets are spread evenly over time. It sends until mEnd.
func (g *gen) sendPaced(st *sideStats) {
	buf := make([]byte, g.cfg.Size)
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
			putPacket(buf, uint32(idx), seqs[idx], t)
			seqs[idx]++
			ok := sendOne(g.clients[idx].fd, buf)
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

// receive reads every client socket through the poller until recvEnd and
// measures round trips. In closed-loop mode it also sends: Window packets
// per session at the start, one more per echo, and a new window for a
// session that heard nothing for a second (its packets were lost).
func (g *gen) receive(st *sideStats) {
	closed := g.cfg.Rate == 0
	rb := newRecvBatch(32, 2048)
	var buf []byte
	var seqs, inflight []uint64
	var progress []int64
	sendNext := func(idx int, now int64) {
		putPacket(buf, uint32(idx), seqs[idx], now)
		seqs[idx]++
		ok := sendOne(g.clients[idx].fd, buf)
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
		buf = make([]byte, g.cfg.Size)
		seqs = make([]uint64, len(g.clients))
		inflight = make([]uint64, len(g.clients))
		progress = make([]int64, len(g.clients))
		now := g.now()
		for _, idx := range g.active {
			fill(idx, now)
		}
		lastCheck = now
	}
	for !g.stop.Load() {
		now := g.now()
		if now >= g.recvEnd {
			return
		}
		evs, err := g.poll.wait(10 * time.Millisecond)
		if err != nil {
			g.log.Error("loadgen: poll", "err", err)
			return
		}
		for _, ev := range evs {
			idx := int(ev.Fd)
			fd := g.clients[idx].fd
			for range 8 {
				n := rb.read(fd)
				now = g.now()
				for i := range n {
					sidx, _, sent, ok := parsePacket(rb.msg(i))
					if !ok || int(sidx) != idx {
						st.stray++
						continue
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
				if n < len(rb.hdrs) {
					break
				}
			}
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
