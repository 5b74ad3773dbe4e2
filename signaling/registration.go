package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rtcedge/rtcedge/internal/bearer"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// registrationHint names, in refusals, the flags that open registration.
const registrationHint = "start signaling with -registration-token and send it as a bearer token, " +
	"or with -insecure-open-registration on a private network"

// registrationPolicy is who may register origins: with a
// RegistrationToken, callers that present it; without one, loopback peers
// only (on gRPC also peers with a verified client certificate), unless
// InsecureOpenRegistration.
func (s *Server) registrationPolicy() bearer.Policy {
	return bearer.Policy{Token: s.cfg.RegistrationToken, Insecure: s.cfg.InsecureOpenRegistration, Hint: registrationHint}
}

// registryService implements origin.v1.OriginRegistry.
type registryService struct {
	originv1.UnimplementedOriginRegistryServer
	s *Server
	// viaHTTP: the instance behind the REST gateway, whose HTTP handler
	// applied the policy to the HTTP peer already (the gateway's calls have
	// no gRPC peer).
	viaHTTP bool
}

// authorize applies the registration policy to a gRPC call: 401-like
// Unauthenticated without the token, PermissionDenied for a peer that is
// not on this host when no token is configured.
func (g *registryService) authorize(ctx context.Context) error {
	if g.viaHTTP {
		return nil
	}
	p := g.s.registrationPolicy()
	p.VerifiedTLS = true // a gRPC client whose certificate -grpc-client-ca verified
	authz, addr, certified := bearer.Caller(ctx)
	err := p.Allow(authz, addr, certified)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bearer.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, "a valid registration bearer token is required")
	}
	g.s.log.Warn("signaling: registration refused: no registration token is configured and the peer is not on this host", "peer", addr)
	return status.Error(codes.PermissionDenied, err.Error()+" ("+registrationHint+")")
}

// regStatus maps a registry failure to a gRPC status: a refused input
// keeps its message (it describes the caller's request); the store's own
// failures get a stable one, their cause logged.
func (s *Server) regStatus(err error) error {
	switch {
	case errors.Is(err, registry.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, registry.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, registry.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, registry.ErrUnavailable):
		s.log.Warn("signaling: registry unavailable", "err", err)
		return status.Error(codes.Unavailable, "the registry is unavailable; retry")
	}
	s.log.Error("signaling: registry call failed", "err", err)
	return status.Error(codes.Internal, "internal error")
}

var kinds = map[originv1.OriginKind]string{
	originv1.OriginKind_ORIGIN_KIND_SRS:      registry.OriginKindSRS,
	originv1.OriginKind_ORIGIN_KIND_MEDIAMTX: registry.OriginKindMediaMTX,
	originv1.OriginKind_ORIGIN_KIND_WHIP:     registry.OriginKindWHIP,
}

func toProto(o registry.Origin, streams int) *originv1.Origin {
	out := &originv1.Origin{Id: o.ID, ApiBaseUrl: o.APIBaseURL, WhipUrlTemplate: o.WHIPURLTemplate,
		WhepUrlTemplate: o.WHEPURLTemplate, MediaAddresses: o.MediaAddresses, Zone: o.Zone, Labels: o.Labels,
		Capacity: o.Capacity, Ttl: durationpb.New(o.TTL), Streams: uint32(streams),
		RegisterTime: timestamppb.New(o.RegisterTime), HeartbeatTime: timestamppb.New(o.HeartbeatTime)}
	for k, v := range kinds {
		if v == o.Kind {
			out.Kind = k
		}
	}
	return out
}

func checkURL(field, u string) error {
	if u == "" {
		return nil
	}
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") || len(u) > 2048 {
		return status.Errorf(codes.InvalidArgument, "%s %q: want an http or https URL", field, u)
	}
	return nil
}

