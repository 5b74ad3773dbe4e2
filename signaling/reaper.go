package signaling

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// Defaults of the reaper.
const (
	DefaultReapInterval = 30 * time.Second
	DefaultOrphanGrace  = 2 * time.Minute
)

// RunReaper removes orphaned sessions until ctx ends, every ReapInterval:
//
//   - sessions whose relay has had no registration for longer than
//     Config.OrphanGrace (as this instance saw it: from the first pass that
//     found it missing) and that have not changed for as long (a client
//     that ICE-restarts in the meantime moves its session to a live relay
//     instead). For each it deletes the origin's session and the record.
//   - sessions whose relay is alive but does not hold them (absent from its
//     ListSessions, asked once per relay and pass) for longer than
//     Config.OrphanGrace, as this instance saw it, and unchanged for as
//     long: the relay released them while etcd was unreachable and closed
//     before its retries removed the record (reapUnheld). Pending setups'
//     records are left to the setup reaper.
//   - setups whose signaling instance died before finishing them: pending
//     setup records past their deadline (reapSetups).
//   - pins of idle streams (no session, no setup) made more than
//     Config.PinIdle ago, so origins' loads count the streams they serve.
//
// Every signaling instance may run it; the deletes are idempotent, and a
// stale setup is claimed by exactly one reaper before it is undone.
func (s *Server) RunReaper(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.reap(ctx, now)
			s.reapSetups(ctx, now)
			s.releasePins(ctx, now)
		}
	}
}

// maxPinReleases bounds the pins one reaper pass releases.
const maxPinReleases = 1000

// releasePins releases the pins of idle streams.
func (s *Server) releasePins(ctx context.Context, now time.Time) {
	n, err := s.cfg.Registry.ReleaseIdlePins(ctx, now.Add(-s.cfg.PinIdle), maxPinReleases)
	if n > 0 {
		s.metrics.pinsReleased.Add(float64(n))
		s.log.Info("signaling: released the pins of idle streams", "pins", n)
	}
	if err != nil {
		s.log.Debug("signaling: reaper could not release idle pins", "err", err)
	}
}

// reapSetups undoes the setups whose pending record is past its deadline:
// the signaling instance that began them died (a live one cuts a setup off
// at its deadline and clears the record on every path).
//
// Concurrent reapers: each claims a stale record with a compare-and-swap on
// the revision it listed (ClaimSetup), so exactly one undoes it. The claim
// moves the deadline a setup span ahead: a reaper that dies while undoing
// leaves a record that becomes stale again and is retried, which can
// repeat the origin DELETE; a second DELETE is harmless (the origin answers
// 404, the relay NotFound). The setup itself finishes with a compare-and-
// swap on the same record (FinishSetup): a claimed setup cannot complete,
// and a completed one is never claimed.
func (s *Server) reapSetups(ctx context.Context, now time.Time) {
	stale, err := s.cfg.Registry.ListStaleSetups(ctx, now)
	if err != nil {
		s.log.Debug("signaling: reaper could not list pending setups", "err", err)
		return
	}
	for _, p := range stale {
		if ctx.Err() != nil {
			return
		}
		claimed, err := s.cfg.Registry.ClaimSetup(ctx, p, s.instance, now.Add(s.setupSpan()))
		if err != nil {
			// Another reaper claimed it, or it finished: not ours.
			if !errors.Is(err, registry.ErrConflict) && !errors.Is(err, registry.ErrNotFound) {
				s.log.Debug("signaling: reaper could not claim a pending setup", "session", p.ID, "err", err)
			}
			continue
		}
		if err := s.undoSetup(ctx, claimed); err != nil {
			s.log.Warn("signaling: reaper could not undo a dead setup; retrying when its claim expires",
				"session", p.ID, "stream", p.Stream, "err", err)
			continue
		}
		s.metrics.setupsReaped.Inc()
		s.log.Info("signaling: reaped a dead setup", "session", p.ID, "stream", p.Stream, "direction", p.Direction,
			"origin", p.OriginID, "origin_resource", p.OriginResource != "", "created", p.CreateTime)
	}
}

// undoSetup undoes a claimed stale setup: it releases the relay session
// the relay recorded under the setup's id (deleting the record if the relay
// is gone or lost it), deletes the origin's session if the origin answered,
// and deletes the pending record.
func (s *Server) undoSetup(ctx context.Context, p registry.PendingSetup) error {
	rs, err := s.cfg.Registry.GetSession(ctx, p.ID)
	switch {
	case err == nil && rs.OriginResource != "":
		// A complete session: the setup finished and only its pending key
		// was left over (not with FinishSetup, which deletes it at once).
		return s.deleteSetupKey(ctx, p)
	case err == nil:
		if err := s.releaseOnRelay(ctx, rs); err != nil {
			return err
		}
		if err := s.cfg.Registry.DeleteSession(ctx, rs.ID); err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
	case errors.Is(err, registry.ErrNotFound):
		// The relay was not reached, or refused: it holds nothing (it
		// records a session before it takes it).
	default:
		return err
	}
	if p.OriginResource != "" {
		octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
		resp, err := s.origins.Do(octx, http.MethodDelete, p.OriginResource, "", nil, nil)
		cancel()
		if err != nil || resp.Status >= 500 {
			// As for sessions on dead relays: an origin that cannot be
			// reached is usually gone, and its sessions with it.
			s.metrics.originErrors.WithLabelValues("delete").Inc()
			s.log.Warn("signaling: reaper could not delete the origin's session of a dead setup", "session", p.ID, "err", err)
		}
	} else {
		s.log.Warn("signaling: a setup died before the origin answered; an origin session it may have created is not known",
			"session", p.ID, "stream", p.Stream, "origin", p.OriginID)
	}
	return s.deleteSetupKey(ctx, p)
}

