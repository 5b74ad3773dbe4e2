package demoorigin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Defaults of Config.
const (
	DefaultMediaAddr     = "127.0.0.1:8189"
	DefaultPLIInterval   = 2 * time.Second
	DefaultTrackWait     = 3 * time.Second
	DefaultGatherTimeout = 5 * time.Second
	DefaultMaxSessions   = 256
)

// Config configures an Origin.
type Config struct {
	// MediaConn is the UDP socket all media goes through. The Origin takes
	// ownership and closes it. When nil, MediaAddr is bound.
	MediaConn net.PacketConn
	// MediaAddr is the UDP address bound when MediaConn is nil
	// (default DefaultMediaAddr).
	MediaAddr string
	// PublicIPs, when set, replace the bound IP in the answers' host
	// candidates (1:1 NAT); the port stays the bound one.
	PublicIPs []string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// PLIInterval is how often key frames are requested from a publisher
	// that has players (default DefaultPLIInterval).
	PLIInterval time.Duration
	// TrackWait bounds how long a play request waits for a fresh
	// publisher's first RTP packets (default DefaultTrackWait).
	TrackWait time.Duration
	// GatherTimeout bounds ICE gathering for an answer (default
	// DefaultGatherTimeout).
	GatherTimeout time.Duration
	// MaxSessions caps publishers plus players (default
	// DefaultMaxSessions); beyond it requests get ErrTooManySessions.
	MaxSessions int
	// PatchMode says how a PATCH on a session is answered: PatchAccept (the
	// default; trickle and ICE restarts are applied), PatchReject (405, as
	// an origin without PATCH support answers) or PatchClose (the connection
	// is closed without an answer, as SRS 7 does). Stats counts PATCH
	// requests in every mode.
	PatchMode PatchMode
}

// PatchMode is how the origin answers PATCH requests on sessions.
type PatchMode string

// The patch modes.
const (
	PatchAccept PatchMode = "accept" // apply trickle and ICE restarts (also the zero value)
	PatchReject PatchMode = "reject" // 405 Method Not Allowed, Allow without PATCH
	PatchClose  PatchMode = "close"  // close the connection without an answer, like SRS
)

// ParsePatchMode parses "accept", "reject" or "close".
func ParsePatchMode(s string) (PatchMode, error) {
	switch m := PatchMode(s); m {
	case PatchAccept, PatchReject, PatchClose:
		return m, nil
	}
	return "", fmt.Errorf("demoorigin: patch mode %q: want accept, reject or close", s)
}

// Origin is a demo WHIP/WHEP origin. Create it with New, serve Handler, and
// Close it when done.
type Origin struct {
	api       *webrtc.API
	mux       ice.UDPMux
	mediaAddr netip.AddrPort
	log       *slog.Logger
	cfg       Config
	forwarded atomic.Uint64
	created   atomic.Uint64 // sessions (publishers and players) ever created
	patches   atomic.Uint64 // PATCH requests on session URLs
	wg        sync.WaitGroup

	mu       sync.Mutex // guards the following
	closed   bool
	sessions map[string]*session
	streams  map[string]*stream
}

type sessionKind int

const (
	kindPublish sessionKind = iota
	kindPlay
)

func (k sessionKind) String() string {
	if k == kindPublish {
		return "whip"
	}
	return "whep"
}

// session is one WHIP or WHEP resource.
type session struct {
	id     string
	kind   sessionKind
	stream string
	pc     *webrtc.PeerConnection // nil for a test pattern
	ctx    context.Context
	cancel context.CancelFunc

	// bytesIn counts the RTP bytes received from a publisher (or made by
	// a test pattern).
	bytesIn atomic.Uint64

	mu     sync.Mutex // guards the following (and serialises PATCHes)
	etag   string
	remote string // the last remote description (SDP offer)
}

// stream is one stream key with its publisher, forwarded tracks and players.
type stream struct {
	key            string
	publisher      *session
	expectedTracks int
	tracks         []*forwardTrack
	tracksChanged  chan struct{} // closed and replaced when tracks change
	players        map[string]*session
	readyTime      time.Time // when the publisher's first track arrived
}

