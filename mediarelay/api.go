package mediarelay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pion/stun/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// Limits of the API's inputs (see proto/relay/v1/relay.proto).
const (
	maxStreamLength  = 512
	maxOriginAddrs   = 8
	maxLabels        = 16
	maxLabelKey      = 63
	maxLabelValue    = 256
	maxOriginIDLen   = 128
	defaultPageSize  = 100
	maxPageSize      = 1000
	minDrainDeadline = time.Second
)

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// isIceChars reports whether s is ALPHA / DIGIT / "+" / "/" (RFC 8839).
func isIceChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

func checkICE(side string, c *relayv1.IceCredentials) error {
	if c == nil {
		return invalid("%s_ice is required", side)
	}
	if n := len(c.GetUfrag()); n < 4 || n > 256 || !isIceChars(c.GetUfrag()) {
		return invalid("%s_ice.ufrag must be 4-256 ice-chars (A-Z a-z 0-9 + /), got %d bytes", side, n)
	}
	if n := len(c.GetPwd()); n < 22 || n > 256 || !isIceChars(c.GetPwd()) {
		return invalid("%s_ice.pwd must be 22-256 ice-chars (A-Z a-z 0-9 + /), got %d bytes", side, n)
	}
	return nil
}

func parseOriginAddrs(addrs []string) ([]netip.AddrPort, error) {
	if len(addrs) == 0 || len(addrs) > maxOriginAddrs {
		return nil, invalid("origin_addresses must have 1-%d entries, got %d", maxOriginAddrs, len(addrs))
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			return nil, invalid("origin address %q must be a unicast ip:port", a)
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return out, nil
}

func validSessionID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkAllocate(req *relayv1.AllocateSessionRequest) error {
	if id := req.GetSessionId(); id != "" && !validSessionID(id) {
		return invalid("session_id must be 1-64 of [A-Za-z0-9_-]")
	}
	if s := req.GetStream(); len(s) == 0 || len(s) > maxStreamLength || strings.ContainsRune(s, 0) {
		return invalid("stream must be 1-%d bytes without NUL", maxStreamLength)
	}
	if err := registry.CheckStream(req.GetStream()); err != nil {
		return invalid("stream %q: %v", req.GetStream(), err)
	}
	switch req.GetDirection() {
	case relayv1.Direction_DIRECTION_PUBLISH, relayv1.Direction_DIRECTION_PLAY:
	default:
		return invalid("direction must be DIRECTION_PUBLISH or DIRECTION_PLAY")
	}
	if err := checkICE("client", req.GetClientIce()); err != nil {
		return err
	}
	if err := checkICE("origin", req.GetOriginIce()); err != nil {
		return err
	}
	if len(req.GetOriginId()) > maxOriginIDLen {
		return invalid("origin_id is longer than %d bytes", maxOriginIDLen)
	}
	if len(req.GetLabels()) > maxLabels {
		return invalid("at most %d labels", maxLabels)
	}
	for k, v := range req.GetLabels() {
		if len(k) == 0 || len(k) > maxLabelKey || len(v) > maxLabelValue {
			return invalid("label %q: keys are 1-%d bytes, values at most %d", k, maxLabelKey, maxLabelValue)
		}
	}
	return nil
}

func direction(d relayv1.Direction) string {
	if d == relayv1.Direction_DIRECTION_PLAY {
		return registry.DirectionPlay
	}
	return registry.DirectionPublish
}

func directionFrom(d string) relayv1.Direction {
	if d == registry.DirectionPlay {
		return relayv1.Direction_DIRECTION_PLAY
	}
	return relayv1.Direction_DIRECTION_PUBLISH
}

// waitReady returns once Serve has reloaded the relay's sessions from the
// registry, so a request never races the reload (an allocation taking the
// id of a session about to be restored, a release or restart not finding
// one).
func (r *Relay) waitReady(ctx context.Context) error {
	select {
	case <-r.ready:
		return nil
	case <-r.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("mediarelay: still reloading sessions: %w", ctx.Err())
	}
}

// record renders a session, with up its socket toward the origin, as its
// registry record.
func (r *Relay) record(s *session, up *upstream) registry.Session {
	c := s.creds.Load()
	addrs := make([]string, 0, len(s.originAddr))
	for _, a := range s.originAddr {
		addrs = append(addrs, a.String())
	}
	k := c.keys()
	rs := registry.Session{
		ID: s.id, Stream: s.stream, Direction: direction(s.direction), RelayID: r.cfg.RelayID,
		ClientICE: k.Client, OriginICE: k.Origin,
		OriginAddresses: addrs, OriginID: s.originID, Labels: s.labels, CreateTime: s.created,
		RelayOriginAddress: up.local.String(),
	}
	if k.Server != k.Origin {
		rs.ServerICE = k.Server
	}
	if k.OriginClient != k.Client {
		rs.OriginClientICE = k.OriginClient
	}
	return rs
}

// keys returns c as the registry stores them.
func (c *credentials) keys() registry.ICEKeys {
	return registry.ICEKeys{
		Client:       registry.ICECredentials{Ufrag: c.clientUfrag, Pwd: c.clientPwd},
		Origin:       registry.ICECredentials{Ufrag: c.originUfrag, Pwd: c.originPwd},
		Server:       registry.ICECredentials{Ufrag: c.serverUfrag, Pwd: c.serverPwd},
		OriginClient: registry.ICECredentials{Ufrag: c.originClientUfrag, Pwd: c.originClientPwd},
	}
}

// Allocate creates a session (the gRPC AllocateSession).
func (r *Relay) Allocate(ctx context.Context, req *relayv1.AllocateSessionRequest) (*relayv1.AllocateSessionResponse, error) {
	start := time.Now()
	if err := checkAllocate(req); err != nil {
		return nil, err
	}
	origins, err := parseOriginAddrs(req.GetOriginAddresses())
	if err != nil {
		return nil, err
	}
	if err := r.waitReady(ctx); err != nil {
		return nil, err
	}
	id := req.GetSessionId()
	if id == "" {
		id = newSessionID()
	}
	s := &session{
		id: id, stream: req.GetStream(), direction: req.GetDirection(), originID: req.GetOriginId(),
		labels: maps.Clone(req.GetLabels()), originAddr: origins, created: time.Now().UTC(),
	}
	s.creds.Store(newCredentials(req.GetClientIce().GetUfrag(), req.GetClientIce().GetPwd(),
		req.GetOriginIce().GetUfrag(), req.GetOriginIce().GetPwd()))
	r.mu.Lock()
	err = r.admitLocked(s, true)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	up, err := r.openUpstream(s, origins, netip.AddrPort{})
	if err != nil {
		return nil, err
	}
	if r.cfg.Registry != nil {
		// The registry before the tables: it catches a ufrag pair or id
		// held by another relay. The record names the socket toward the
		// origin, which a restart of this relay binds again.
		if err := r.cfg.Registry.CreateSession(ctx, r.record(s, up)); err != nil {
			up.close()
			if errors.Is(err, registry.ErrConflict) {
				return nil, fmt.Errorf("%w: %w", ErrSessionExists, err)
			}
			return nil, fmt.Errorf("mediarelay: recording the session: %w", err)
		}
	}
	if err := r.addSession(s, up, true); err != nil {
		if r.cfg.Registry != nil {
			r.removeRecord(s.id, s.created)
		}
		return nil, err
	}
	r.metrics.allocLatency.Observe(time.Since(start).Seconds())
	r.log.Info("relay: session allocated", "session", id, "stream", s.stream, "origin", origins[0])
	r.emit(relayv1.SessionEventType_SESSION_EVENT_TYPE_ALLOCATED, s)
	return &relayv1.AllocateSessionResponse{Session: s.snapshot(r.cfg.RelayID, 0), Candidates: r.candidates()}, nil
}

// Release frees a session (the gRPC ReleaseSession).
func (r *Relay) Release(ctx context.Context, id string) (*relayv1.Session, error) {
	return r.release(ctx, id, relayv1.SessionEventType_SESSION_EVENT_TYPE_RELEASED)
}

func (r *Relay) release(ctx context.Context, id string, why relayv1.SessionEventType) (*relayv1.Session, error) {
	if err := r.waitReady(ctx); err != nil {
		return nil, err
	}
	s := r.removeSession(id)
	if s == nil {
		return nil, fmt.Errorf("%w: %s", ErrSessionNotFound, id)
	}
	r.closeSession(s)
	if r.cfg.Registry != nil {
		r.removeRecord(id, s.created)
	}
	r.log.Info("relay: session released", "session", id, "reason", why.String())
	snap := s.snapshot(r.cfg.RelayID, relayv1.SessionState_SESSION_STATE_CLOSED)
	r.emitSnapshot(why, snap)
	return snap, nil
}

// Restart installs new ICE credentials (the gRPC RestartSession).
func (r *Relay) Restart(ctx context.Context, req *relayv1.RestartSessionRequest) (*relayv1.RestartSessionResponse, error) {
	if err := checkICE("client", req.GetClientIce()); err != nil {
		return nil, err
	}
	if err := checkICE("origin", req.GetOriginIce()); err != nil {
		return nil, err
	}
	server, originClient := req.GetOriginIce(), req.GetClientIce()
	if req.GetServerIce() != nil {
		if err := checkICE("server", req.GetServerIce()); err != nil {
			return nil, err
		}
		server = req.GetServerIce()
	}
	if req.GetOriginClientIce() != nil {
		if err := checkICE("origin_client", req.GetOriginClientIce()); err != nil {
			return nil, err
		}
		originClient = req.GetOriginClientIce()
	}
	var origins []netip.AddrPort
	if len(req.GetOriginAddresses()) > 0 {
		var err error
		if origins, err = parseOriginAddrs(req.GetOriginAddresses()); err != nil {
			return nil, err
		}
	}
	if err := r.waitReady(ctx); err != nil {
		return nil, err
	}
	s := r.lookupSession(req.GetId())
	if s == nil {
		return nil, fmt.Errorf("%w: %s", ErrSessionNotFound, req.GetId())
	}
	creds := newTranslatedCredentials(req.GetClientIce().GetUfrag(), req.GetClientIce().GetPwd(),
		server.GetUfrag(), server.GetPwd(), req.GetOriginIce().GetUfrag(), req.GetOriginIce().GetPwd(),
		originClient.GetUfrag(), originClient.GetPwd())
	old := s.creds.Load()
	creds.priorityBoost = old.priorityBoost
	if creds.username != old.username {
		if other := r.tabs.byUfrag(creds.username); other != nil {
			return nil, fmt.Errorf("%w: ufrag pair %s", ErrSessionExists, creds.username)
		}
	}
	if r.cfg.Registry != nil {
		var addrs []string
		if origins != nil {
			addrs = req.GetOriginAddresses()
		}
		_, err := r.cfg.Registry.RekeySession(ctx, s.id, creds.keys(), addrs, "")
		if err != nil {
			if errors.Is(err, registry.ErrConflict) {
				return nil, fmt.Errorf("%w: %w", ErrSessionExists, err)
			}
			return nil, fmt.Errorf("mediarelay: recording the restart: %w", err)
		}
	}
	var newUp *upstream
	if origins != nil && !slices.Contains(origins, s.up.Load().origin) {
		var err error
		if newUp, err = r.openUpstream(s, origins, netip.AddrPort{}); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	if s.closed.Load() {
		r.mu.Unlock()
		if newUp != nil {
			newUp.close()
		}
		return nil, fmt.Errorf("%w: %s", ErrSessionNotFound, req.GetId())
	}
	if other := r.tabs.byUfrag(creds.username); other != nil && other != s {
		r.mu.Unlock()
		if newUp != nil {
			newUp.close()
		}
		return nil, fmt.Errorf("%w: ufrag pair %s", ErrSessionExists, creds.username)
	}
	s.prevCreds.Store(old)
	s.creds.Store(creds)
	s.restarted.Store(true)
	r.tabs.setUfragLocked(old.username, nil)
	r.tabs.setUfragLocked(creds.username, s)
	if origins != nil {
		s.originAddr = origins
	}
	var oldUp *upstream
	if newUp != nil {
		oldUp = s.up.Load()
		r.startUpstream(s, newUp)
	}
	r.mu.Unlock()
	if oldUp != nil {
		oldUp.close()
	}
	if newUp != nil && r.cfg.Registry != nil {
		r.noteRelayOrigin(ctx, s.id, newUp.local)
	}
	r.log.Info("relay: session restarted", "session", s.id)
	r.emit(relayv1.SessionEventType_SESSION_EVENT_TYPE_RESTARTED, s)
	return &relayv1.RestartSessionResponse{Session: s.snapshot(r.cfg.RelayID, 0), Candidates: r.candidates()}, nil
}

// Get returns one session (the gRPC GetSession).
func (r *Relay) Get(id string) (*relayv1.Session, error) {
	s := r.lookupSession(id)
	if s == nil {
		return nil, fmt.Errorf("%w: %s", ErrSessionNotFound, id)
	}
	return s.snapshot(r.cfg.RelayID, 0), nil
}

// List returns a page of sessions ordered by id (the gRPC ListSessions).
// The page token is the last id of the previous page.
func (r *Relay) List(req *relayv1.ListSessionsRequest) (*relayv1.ListSessionsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		return nil, invalid("page_size must be 0-%d", maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	r.mu.Lock()
	all := slices.Collect(maps.Values(r.sessions))
	r.mu.Unlock()
	slices.SortFunc(all, func(a, b *session) int { return strings.Compare(a.id, b.id) })
	out := &relayv1.ListSessionsResponse{}
	for _, s := range all {
		if s.id <= req.GetPageToken() && req.GetPageToken() != "" {
			continue
		}
		if req.GetStream() != "" && s.stream != req.GetStream() {
			continue
		}
		snap := s.snapshot(r.cfg.RelayID, 0)
		if req.GetState() != relayv1.SessionState_SESSION_STATE_UNSPECIFIED && snap.State != req.GetState() {
			continue
		}
		if len(out.Sessions) == size {
			out.NextPageToken = out.Sessions[size-1].Id
			break
		}
		out.Sessions = append(out.Sessions, snap)
	}
	return out, nil
}

// Drain stops new allocations; with deadline > 0 it releases the sessions
// still open when the deadline passes (the gRPC Drain).
func (r *Relay) Drain(deadline time.Duration) (*relayv1.DrainResponse, error) {
	if deadline != 0 && deadline < minDrainDeadline {
		return nil, invalid("deadline must be at least %s", minDrainDeadline)
	}
	r.mu.Lock()
	r.draining = true
	if deadline > 0 {
		if r.drainTimer != nil {
			r.drainTimer.Stop()
		}
		r.drainTimer = time.AfterFunc(deadline, r.releaseAll)
	}
	n := len(r.sessions)
	r.mu.Unlock()
	r.log.Info("relay: draining", "sessions", n, "deadline", deadline)
	r.updateRegistration()
	return &relayv1.DrainResponse{Draining: true, SessionCount: uint32(n)}, nil
}

// takenOver stops taking new sessions once a successor started with
// takeover holds this relay's registration: signaling's setups that still
// reach this process (its pooled connection, until this one stops) are
// refused as by a draining relay and go to another, and /readyz answers
// 503. The sessions stay: both processes forward them until this one
// stops.
func (r *Relay) takenOver() {
	r.mu.Lock()
	r.draining = true
	n := len(r.sessions)
	r.mu.Unlock()
	r.log.Warn("relay: a successor took this relay over; taking no new session", "sessions", n)
}

// releaseAll releases every session (the drain deadline).
func (r *Relay) releaseAll() {
	r.mu.Lock()
	ids := slices.Collect(maps.Keys(r.sessions))
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return
	}
	for _, id := range ids {
		_, _ = r.release(context.Background(), id, relayv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED)
	}
}

// Status describes the relay (the gRPC GetStatus).
func (r *Relay) Status() *relayv1.GetStatusResponse {
	r.mu.Lock()
	sessions := slices.Collect(maps.Values(r.sessions))
	draining := r.draining
	r.mu.Unlock()
	var c2oP, c2oB, o2cP, o2cB, di, du, dw, df uint64
	add := func(c *counters) {
		c2oP += c.c2oPackets.Load()
		c2oB += c.c2oBytes.Load()
		o2cP += c.o2cPackets.Load()
		o2cB += c.o2cBytes.Load()
		di += c.dropIntegrity.Load()
		du += c.dropUnbound.Load()
		dw += c.dropWrite.Load()
		df += c.dropForeign.Load()
	}
	add(&r.totals)
	for _, s := range sessions {
		add(&s.counters)
	}
	addrs := make([]string, 0, len(r.cfg.PublicAddrs))
	for _, a := range r.cfg.PublicAddrs {
		addrs = append(addrs, a.String())
	}
	unknownSource, malformed, _, _ := r.dropTotals()
	return &relayv1.GetStatusResponse{
		RelayId: r.cfg.RelayID, Version: r.cfg.Version, Zone: r.cfg.Zone, PublicAddresses: addrs,
		SessionCount: uint32(len(sessions)), MaxSessions: uint32(r.cfg.MaxSessions), Draining: draining,
		StartTime:      timestamp(r.started),
		ClientToOrigin: &relayv1.TrafficCounters{Packets: c2oP, Bytes: c2oB},
		OriginToClient: &relayv1.TrafficCounters{Packets: o2cP, Bytes: o2cB},
		Drops:          &relayv1.DropCounters{StunIntegrity: di, UnboundSource: du, WriteErrors: dw, ForeignSource: df},
		UnknownSource:  unknownSource,
		Malformed:      malformed,
	}
}

// noteRelayOrigin records local as the session's socket toward its origin,
// logging a failure (a restart of this relay then opens a new port, and the
// origin sees a new source until the client's next ICE restart).
func (r *Relay) noteRelayOrigin(ctx context.Context, id string, local netip.AddrPort) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Registry.RequestTimeout())
	defer cancel()
	if err := r.cfg.Registry.NoteRelayOrigin(ctx, id, r.cfg.RelayID, local.String()); err != nil {
		r.log.Warn("relay: recording the session's socket toward its origin failed", "session", id, "addr", local, "err", err)
	}
}