func (g *registryService) RegisterOrigin(ctx context.Context, req *originv1.RegisterOriginRequest) (*originv1.RegisterOriginResponse, error) {
	if err := g.authorize(ctx); err != nil {
		return nil, err
	}
	o := req.GetOrigin()
	if o == nil {
		return nil, status.Error(codes.InvalidArgument, "origin is required")
	}
	kind, ok := kinds[o.GetKind()]
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "kind must be ORIGIN_KIND_SRS, ORIGIN_KIND_MEDIAMTX or ORIGIN_KIND_WHIP")
	}
	for _, f := range []struct{ name, v string }{{"api_base_url", o.GetApiBaseUrl()}, {"whip_url_template", o.GetWhipUrlTemplate()}, {"whep_url_template", o.GetWhepUrlTemplate()}} {
		if err := checkURL(f.name, f.v); err != nil {
			return nil, err
		}
	}
	if kind == registry.OriginKindWHIP && (o.GetWhipUrlTemplate() == "" || o.GetWhepUrlTemplate() == "") {
		return nil, status.Error(codes.InvalidArgument, "ORIGIN_KIND_WHIP needs whip_url_template and whep_url_template")
	}
	if kind != registry.OriginKindWHIP && o.GetApiBaseUrl() == "" {
		return nil, status.Error(codes.InvalidArgument, "api_base_url is required")
	}
	if len(o.GetMediaAddresses()) > 8 {
		return nil, status.Error(codes.InvalidArgument, "at most 8 media_addresses")
	}
	for _, a := range o.GetMediaAddresses() {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "media address %q: want ip:port", a)
		}
	}
	if len(o.GetLabels()) > 16 || len(o.GetZone()) > 64 {
		return nil, status.Error(codes.InvalidArgument, "at most 16 labels and a zone of at most 64 bytes")
	}
	rec := registry.Origin{ID: o.GetId(), Kind: kind, APIBaseURL: o.GetApiBaseUrl(), WHIPURLTemplate: o.GetWhipUrlTemplate(),
		WHEPURLTemplate: o.GetWhepUrlTemplate(), MediaAddresses: o.GetMediaAddresses(), Zone: o.GetZone(),
		Labels: o.GetLabels(), Capacity: o.GetCapacity()}
	if o.GetTtl() != nil {
		rec.TTL = o.GetTtl().AsDuration()
	}
	stored, created, err := g.s.cfg.Registry.RegisterOrigin(ctx, rec)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	if created {
		g.s.log.Info("signaling: origin registered", "origin", stored.ID, "kind", stored.Kind)
	}
	return &originv1.RegisterOriginResponse{Origin: toProto(stored, 0), Created: created}, nil
}

func (g *registryService) DeregisterOrigin(ctx context.Context, req *originv1.DeregisterOriginRequest) (*originv1.DeregisterOriginResponse, error) {
	if err := g.authorize(ctx); err != nil {
		return nil, err
	}
	if err := g.s.cfg.Registry.DeregisterOrigin(ctx, req.GetId()); err != nil {
		return nil, g.s.regStatus(err)
	}
	return &originv1.DeregisterOriginResponse{}, nil
}

func (g *registryService) ListOrigins(ctx context.Context, req *originv1.ListOriginsRequest) (*originv1.ListOriginsResponse, error) {
	if err := g.authorize(ctx); err != nil {
		return nil, err
	}
	origins, err := g.s.cfg.Registry.ListOrigins(ctx)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	pins, err := g.s.cfg.Registry.ListPins(ctx)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	streams := map[string]int{}
	for _, p := range pins {
		streams[p.OriginID]++
	}
	out := &originv1.ListOriginsResponse{}
	for _, o := range origins {
		if req.GetZone() == "" || o.Zone == req.GetZone() {
			out.Origins = append(out.Origins, toProto(o, streams[o.ID]))
		}
	}
	return out, nil
}

func (g *registryService) ListStreams(ctx context.Context, req *originv1.ListStreamsRequest) (*originv1.ListStreamsResponse, error) {
	if err := g.authorize(ctx); err != nil {
		return nil, err
	}
	pins, err := g.s.cfg.Registry.ListPins(ctx)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	origins, err := g.s.cfg.Registry.ListOrigins(ctx)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	alive := map[string]bool{}
	for _, o := range origins {
		alive[o.ID] = true
	}
	out := &originv1.ListStreamsResponse{}
	for _, p := range pins {
		if req.GetOriginId() == "" || p.OriginID == req.GetOriginId() {
			out.Streams = append(out.Streams, &originv1.StreamPin{Stream: p.Stream, OriginId: p.OriginID,
				PinTime: timestamppb.New(p.PinTime), OriginAlive: alive[p.OriginID]})
		}
	}
	return out, nil
}