// forwardTrack is a publisher's remote track and its local copy for players.
type forwardTrack struct {
	local *webrtc.TrackLocalStaticRTP
	ssrc  webrtc.SSRC
	kind  webrtc.RTPCodecType
	codec string // "VP8", "H264", "opus"...: the MIME subtype
}

// New creates an Origin listening for media on cfg.MediaConn or cfg.MediaAddr.
func New(cfg Config) (*Origin, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PLIInterval <= 0 {
		cfg.PLIInterval = DefaultPLIInterval
	}
	if cfg.TrackWait <= 0 {
		cfg.TrackWait = DefaultTrackWait
	}
	if cfg.GatherTimeout <= 0 {
		cfg.GatherTimeout = DefaultGatherTimeout
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.PatchMode == "" {
		cfg.PatchMode = PatchAccept
	}
	if _, err := ParsePatchMode(string(cfg.PatchMode)); err != nil {
		return nil, err
	}
	for _, ip := range cfg.PublicIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("demoorigin: public IP %q: %w", ip, err)
		}
	}
	conn := cfg.MediaConn
	if conn == nil {
		addr := cfg.MediaAddr
		if addr == "" {
			addr = DefaultMediaAddr
		}
		var err error
		if conn, err = net.ListenPacket("udp", addr); err != nil {
			return nil, fmt.Errorf("demoorigin: media socket: %w", err)
		}
	}
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("demoorigin: media socket address: %w", err)
	}

	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("demoorigin: codecs: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("demoorigin: interceptors: %w", err)
	}
	mux := webrtc.NewICEUDPMux(nil, conn)
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	if len(cfg.PublicIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.PublicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("demoorigin: public IPs: %w", err)
		}
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return &Origin{
		api:       api,
		mux:       mux,
		mediaAddr: ap,
		log:       cfg.Logger,
		cfg:       cfg,
		sessions:  make(map[string]*session),
		streams:   make(map[string]*stream),
	}, nil
}

// MediaAddr returns the bound media UDP address.
func (o *Origin) MediaAddr() netip.AddrPort { return o.mediaAddr }

// Close closes every PeerConnection and the media socket.
func (o *Origin) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	all := make([]*session, 0, len(o.sessions))
	for _, s := range o.sessions {
		all = append(all, s)
	}
	o.sessions = map[string]*session{}
	o.streams = map[string]*stream{}
	o.mu.Unlock()
	for _, s := range all {
		s.cancel()
		if s.pc == nil {
			continue
		}
		if err := s.pc.GracefulClose(); err != nil {
			o.log.Debug("close peer connection", "id", s.id, "err", err)
		}
	}
	o.wg.Wait()
	return o.mux.Close()
}

// StreamStats describes one stream.
type StreamStats struct {
	Key       string
	Publisher bool
	Tracks    int
	Players   int
}

// Stats is a snapshot of the Origin's state, for tests and monitoring.
type Stats struct {
	Publishers       int
	Players          int
	PacketsForwarded uint64 // RTP packets read from publishers and written to their local tracks
	// SessionsCreated counts the sessions (publishers and players) created
	// since New, ended ones included.
	SessionsCreated uint64
	// PatchRequests counts the PATCH requests on session URLs since New,
	// whatever their outcome and the PatchMode.
	PatchRequests uint64
	Streams       []StreamStats
}

// Stats returns a snapshot of the sessions and counters.
func (o *Origin) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := Stats{PacketsForwarded: o.forwarded.Load(), SessionsCreated: o.created.Load(), PatchRequests: o.patches.Load()}
	for _, s := range o.streams {
		ss := StreamStats{Key: s.key, Publisher: s.publisher != nil, Tracks: len(s.tracks), Players: len(s.players)}
		if ss.Publisher {
			st.Publishers++
		}
		st.Players += ss.Players
		st.Streams = append(st.Streams, ss)
	}
	sort.Slice(st.Streams, func(i, j int) bool { return st.Streams[i].Key < st.Streams[j].Key })
	return st
}