func (s *Server) deleteSetupKey(ctx context.Context, p registry.PendingSetup) error {
	if err := s.cfg.Registry.DeleteSetup(ctx, p.ID, p.Rev); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return err
	}
	return nil
}

// releaseOnRelay releases a session on its relay. A relay with no
// registration, or that does not have the session, is fine; a registered
// relay that cannot be reached is an error (retried later).
func (s *Server) releaseOnRelay(ctx context.Context, rs registry.Session) error {
	relay, err := s.cfg.Registry.GetRelay(ctx, rs.RelayID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rc, err := s.relayClient(relay.GRPCAddress)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
	defer cancel()
	if _, err := rc.ReleaseSession(rctx, &relayv1.ReleaseSessionRequest{Id: rs.ID}); err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("relay %s: %w", rs.RelayID, err)
	}
	return nil
}

// reap makes one pass; time is a parameter.
func (s *Server) reap(ctx context.Context, now time.Time) {
	sessions, err := s.cfg.Registry.ListSessions(ctx)
	if err != nil {
		s.log.Debug("signaling: reaper could not list sessions", "err", err)
		return
	}
	orphaned := 0
	checked := map[string]bool{} // relay id -> alive, this pass
	pass := &unheldPass{held: map[string]map[string]bool{}, missing: map[string]bool{}}
	for _, rs := range sessions {
		if ctx.Err() != nil {
			return
		}
		alive, ok := checked[rs.RelayID]
		if !ok {
			var err error
			if alive, err = s.cfg.Registry.RelayAlive(ctx, rs.RelayID); err != nil {
				continue
			}
			checked[rs.RelayID] = alive
		}
		if alive {
			s.reapUnheld(ctx, now, rs, pass)
			continue
		}
		orphaned++
		// The grace counts from when this instance first saw the relay
		// without a registration, not from the session's age: after an
		// etcd outage longer than the relays' lease, every relay registers
		// again under a new lease, and a reaper that looked in between
		// must not take their old sessions for orphans.
		if now.Sub(s.missing.since(rs.RelayID, now)) < s.cfg.OrphanGrace || now.Sub(rs.UpdateTime) < s.cfg.OrphanGrace {
			continue
		}
		if s.reapOrphan(ctx, rs) {
			orphaned--
		}
	}
	s.metrics.orphaned.Set(float64(orphaned))
	s.metrics.unheld.Set(float64(len(pass.missing)))
	s.missing.keep(checked)
	s.unheld.keep(pass.missing)
}

// reapOrphan removes the record of rs, a session of a dead relay past the
// grace, then its origin session; it reports whether the session is gone.
// The record goes first and only if it is still the one listed (same relay,
// same last change): a client's ICE restart may have moved the session onto
// a live relay since, and then its origin session is the moved session's
// and stays.
func (s *Server) reapOrphan(ctx context.Context, rs registry.Session) bool {
	err := s.cfg.Registry.DeleteSessionIf(ctx, rs.ID, func(cur registry.Session) bool {
		return cur.RelayID == rs.RelayID && cur.UpdateTime.Equal(rs.UpdateTime)
	})
	switch {
	case errors.Is(err, registry.ErrConflict):
		s.log.Info("signaling: an orphaned session changed before the reaper removed it; keeping it", "session", rs.ID)
		return false
	case errors.Is(err, registry.ErrNotFound):
		return true // removed meanwhile, with its origin session
	case err != nil:
		s.log.Warn("signaling: reaper could not delete a session", "session", rs.ID, "err", err)
		return false
	}
	if rs.OriginResource != "" {
		octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
		_, err := s.origins.Do(octx, http.MethodDelete, rs.OriginResource, "", nil, nil)
		cancel()
		if err != nil {
			s.log.Warn("signaling: reaper could not delete the origin's session", "session", rs.ID, "err", err)
		}
	}
	s.metrics.reaped.Inc()
	s.log.Info("signaling: reaped an orphaned session", "session", rs.ID, "dead_relay", rs.RelayID, "stream", rs.Stream)
	return true
}

// missingRelays remembers when this instance first saw each relay that
// sessions name without a registration.
type missingRelays struct {
	mu    sync.Mutex
	first map[string]time.Time
}

// since returns when relay id was first seen missing, now if this is the
// first time.
func (m *missingRelays) since(id string, now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.first == nil {
		m.first = map[string]time.Time{}
	}
	if t, ok := m.first[id]; ok {
		return t
	}
	m.first[id] = now
	return now
}

// keep forgets the relays a pass found alive or did not see at all.
func (m *missingRelays) keep(checked map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.first {
		if alive, ok := checked[id]; !ok || alive {
			delete(m.first, id)
		}
	}
}