// srsRegistration is SRS's heartbeat body.
type srsRegistration struct {
	DeviceID string   `json:"device_id"`
	IP       string   `json:"ip"`
	Server   string   `json:"server"`
	Service  string   `json:"service"`
	PID      string   `json:"pid"`
	RTMP     []string `json:"rtmp"`
	HTTP     []string `json:"http"`
	API      []string `json:"api"`
	SRT      []string `json:"srt"`
	RTC      []string `json:"rtc"`
}

// srsPort parses "1985", ":1985", "udp://127.0.0.1:8000" or "ip:port" into
// host and port; host is "" when only a port was given.
func srsPort(v string) (string, int, error) {
	if i := strings.Index(v, "://"); i >= 0 {
		v = v[i+3:]
	}
	if p, err := strconv.Atoi(strings.TrimPrefix(v, ":")); err == nil && p > 0 && p < 65536 {
		return "", p, nil
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", v)
	}
	return host, p, nil
}

// SRS's default ports, assumed when its heartbeat does not carry them
// (heartbeat { ports on; } is off by default).
const srsDefaultAPIPort = 1985

// parseSRSRegistration turns SRS's heartbeat body into an origin
// registration. source is the heartbeat's peer address, used when the body
// has no ip. missing names what the body lacked and was derived (SRS sends
// its ports only with heartbeat { ports on; }).
func parseSRSRegistration(body []byte, source netip.Addr) (o registry.Origin, missing []string, err error) {
	var req srsRegistration
	if err := json.Unmarshal(body, &req); err != nil {
		return registry.Origin{}, nil, fmt.Errorf("want SRS's register JSON: %w", err)
	}
	id := req.DeviceID
	if id == "" {
		id = req.Server
	}
	if id == "" {
		return registry.Origin{}, nil, errors.New("device_id or server is required")
	}
	ip, err := netip.ParseAddr(req.IP)
	if err != nil || ip.IsUnspecified() {
		if !source.IsValid() {
			return registry.Origin{}, nil, errors.New("ip is required")
		}
		ip = source.Unmap()
		missing = append(missing, "ip (the heartbeat's source address is used)")
	}
	apiPort := srsDefaultAPIPort
	if len(req.API) == 0 {
		missing = append(missing, fmt.Sprintf("api (SRS's default HTTP API port %d is assumed)", srsDefaultAPIPort))
	} else if _, apiPort, err = srsPort(req.API[0]); err != nil {
		return registry.Origin{}, nil, fmt.Errorf("api: %w", err)
	}
	if len(req.RTC) == 0 {
		missing = append(missing, "rtc (media addresses come from SRS's answers)")
	}
	o = registry.Origin{ID: id, Kind: registry.OriginKindSRS, APIBaseURL: "http://" + netip.AddrPortFrom(ip, uint16(apiPort)).String(),
		TTL: registry.DefaultOriginTTL, Labels: map[string]string{"source": "srs-heartbeat"}}
	if req.Server != "" && len(req.Server) <= 128 {
		// SRS's http_hooks name the server by it (server_id).
		o.Labels["srs_server"] = req.Server
	}
	for _, rtc := range req.RTC[:min(len(req.RTC), 8)] {
		host, port, err := srsPort(rtc)
		if err != nil {
			continue
		}
		a := ip
		if h, err := netip.ParseAddr(host); err == nil && !h.IsUnspecified() {
			a = h
		}
		o.MediaAddresses = append(o.MediaAddresses, netip.AddrPortFrom(a, uint16(port)).String())
	}
	return o, missing, nil
}

// srsTTL is the lease of an SRS heartbeat registration: ?ttl= when the
// heartbeat URL has it, else three heartbeat intervals as observed between
// the previous heartbeat (prev, or this instance's memory of it) and now,
// in whole seconds within the registry's bounds; the previous TTL stays
// while it is 2-5 intervals, so jitter does not renew the lease each time.
// Without a previous heartbeat: registry.DefaultOriginTTL.
func srsTTL(explicit string, prevTTL time.Duration, last, now time.Time) (time.Duration, error) {
	if explicit != "" {
		d, err := time.ParseDuration(explicit)
		if err != nil || d < registry.MinOriginTTL || d > registry.MaxOriginTTL {
			return 0, fmt.Errorf("ttl %q: want a duration from %s to %s", explicit, registry.MinOriginTTL, registry.MaxOriginTTL)
		}
		return d, nil
	}
	interval := now.Sub(last)
	if last.IsZero() || interval <= 0 || interval > registry.MaxOriginTTL {
		if prevTTL > 0 {
			return prevTTL, nil
		}
		return registry.DefaultOriginTTL, nil
	}
	if prevTTL >= 2*interval && prevTTL <= 5*interval {
		return prevTTL, nil
	}
	ttl := (3*interval + time.Second - 1).Truncate(time.Second)
	return min(max(ttl, registry.MinOriginTTL), registry.MaxOriginTTL), nil
}