// Streams returns the keys of the streams that have a publisher, sorted.
func (o *Origin) Streams() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var keys []string
	for k, s := range o.streams {
		if s.publisher != nil {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// mimeSubtype returns "VP8" for "video/VP8".
func mimeSubtype(mime string) string {
	if i := strings.IndexByte(mime, '/'); i >= 0 {
		return mime[i+1:]
	}
	return mime
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newETag() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return `"` + hex.EncodeToString(b[:]) + `"`
}

// publish creates a WHIP session for key from offer and returns it with its
// answer.
func (o *Origin) publish(ctx context.Context, key, offer string) (*session, string, error) {
	pc, err := o.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", fmt.Errorf("demoorigin: new peer connection: %w", err)
	}
	s := o.newSession(kindPublish, key, pc)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		s.cancel()
		_ = pc.Close()
		return nil, "", fmt.Errorf("%w: %w", ErrBadSDP, err)
	}
	expected := 0
	for _, t := range pc.GetTransceivers() {
		if t.Kind() == webrtc.RTPCodecTypeAudio || t.Kind() == webrtc.RTPCodecTypeVideo {
			expected++
		}
	}
	if expected == 0 {
		s.cancel()
		_ = pc.Close()
		return nil, "", fmt.Errorf("%w: the offer has no audio or video section", ErrBadSDP)
	}

	o.mu.Lock()
	if o.closed || len(o.sessions) >= o.cfg.MaxSessions {
		err := ErrClosed
		if !o.closed {
			err = ErrTooManySessions
		}
		o.mu.Unlock()
		s.cancel()
		_ = pc.Close()
		return nil, "", err
	}
	// Like MediaMTX's default, a new publisher replaces the old one; the
	// old publisher's players are closed with it.
	var evicted []*session
	if st := o.streams[key]; st != nil && st.publisher != nil {
		evicted = o.detachLocked(st.publisher) // may delete the stream
	}
	st := o.streams[key]
	if st == nil {
		st = &stream{key: key, players: map[string]*session{}, tracksChanged: make(chan struct{})}
		o.streams[key] = st
	}
	st.publisher = s
	st.expectedTracks = expected
	st.tracks = nil
	o.sessions[s.id] = s
	o.created.Add(1)
	o.wg.Add(1)
	o.mu.Unlock()
	go o.keyframeLoop(s)
	o.closeSessions(evicted)

	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { o.forward(s, tr) })
	answer, err := o.answer(ctx, s, offer)
	if err != nil {
		o.remove(s)
		return nil, "", err
	}
	o.log.Info("publish", "stream", key, "id", s.id)
	return s, answer, nil
}

// play creates a WHEP session for key from offer.
func (o *Origin) play(ctx context.Context, key, offer string) (*session, string, error) {
	pub, tracks, err := o.waitTracks(ctx, key)
	if err != nil {
		return nil, "", err
	}
	pc, err := o.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", fmt.Errorf("demoorigin: new peer connection: %w", err)
	}
	s := o.newSession(kindPlay, key, pc)
	for _, t := range tracks {
		sender, err := pc.AddTrack(t.local)
		if err != nil {
			s.cancel()
			_ = pc.Close()
			return nil, "", fmt.Errorf("demoorigin: add track: %w", err)
		}
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			s.cancel()
			_ = pc.Close()
			return nil, "", ErrClosed
		}
		o.wg.Add(1)
		o.mu.Unlock()
		go o.drainRTCP(s, sender)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		s.cancel()
		_ = pc.Close()
		return nil, "", fmt.Errorf("%w: %w", ErrBadSDP, err)
	}

	o.mu.Lock()
	st := o.streams[key]
	switch {
	case o.closed:
		err = ErrClosed
	case st == nil || st.publisher != pub:
		err = ErrNoPublisher // gone or replaced while we negotiated
	case len(o.sessions) >= o.cfg.MaxSessions:
		err = ErrTooManySessions
	default:
		st.players[s.id] = s
		o.sessions[s.id] = s
		o.created.Add(1)
	}
	o.mu.Unlock()
	if err != nil {
		s.cancel()
		_ = pc.Close()
		return nil, "", err
	}
	answer, err := o.answer(ctx, s, offer)
	if err != nil {
		o.remove(s)
		return nil, "", err
	}
	o.requestKeyframe(key)
	o.log.Info("play", "stream", key, "id", s.id, "tracks", len(tracks))
	return s, answer, nil
}

