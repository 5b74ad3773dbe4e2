package mediarelay

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// grpcService adapts a Relay to relay.v1.RelayService.
type grpcService struct {
	relayv1.UnimplementedRelayServiceServer
	r *Relay
}

// GRPCService returns the relay.v1.RelayService implementation.
func (r *Relay) GRPCService() relayv1.RelayServiceServer { return &grpcService{r: r} }

// RegisterGRPC registers RelayService, grpc.health.v1 and server reflection
// on s.
func RegisterGRPC(s *grpc.Server, r *Relay) {
	relayv1.RegisterRelayServiceServer(s, r.GRPCService())
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(relayv1.RelayService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	reflection.Register(s)
}

// toStatus maps the relay's errors to gRPC codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, registry.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrSessionNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrSessionExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrDraining), errors.Is(err, ErrClosed), errors.Is(err, registry.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, ErrFull):
		code = codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

func (g *grpcService) AllocateSession(ctx context.Context, req *relayv1.AllocateSessionRequest) (*relayv1.AllocateSessionResponse, error) {
	resp, err := g.r.Allocate(ctx, req)
	return resp, toStatus(err)
}

func (g *grpcService) GetSession(_ context.Context, req *relayv1.GetSessionRequest) (*relayv1.GetSessionResponse, error) {
	s, err := g.r.Get(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relayv1.GetSessionResponse{Session: s}, nil
}

func (g *grpcService) ListSessions(_ context.Context, req *relayv1.ListSessionsRequest) (*relayv1.ListSessionsResponse, error) {
	resp, err := g.r.List(req)
	return resp, toStatus(err)
}

func (g *grpcService) ReleaseSession(ctx context.Context, req *relayv1.ReleaseSessionRequest) (*relayv1.ReleaseSessionResponse, error) {
	s, err := g.r.Release(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relayv1.ReleaseSessionResponse{Session: s}, nil
}

func (g *grpcService) RestartSession(ctx context.Context, req *relayv1.RestartSessionRequest) (*relayv1.RestartSessionResponse, error) {
	resp, err := g.r.Restart(ctx, req)
	return resp, toStatus(err)
}

func (g *grpcService) Drain(_ context.Context, req *relayv1.DrainRequest) (*relayv1.DrainResponse, error) {
	if d := req.GetDeadline(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, status.Error(codes.InvalidArgument, "deadline: "+err.Error())
		}
	}
	resp, err := g.r.Drain(req.GetDeadline().AsDuration())
	return resp, toStatus(err)
}

func (g *grpcService) GetStatus(context.Context, *relayv1.GetStatusRequest) (*relayv1.GetStatusResponse, error) {
	return g.r.statusWithRates(), nil
}

func (g *grpcService) WatchSessions(req *relayv1.WatchSessionsRequest, stream grpc.ServerStreamingServer[relayv1.WatchSessionsResponse]) error {
	every, err := statsInterval(req)
	if err != nil {
		return err
	}
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	sub, cancel := g.r.subscribe(req.GetStream())
	defer cancel()
	if req.GetIncludeExisting() {
		page := &relayv1.ListSessionsResponse{}
		for first := true; first || page.NextPageToken != ""; first = false {
			var err error
			page, err = g.r.List(&relayv1.ListSessionsRequest{PageSize: maxPageSize, PageToken: page.GetNextPageToken(), Stream: req.GetStream()})
			if err != nil {
				return toStatus(err)
			}
			for _, s := range page.Sessions {
				typ := relayv1.SessionEventType_SESSION_EVENT_TYPE_ALLOCATED
				if s.State == relayv1.SessionState_SESSION_STATE_CONNECTED {
					typ = relayv1.SessionEventType_SESSION_EVENT_TYPE_CONNECTED
				}
				if err := stream.Send(&relayv1.WatchSessionsResponse{Type: typ, Session: s, Time: s.CreateTime}); err != nil {
					return err
				}
			}
		}
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-tick:
			if err := g.sendStats(req.GetStream(), stream); err != nil {
				return err
			}
		case ev, ok := <-sub.ch:
			if !ok {
				g.r.mu.Lock()
				lagged := sub.lagged
				g.r.mu.Unlock()
				if lagged {
					return status.Error(codes.ResourceExhausted, "watcher fell too far behind; watch again")
				}
				return status.Error(codes.Unavailable, "relay is shutting down")
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