// srsReply writes SRS's JSON reply {"code", "msg"}.
func srsReply(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "msg": msg})
}

// srsAuthorize applies the registration policy to a call from SRS (its
// heartbeat or http_hooks) and answers a refused one: SRS cannot set
// headers, so the token may come in the URL (?token=T) instead.
func (s *Server) srsAuthorize(w http.ResponseWriter, r *http.Request, what string) bool {
	authz := r.Header.Get("Authorization")
	if tok := r.URL.Query().Get("token"); authz == "" && tok != "" {
		authz = "Bearer " + tok
	}
	var peerAddr net.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peerAddr = net.TCPAddrFromAddrPort(ap)
	}
	switch err := s.registrationPolicy().Allow(authz, peerAddr, false); {
	case errors.Is(err, bearer.ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="rtcedge"`)
		srsReply(w, http.StatusUnauthorized, http.StatusUnauthorized, "a valid registration bearer token is required")
		return false
	case err != nil:
		s.logger(r.Context()).Warn("signaling: "+what+" refused: no registration token is configured and the peer is not on this host",
			"remote", r.RemoteAddr)
		srsReply(w, http.StatusForbidden, http.StatusForbidden, err.Error()+" ("+registrationHint+")")
		return false
	}
	return true
}

// srsRegister handles SRS's POST /api/v1/srs/register heartbeat.
func (s *Server) srsRegister(w http.ResponseWriter, r *http.Request) {
	reply := func(status, code int, msg string) { srsReply(w, status, code, msg) }
	if !s.srsAuthorize(w, r, "SRS registration") {
		return
	}
	body, herr := s.readBody(w, r)
	if herr != nil {
		reply(herr.status, herr.status, herr.detail)
		return
	}
	var source netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		source = ap.Addr()
	}
	o, missing, err := parseSRSRegistration(body, source)
	if err != nil {
		s.logger(r.Context()).Warn("signaling: SRS heartbeat refused", "remote", r.RemoteAddr, "err", err)
		reply(http.StatusBadRequest, http.StatusBadRequest, err.Error())
		return
	}
	if len(missing) > 0 && s.health.warnOnce(o.ID) {
		s.logger(r.Context()).Warn("signaling: SRS heartbeat without its ports (SRS sends them only with heartbeat { ports on; }); registered with derived values",
			"origin", o.ID, "remote", r.RemoteAddr, "missing", strings.Join(missing, "; "), "api", o.APIBaseURL)
	}
	now := time.Now()
	var prevTTL time.Duration
	last := s.health.lastBeat(o.ID, now)
	if prev, err := s.cfg.Registry.GetOrigin(r.Context(), o.ID); err == nil {
		prevTTL, last = prev.TTL, prev.HeartbeatTime
	}
	if o.TTL, err = srsTTL(r.URL.Query().Get("ttl"), prevTTL, last, now); err != nil {
		reply(http.StatusBadRequest, http.StatusBadRequest, err.Error())
		return
	}
	if _, _, err := s.cfg.Registry.RegisterOrigin(r.Context(), o); err != nil {
		st, msg := http.StatusInternalServerError, "internal error"
		switch {
		case errors.Is(err, registry.ErrInvalid):
			st, msg = http.StatusBadRequest, err.Error()
		case errors.Is(err, registry.ErrUnavailable):
			st, msg = http.StatusServiceUnavailable, "the registry is unavailable; retry"
		}
		if st != http.StatusBadRequest {
			s.logger(r.Context()).Warn("signaling: SRS registration failed", "origin", o.ID, "err", err)
		}
		reply(st, st, msg)
		return
	}
	reply(http.StatusOK, 0, "")
}
