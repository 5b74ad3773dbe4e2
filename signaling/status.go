package signaling

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rtcedge/rtcedge/internal/bearer"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	statusv1 "github.com/rtcedge/rtcedge/proto/status/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// The operators' view (status.v1.StatusService, GET /v1/streams,
// GET /v1/status, the /status page): built on each call from the registry
// (pins, sessions, origins, relays) and the relays' own counters
// (ListSessions and GetStatus on every live relay, in parallel).

// Limits of a status snapshot.
const (
	// statusRelayTimeout bounds the calls to one relay; a relay slower
	// than that is reported unreachable and the answer partial.
	statusRelayTimeout = 2 * time.Second
	// statusRegistryTimeout bounds the registry reads of one snapshot.
	statusRegistryTimeout = 5 * time.Second
	// statusRelayParallel is how many relays are asked at once.
	statusRelayParallel = 8
	// statusMaxRelaySessions bounds the sessions read from one relay.
	statusMaxRelaySessions = 100_000
)

// statusHint names, in refusals, the flags that open the status API.
const statusHint = "start signaling with -status-token and send it (or the registration token) as a bearer token, " +
	"or call from signaling's host"

// statusPolicy is who may read the status API: holders of the status
// token; without one, callers on this host (on gRPC also peers with a
// verified client certificate). The registration token is accepted too.
func (s *Server) statusPolicy() bearer.Policy {
	return bearer.Policy{Token: s.cfg.StatusToken, Hint: statusHint}
}