// restore installs a session from its registry record (reload at start, or
// adoption of a session assigned to this relay that it did not know),
// binding its socket toward the origin to the address the record names
// when it can, so the origin keeps seeing the same source.
func (r *Relay) restore(ctx context.Context, rs registry.Session) error {
	origins, err := parseOriginAddrs(rs.OriginAddresses)
	if err != nil {
		return err
	}
	var prefer netip.AddrPort
	if rs.RelayOriginAddress != "" {
		if prefer, err = netip.ParseAddrPort(rs.RelayOriginAddress); err != nil {
			return fmt.Errorf("%w: relay origin address %q", ErrInvalid, rs.RelayOriginAddress)
		}
	}
	s := &session{
		id: rs.ID, stream: rs.Stream, direction: directionFrom(rs.Direction), originID: rs.OriginID,
		labels: rs.Labels, originAddr: origins, created: rs.CreateTime,
	}
	s.creds.Store(credentialsFrom(rs))
	r.mu.Lock()
	err = r.admitLocked(s, false)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	up, err := r.openUpstream(s, origins, prefer)
	if err != nil {
		return err
	}
	if err := r.addSession(s, up, false); err != nil {
		return err
	}
	r.restorePaths(s, rs.ClientPaths)
	if up.local != prefer {
		r.noteRelayOrigin(ctx, s.id, up.local)
	}
	r.emit(relayv1.SessionEventType_SESSION_EVENT_TYPE_ALLOCATED, s)
	return nil
}

