package demoorigin

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
)

// DefaultTTL is the lease TTL NewRegistration asks for.
const DefaultTTL = 15 * time.Second

// NewRegistration describes a demo origin to rtcedge: kind WHIP, with
// "{base}/{stream}/whip" and "{base}/{stream}/whep" URL templates, its media
// addresses ("ip:port") and the lease ttl (DefaultTTL when 0).
func NewRegistration(id, baseURL string, mediaAddrs []string, ttl time.Duration) *originv1.Origin {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	base := strings.TrimSuffix(baseURL, "/")
	return &originv1.Origin{
		Id:              id,
		Kind:            originv1.OriginKind_ORIGIN_KIND_WHIP,
		ApiBaseUrl:      base,
		WhipUrlTemplate: base + "/{stream}/whip",
		WhepUrlTemplate: base + "/{stream}/whep",
		MediaAddresses:  mediaAddrs,
		Ttl:             durationpb.New(ttl),
		Labels:          map[string]string{"software": "rtcedge-demo-origin"},
	}
}

// Heartbeat keeps an origin registered with rtcedge's signaling: Run calls
// RegisterOrigin at once and then every Interval, retrying failures with
// backoff, and calls DeregisterOrigin when its context ends. Failures are
// logged, never fatal.
type Heartbeat struct {
	// Client is signaling's OriginRegistry client.
	Client originv1.OriginRegistryClient
	// Origin is the registration to keep alive (see NewRegistration).
	Origin *originv1.Origin
	// Interval between refreshes; default a third of Origin's TTL (30 s
	// when unset, as signaling assumes).
	Interval time.Duration
	// Token, when set, is sent as "authorization: Bearer <token>".
	Token string
	// CallTimeout bounds each call (default 5 s).
	CallTimeout time.Duration
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
}

// Run registers until ctx is done, then deregisters. It returns nil after
// deregistering (or failing to, which is logged).
func (h *Heartbeat) Run(ctx context.Context) error {
	if h.Client == nil || h.Origin == nil {
		return fmt.Errorf("demoorigin: Heartbeat needs a Client and an Origin")
	}
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	interval := h.Interval
	if interval <= 0 {
		ttl := 30 * time.Second
		if h.Origin.GetTtl() != nil {
			ttl = h.Origin.GetTtl().AsDuration()
		}
		interval = ttl / 3
	}
	const minBackoff = 500 * time.Millisecond
	backoff := minBackoff
	registered := false
	for {
		wait := interval
		created, err := h.register(ctx)
		switch {
		case err == nil:
			if created || !registered {
				log.Info("registered with signaling", "origin", h.Origin.GetId(), "created", created)
			}
			registered = true
			backoff = minBackoff
		case ctx.Err() != nil:
		default:
			log.Warn("origin registration failed; retrying", "origin", h.Origin.GetId(), "err", err, "retry_in", backoff)
			registered = false
			wait = min(backoff, interval)
			backoff = min(2*backoff, interval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			h.deregister(log)
			return nil
		case <-t.C:
		}
	}
}

func (h *Heartbeat) callContext(parent context.Context) (context.Context, context.CancelFunc) {
	timeout := h.CallTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	if h.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+h.Token)
	}
	return ctx, cancel
}

func (h *Heartbeat) register(parent context.Context) (bool, error) {
	ctx, cancel := h.callContext(parent)
	defer cancel()
	resp, err := h.Client.RegisterOrigin(ctx, &originv1.RegisterOriginRequest{Origin: h.Origin})
	if err != nil {
		return false, fmt.Errorf("demoorigin: RegisterOrigin: %w", err)
	}
	return resp.GetCreated(), nil
}

func (h *Heartbeat) deregister(log *slog.Logger) {
	ctx, cancel := h.callContext(context.Background())
	defer cancel()
	if _, err := h.Client.DeregisterOrigin(ctx, &originv1.DeregisterOriginRequest{Id: h.Origin.GetId()}); err != nil {
		log.Warn("origin deregistration failed", "origin", h.Origin.GetId(), "err", err)
		return
	}
	log.Info("deregistered from signaling", "origin", h.Origin.GetId())
}