// statusMiddleware guards the status REST routes.
func (s *Server) statusMiddleware(next http.Handler) http.Handler {
	guarded := s.statusPolicy().Middleware(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.RegistrationToken != "" && bearer.Check(r.Header.Get("Authorization"), s.cfg.RegistrationToken) {
			next.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// statusRoutes adds the status API's REST routes, the /status page and the
// stream gauges.
func (s *Server) statusRoutes(mux *http.ServeMux) {
	gw := runtime.NewServeMux(runtime.WithIncomingHeaderMatcher(func(k string) (string, bool) {
		if strings.EqualFold(k, "Authorization") {
			return "authorization", true
		}
		return runtime.DefaultHeaderMatcher(k)
	}))
	// As for the registry: the gateway calls in-process, so the policy is
	// applied to the HTTP peer here.
	_ = statusv1.RegisterStatusServiceHandlerServer(context.Background(), gw, &statusService{s: s, viaHTTP: true})
	api := s.instrument("status", s.statusMiddleware(gw).ServeHTTP)
	mux.Handle("GET /v1/streams", api)
	mux.Handle("GET /v1/status", api)
	mux.Handle("GET /status", s.instrument("status-page", statusPage))
	mux.Handle("GET /status/", s.instrument("status-page", statusPage))
	s.metrics.registry.MustRegister(&streamCollector{s: s})
}

// statusService implements status.v1.StatusService.
type statusService struct {
	statusv1.UnimplementedStatusServiceServer
	s       *Server
	viaHTTP bool // behind the REST gateway, whose handler applied the policy
}

func (g *statusService) authorize(ctx context.Context) error {
	if g.viaHTTP {
		return nil
	}
	authz, addr, certified := bearer.Caller(ctx)
	if g.s.cfg.RegistrationToken != "" && bearer.Check(authz, g.s.cfg.RegistrationToken) {
		return nil
	}
	p := g.s.statusPolicy()
	p.VerifiedTLS = true // a gRPC client whose certificate -grpc-client-ca verified
	err := p.Allow(authz, addr, certified)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bearer.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, "a valid status (or registration) bearer token is required")
	}
	return status.Error(codes.PermissionDenied, err.Error()+" ("+statusHint+")")
}

func (g *statusService) ListStreams(ctx context.Context, req *statusv1.ListStreamsRequest) (*statusv1.ListStreamsResponse, error) {
	if err := g.authorize(ctx); err != nil {
		return nil, err
	}
	snap, err := g.s.statusSnapshot(ctx, true)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	out := &statusv1.ListStreamsResponse{Partial: snap.partial}
	for _, st := range snap.streams {
		if req.GetOriginId() == "" || st.OriginId == req.GetOriginId() {
			out.Streams = append(out.Streams, st)
		}
	}
	return out, nil
}

func (g *statusService) GetStatus(ctx context.Context, _ *statusv1.GetStatusRequest) (*statusv1.GetStatusResponse, error) {
	if err := g.authorize(ctx); err != nil {
		return nil, err
	}
	snap, err := g.s.statusSnapshot(ctx, true)
	if err != nil {
		return nil, g.s.regStatus(err)
	}
	out := &statusv1.GetStatusResponse{Origins: snap.origins, Relays: snap.relays, Streams: uint32(len(snap.streams)),
		Partial: snap.partial, Time: timestamppb.New(snap.time)}
	for _, st := range snap.streams {
		out.Viewers += st.Viewers
		out.Publishers += st.Publishers
	}
	return out, nil
}

// snapshot is the edge at one time.
type snapshot struct {
	time    time.Time
	streams []*statusv1.Stream
	origins []*statusv1.OriginStatus
	relays  []*statusv1.RelayStatus
	partial bool
}

// relayView is what one relay said.
type relayView struct {
	status   *relayv1.GetStatusResponse
	sessions map[string]*relayv1.Session
}

// statusSnapshot builds the snapshot; withRelays asks the relays for their
// counters (without, rates are zero and relays are described from their
// registrations).
func (s *Server) statusSnapshot(ctx context.Context, withRelays bool) (*snapshot, error) {
	rctx, cancel := context.WithTimeout(ctx, statusRegistryTimeout)
	defer cancel()
	reg := s.cfg.Registry
	pins, err := reg.ListPins(rctx)
	if err != nil {
		return nil, err
	}
	sessions, err := reg.ListSessions(rctx)
	if err != nil {
		return nil, err
	}
	origins, err := reg.ListOrigins(rctx)
	if err != nil {
		return nil, err
	}
	relays, err := reg.ListRelays(rctx)
	if err != nil {
		return nil, err
	}
	live, err := reg.ListLiveStreams(rctx)
	if err != nil {
		return nil, err
	}
	suspects, err := reg.ListSuspects(rctx)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{time: time.Now().UTC()}
	views := map[string]*relayView{}
	if withRelays {
		views = s.askRelays(ctx, relays)
	}

	// Relays.
	for _, r := range relays {
		rs := &statusv1.RelayStatus{Id: r.ID, Zone: r.Zone, PublicAddresses: r.PublicAddresses, Draining: r.Draining,
			Sessions: uint32(r.Sessions), MaxSessions: uint32(r.MaxSessions), Version: r.Version}
		if v := views[r.ID]; v != nil {
			st := v.status
			rs.Reachable, rs.Draining, rs.Sessions, rs.MaxSessions = true, st.GetDraining(), st.GetSessionCount(), st.GetMaxSessions()
			rs.PacketsPerSecondIn = st.GetClientToOrigin().GetPacketsPerSecond()
			rs.BitsPerSecondIn = st.GetClientToOrigin().GetBitsPerSecond()
			rs.PacketsPerSecondOut = st.GetOriginToClient().GetPacketsPerSecond()
			rs.BitsPerSecondOut = st.GetOriginToClient().GetBitsPerSecond()
		} else if withRelays {
			snap.partial = true
		}
		snap.relays = append(snap.relays, rs)
	}

	// Streams: pins, then the sessions' streams.
	alive := map[string]registry.Origin{}
	for _, o := range origins {
		alive[o.ID] = o
	}
	byStream := map[string]*statusv1.Stream{}
	get := func(key string) *statusv1.Stream {
		st := byStream[key]
		if st == nil {
			st = &statusv1.Stream{Stream: key, Source: statusv1.StreamSource_STREAM_SOURCE_PINNED}
			byStream[key] = st
		}
		return st
	}
	for _, p := range pins {
		st := get(p.Stream)
		st.OriginId, st.PinTime = p.OriginID, timestamppb.New(p.PinTime)
	}
	newestPublisher := map[string]time.Time{}
	for _, rs := range sessions {
		st := get(rs.Stream)
		if st.OriginId == "" {
			st.OriginId = rs.OriginID
		}
		var live *relayv1.Session
		if v := views[rs.RelayID]; v != nil {
			live = v.sessions[rs.ID]
		}
		switch rs.Direction {
		case registry.DirectionPublish:
			st.Publishers++
			st.Source = statusv1.StreamSource_STREAM_SOURCE_EDGE
			if t, ok := newestPublisher[rs.Stream]; !ok || rs.CreateTime.After(t) {
				newestPublisher[rs.Stream] = rs.CreateTime
				st.PublisherSessionId = rs.ID
			}
			st.BitrateInBps += live.GetClientToOrigin().GetBitsPerSecond()
		case registry.DirectionPlay:
			st.Viewers++
			st.BitrateOutBps += live.GetOriginToClient().GetBitsPerSecond()
		}
	}
	// Discovery: origins that report the stream live.
	for _, l := range live {
		st := get(l.Stream)
		st.LiveOriginIds = append(st.LiveOriginIds, l.OriginID)
	}
	for _, st := range byStream {
		if len(st.LiveOriginIds) > 0 {
			slices.Sort(st.LiveOriginIds)
			st.LiveOriginIds = slices.Compact(st.LiveOriginIds)
			if st.Source == statusv1.StreamSource_STREAM_SOURCE_PINNED && st.Publishers == 0 {
				st.Source = statusv1.StreamSource_STREAM_SOURCE_DISCOVERED
			}
			if st.OriginId == "" {
				st.OriginId = st.LiveOriginIds[0]
			}
		}
		_, st.OriginAlive = alive[st.OriginId]
		snap.streams = append(snap.streams, st)
	}
	slices.SortFunc(snap.streams, func(a, b *statusv1.Stream) int { return cmp.Compare(a.Stream, b.Stream) })

	// Origins: the registered ones, and those streams are pinned to after
	// their registration expired.
	perOrigin := map[string]*statusv1.OriginStatus{}
	for _, o := range origins {
		perOrigin[o.ID] = &statusv1.OriginStatus{Id: o.ID, Kind: o.Kind, Zone: o.Zone, Capacity: uint32(o.Capacity),
			Health: statusv1.OriginHealth_ORIGIN_HEALTH_HEALTHY, HeartbeatTime: timestamppb.New(o.HeartbeatTime)}
	}
	for _, st := range snap.streams {
		if st.OriginId == "" {
			continue
		}
		os := perOrigin[st.OriginId]
		if os == nil {
			os = &statusv1.OriginStatus{Id: st.OriginId, Health: statusv1.OriginHealth_ORIGIN_HEALTH_GONE}
			perOrigin[st.OriginId] = os
		}
		if st.PinTime != nil {
			os.Streams++
		}
		os.Viewers += st.Viewers
		os.Publishers += st.Publishers
	}
	for _, sus := range suspects {
		if os := perOrigin[sus.OriginID]; os != nil && os.Health == statusv1.OriginHealth_ORIGIN_HEALTH_HEALTHY {
			os.Health = statusv1.OriginHealth_ORIGIN_HEALTH_SUSPECT
		}
	}
	for _, os := range perOrigin {
		snap.origins = append(snap.origins, os)
	}
	slices.SortFunc(snap.origins, func(a, b *statusv1.OriginStatus) int { return cmp.Compare(a.Id, b.Id) })
	return snap, nil
}

// askRelays calls GetStatus and ListSessions on every relay, at most
// statusRelayParallel at a time, each within statusRelayTimeout; a relay
// that fails is left out.
func (s *Server) askRelays(ctx context.Context, relays []registry.Relay) map[string]*relayView {
	var mu sync.Mutex
	out := map[string]*relayView{}
	var g errgroup.Group
	g.SetLimit(statusRelayParallel)
	for _, r := range relays {
		g.Go(func() error {
			v, err := s.askRelay(ctx, r)
			if err != nil {
				s.log.Debug("signaling: status: relay did not answer", "relay", r.ID, "err", err)
				return nil
			}
			mu.Lock()
			out[r.ID] = v
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	return out
}

func (s *Server) askRelay(ctx context.Context, r registry.Relay) (*relayView, error) {
	ctx, cancel := context.WithTimeout(ctx, statusRelayTimeout)
	defer cancel()
	c, err := s.relayClient(r.GRPCAddress)
	if err != nil {
		return nil, err
	}
	st, err := c.GetStatus(ctx, &relayv1.GetStatusRequest{})
	if err != nil {
		return nil, err
	}
	v := &relayView{status: st, sessions: map[string]*relayv1.Session{}}
	token := ""
	for range statusMaxRelaySessions / 1000 {
		page, err := c.ListSessions(ctx, &relayv1.ListSessionsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, ss := range page.GetSessions() {
			v.sessions[ss.GetId()] = ss
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	return v, nil
}