// reload restores the sessions the registry assigns to this relay.
func (r *Relay) reload(ctx context.Context) {
	sessions, err := r.cfg.Registry.ListSessionsByRelay(ctx, r.cfg.RelayID)
	if err != nil {
		r.log.Warn("relay: reloading sessions failed; unknown clients are looked up on demand", "err", err)
		return
	}
	n := 0
	for _, rs := range sessions {
		if err := r.restore(ctx, rs); err != nil {
			r.log.Warn("relay: could not restore a session", "session", rs.ID, "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		r.log.Info("relay: sessions reloaded from the registry", "sessions", n)
	}
}

// requestLookup queues an unknown USERNAME for the registry worker without
// ever blocking the socket loop.
func (r *Relay) requestLookup(msg *stun.Message, drops *dropCounters) {
	// The packet itself is dropped either way: the client's next consent
	// check binds once the session is adopted.
	drops.unknownSource.Add(1)
	drops.unknownUsername.Add(1)
	if r.cfg.Registry == nil {
		return
	}
	if len(r.lookups) == cap(r.lookups) {
		// Full (a flood of unknown USERNAMEs): drop without taking the
		// channel's lock, which every data-plane thread would contend for.
		r.lookupDropped.Add(1)
		return
	}
	user, err := msg.Get(stun.AttrUsername)
	if err != nil {
		return
	}
	select {
	case r.lookups <- string(user):
	default:
		r.lookupDropped.Add(1)
	}
}

// lookupLoop asks the registry about unknown USERNAMEs, at most LookupRate
// a second, remembering misses for a while, and adopts sessions assigned to
// this relay.
func (r *Relay) lookupLoop() {
	const negativeTTL = 10 * time.Second
	const maxNegative = 10000
	negative := map[string]time.Time{}
	tokens, last := float64(r.cfg.LookupRate), time.Now()
	for {
		var user string
		select {
		case <-r.closing:
			return
		case user = <-r.lookups:
		}
		now := time.Now()
		if until, ok := negative[user]; ok && now.Before(until) {
			continue
		}
		tokens = min(float64(r.cfg.LookupRate), tokens+now.Sub(last).Seconds()*float64(r.cfg.LookupRate))
		last = now
		if tokens < 1 {
			r.lookupDropped.Add(1)
			continue
		}
		tokens--
		r.metrics.lookups.Inc()
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Registry.RequestTimeout())
		rs, err := r.cfg.Registry.GetSessionByUfrag(ctx, user)
		cancel()
		// A released session whose record is still being removed is not
		// adopted again.
		if err == nil && rs.RelayID == r.cfg.RelayID && !r.removals.has(rs.ID) {
			if err := r.restore(context.Background(), rs); err == nil {
				r.log.Info("relay: adopted a session from the registry", "session", rs.ID)
				continue
			}
		}
		if len(negative) >= maxNegative {
			clear(negative)
		}
		negative[user] = now.Add(negativeTTL)
	}
}

// relayRecord is the relay's registration.
func (r *Relay) relayRecord() registry.Relay {
	addrs := make([]string, 0, len(r.cfg.PublicAddrs))
	for _, a := range r.cfg.PublicAddrs {
		addrs = append(addrs, a.String())
	}
	var tcpAddrs []string
	for _, a := range r.cfg.PublicTCPAddrs {
		tcpAddrs = append(tcpAddrs, a.String())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return registry.Relay{ID: r.cfg.RelayID, GRPCAddress: r.cfg.GRPCAddress, PublicAddresses: addrs,
		Zone: r.cfg.Zone, Draining: r.draining, Sessions: len(r.sessions), MaxSessions: r.cfg.MaxSessions,
		Version: r.cfg.Version, PublicTCPAddresses: tcpAddrs}
}

// registerLoop registers the relay, retrying until etcd answers.
func (r *Relay) registerLoop() {
	backoff := 200 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Registry.RequestTimeout())
		reg, err := r.cfg.Registry.RegisterRelay(ctx, r.relayRecord(), r.cfg.RegistrationTTL)
		cancel()
		if err == nil {
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_ = reg.Close(ctx)
				cancel()
				return
			}
			r.reg = reg
			r.mu.Unlock()
			r.log.Info("relay: registered", "relay", r.cfg.RelayID, "grpc", r.cfg.GRPCAddress)
			select {
			case <-r.closing:
			case <-reg.Taken():
				r.takenOver()
			}
			return
		}
		r.log.Warn("relay: registration failed, retrying", "err", err, "in", backoff)
		select {
		case <-r.closing:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// updateRegistration writes the current load and draining flag.
func (r *Relay) updateRegistration() {
	r.mu.Lock()
	reg := r.reg
	r.mu.Unlock()
	if reg == nil {
		return
	}
	rec := r.relayRecord()
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Registry.RequestTimeout())
	defer cancel()
	if err := reg.Update(ctx, func(x *registry.Relay) { *x = rec }); err != nil {
		r.log.Debug("relay: registration update failed", "err", err)
	}
}