// waitTracks returns the publisher's forwarded tracks once they are all
// there, or what exists when cfg.TrackWait has passed.
func (o *Origin) waitTracks(ctx context.Context, key string) (*session, []*forwardTrack, error) {
	timer := time.NewTimer(o.cfg.TrackWait)
	defer timer.Stop()
	for {
		o.mu.Lock()
		st := o.streams[key]
		if o.closed {
			o.mu.Unlock()
			return nil, nil, ErrClosed
		}
		if st == nil || st.publisher == nil {
			o.mu.Unlock()
			return nil, nil, ErrNoPublisher
		}
		pub := st.publisher
		tracks := append([]*forwardTrack(nil), st.tracks...)
		complete := len(tracks) >= st.expectedTracks
		changed := st.tracksChanged
		o.mu.Unlock()
		if complete {
			return pub, tracks, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			if len(tracks) == 0 {
				return nil, nil, ErrNoTracks
			}
			return pub, tracks, nil
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// newSyntheticSession returns a publisher session without a
// PeerConnection, for a test pattern.
func (o *Origin) newSyntheticSession(key string) *session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{id: newID(), kind: kindPublish, stream: key, ctx: ctx, cancel: cancel, etag: newETag()}
}

func (o *Origin) newSession(kind sessionKind, key string, pc *webrtc.PeerConnection) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{id: newID(), kind: kind, stream: key, pc: pc, ctx: ctx, cancel: cancel, etag: newETag()}
	pc.OnConnectionStateChange(func(state webrtc.PeerConnectionState) {
		o.log.Debug("connection state", "id", s.id, "kind", kind.String(), "stream", key, "state", state.String())
		if state == webrtc.PeerConnectionStateFailed || state == webrtc.PeerConnectionStateClosed {
			o.remove(s)
		}
	})
	return s
}

// answer sets offer (already applied) aside, creates and sets the answer,
// waits for gathering to complete and returns the local description.
func (o *Origin) answer(ctx context.Context, s *session, offer string) (string, error) {
	answer, err := s.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: create answer: %w", ErrBadSDP, err)
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("demoorigin: set local description: %w", err)
	}
	if err := o.waitGathered(ctx, gathered); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.remote = offer
	s.mu.Unlock()
	return s.pc.LocalDescription().SDP, nil
}

func (o *Origin) waitGathered(ctx context.Context, gathered <-chan struct{}) error {
	timer := time.NewTimer(o.cfg.GatherTimeout)
	defer timer.Stop()
	select {
	case <-gathered:
		return nil
	case <-timer.C:
		return errors.New("demoorigin: ICE gathering timed out")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forward copies a publisher's remote track to a local track that players
// bind to. It runs in the goroutine pion starts for OnTrack.
func (o *Origin) forward(s *session, tr *webrtc.TrackRemote) {
	local, err := webrtc.NewTrackLocalStaticRTP(tr.Codec().RTPCodecCapability, tr.Kind().String(), "rtcedge-demo-"+s.stream)
	if err != nil {
		o.log.Warn("forward track", "id", s.id, "err", err)
		return
	}
	ft := &forwardTrack{local: local, ssrc: tr.SSRC(), kind: tr.Kind(), codec: mimeSubtype(tr.Codec().MimeType)}
	o.mu.Lock()
	st := o.streams[s.stream]
	if o.closed || st == nil || st.publisher != s {
		o.mu.Unlock()
		return
	}
	if len(st.tracks) == 0 {
		st.readyTime = time.Now()
	}
	st.tracks = append(st.tracks, ft)
	close(st.tracksChanged)
	st.tracksChanged = make(chan struct{})
	o.mu.Unlock()
	o.log.Info("track", "stream", s.stream, "id", s.id, "kind", tr.Kind().String(), "codec", tr.Codec().MimeType)

	buf := make([]byte, 1500)
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		s.bytesIn.Add(uint64(n))
		if _, err := local.Write(buf[:n]); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			o.log.Debug("forward write", "id", s.id, "err", err)
		}
		o.forwarded.Add(1)
	}
}

