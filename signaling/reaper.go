package signaling

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// Defaults of the reaper.
const (
	DefaultReapInterval = 30 * time.Second
	DefaultOrphanGrace  = 2 * time.Minute
)

// RunReaper removes orphaned sessions until ctx ends: sessions whose relay
// has had no registration for longer than Config.OrphanGrace since the
// session last changed (a client that ICE-restarts in the meantime moves
// its session to a live relay instead). For each it deletes the origin's
// session and the record. Every signaling instance may run it; the deletes
// are idempotent.
func (s *Server) RunReaper(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.reap(ctx, now)
		}
	}
}

// reap makes one pass; time is a parameter.
func (s *Server) reap(ctx context.Context, now time.Time) {
	sessions, err := s.cfg.Registry.ListSessions(ctx)
	if err != nil {
		s.log.Debug("signaling: reaper could not list sessions", "err", err)
		return
	}
	orphaned := 0
	for _, rs := range sessions {
		alive, err := s.cfg.Registry.RelayAlive(ctx, rs.RelayID)
		if err != nil || alive {
			continue
		}
		orphaned++
		if now.Sub(rs.UpdateTime) < s.cfg.OrphanGrace {
			continue
		}
		if rs.OriginResource != "" {
			octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
			_, err := s.origins.Do(octx, http.MethodDelete, rs.OriginResource, "", nil, nil)
			cancel()
			if err != nil {
				s.log.Warn("signaling: reaper could not delete the origin's session", "session", rs.ID, "err", err)
			}
		}
		if err := s.cfg.Registry.DeleteSession(ctx, rs.ID); err != nil && !errors.Is(err, registry.ErrNotFound) {
			s.log.Warn("signaling: reaper could not delete a session", "session", rs.ID, "err", err)
			continue
		}
		orphaned--
		s.metrics.reaped.Inc()
		s.log.Info("signaling: reaped an orphaned session", "session", rs.ID, "dead_relay", rs.RelayID, "stream", rs.Stream)
	}
	s.metrics.orphaned.Set(float64(orphaned))
}