// keyframeLoop asks the publisher s for a key frame every PLIInterval while
// its stream has players.
func (o *Origin) keyframeLoop(s *session) {
	defer o.wg.Done()
	t := time.NewTicker(o.cfg.PLIInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			o.mu.Lock()
			st := o.streams[s.stream]
			players := st != nil && st.publisher == s && len(st.players) > 0
			o.mu.Unlock()
			if players {
				o.requestKeyframe(s.stream)
			}
		}
	}
}

// requestKeyframe sends a PLI for every video track of key's publisher.
func (o *Origin) requestKeyframe(key string) {
	o.mu.Lock()
	st := o.streams[key]
	if st == nil || st.publisher == nil || st.publisher.pc == nil {
		o.mu.Unlock()
		return // a test pattern sends nothing but key frames
	}
	pc := st.publisher.pc
	var pkts []rtcp.Packet
	for _, t := range st.tracks {
		if t.kind == webrtc.RTPCodecTypeVideo {
			pkts = append(pkts, &rtcp.PictureLossIndication{MediaSSRC: uint32(t.ssrc)})
		}
	}
	o.mu.Unlock()
	if len(pkts) == 0 {
		return
	}
	if err := pc.WriteRTCP(pkts); err != nil {
		o.log.Debug("write PLI", "stream", key, "err", err)
	}
}

// drainRTCP reads a player's RTCP (needed for the interceptors) and turns
// its key frame requests into PLIs to the publisher.
func (o *Origin) drainRTCP(s *session, sender *webrtc.RTPSender) {
	defer o.wg.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				o.requestKeyframe(s.stream)
			}
		}
	}
}

// detachLocked unregisters s (and, for a publisher, its players) and returns
// the sessions to close.
func (o *Origin) detachLocked(s *session) []*session {
	if _, ok := o.sessions[s.id]; !ok {
		return nil
	}
	delete(o.sessions, s.id)
	out := []*session{s}
	st := o.streams[s.stream]
	if st == nil {
		return out
	}
	switch s.kind {
	case kindPublish:
		if st.publisher == s {
			st.publisher = nil
			st.tracks = nil
			st.expectedTracks = 0
			for id, p := range st.players {
				delete(o.sessions, id)
				out = append(out, p)
			}
			st.players = map[string]*session{}
		}
	case kindPlay:
		delete(st.players, s.id)
	}
	if st.publisher == nil && len(st.players) == 0 {
		delete(o.streams, s.stream)
	}
	return out
}

// remove unregisters s and closes it (and its players) in the background.
func (o *Origin) remove(s *session) {
	o.mu.Lock()
	victims := o.detachLocked(s)
	o.mu.Unlock()
	o.closeSessions(victims)
}

// closeSessions closes the sessions' PeerConnections without blocking the
// caller, which may be a pion callback.
func (o *Origin) closeSessions(victims []*session) {
	for _, v := range victims {
		v.cancel()
		if v.pc == nil {
			continue // a test pattern: cancel stops it
		}
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			_ = v.pc.Close()
			continue
		}
		o.wg.Add(1)
		o.mu.Unlock()
		go func() {
			defer o.wg.Done()
			if err := v.pc.GracefulClose(); err != nil {
				o.log.Debug("close peer connection", "id", v.id, "err", err)
			}
		}()
	}
}

// deleteSession ends the resource id of kind and stream key, waiting for its
// PeerConnection to close.
func (o *Origin) deleteSession(kind sessionKind, key, id string) error {
	o.mu.Lock()
	s := o.sessions[id]
	if s == nil || s.pc == nil || s.kind != kind || s.stream != key {
		o.mu.Unlock()
		return ErrSessionNotFound
	}
	victims := o.detachLocked(s)
	o.mu.Unlock()
	s.cancel()
	if err := s.pc.Close(); err != nil {
		o.log.Debug("close peer connection", "id", s.id, "err", err)
	}
	o.closeSessions(victims[1:])
	o.log.Info("delete", "kind", kind.String(), "stream", key, "id", id)
	return nil
}

func (o *Origin) lookup(kind sessionKind, key, id string) (*session, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.sessions[id]
	if s == nil || s.pc == nil || s.kind != kind || s.stream != key {
		return nil, ErrSessionNotFound
	}
	return s, nil
}
