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

// maxRelayListPages bounds the pages of 1000 one reaper pass reads from one
// relay's ListSessions.
const maxRelayListPages = 100

// unheldPass is one reaper pass's view of the live relays' sessions: what
// each relay holds (asked once per relay and pass, when a record names it)
// and which records are a pending setup's.
type unheldPass struct {
	held      map[string]map[string]bool // relay id -> session ids; nil: it did not answer
	setups    map[string]bool            // session ids of pending setups; nil until read
	setupsErr error
	missing   map[string]bool // session ids seen missing on their live relay this pass
}

// reapUnheld handles the record of a session whose relay is alive: a record
// that the relay does not hold (the relay released the session while etcd
// was unreachable and could not remove the record, and then closed before
// it could retry) is removed, and its origin session deleted, once this
// instance has seen it missing from the relay for Config.OrphanGrace and
// it has not changed for as long. A pending setup's record is never
// touched (reapSetups undoes setups); a relay that does not answer counts
// as holding everything. The removal is conditional on the record being
// unchanged (a move to another relay, or a new session under the id, is
// left alone), and on the relay still not having the session when asked
// once more.
func (s *Server) reapUnheld(ctx context.Context, now time.Time, rs registry.Session, p *unheldPass) {
	held, ok := p.held[rs.RelayID]
	if !ok {
		var err error
		if held, err = s.relayHolds(ctx, rs.RelayID); err != nil {
			s.log.Debug("signaling: reaper could not list a relay's sessions", "relay", rs.RelayID, "err", err)
		}
		p.held[rs.RelayID] = held
	}
	if held == nil || held[rs.ID] {
		return
	}
	if p.setups == nil && p.setupsErr == nil {
		setups, err := s.cfg.Registry.ListSetups(ctx)
		if err != nil {
			p.setupsErr = err
			s.log.Debug("signaling: reaper could not list pending setups", "err", err)
		} else {
			p.setups = make(map[string]bool, len(setups))
			for _, st := range setups {
				p.setups[st.ID] = true
			}
		}
	}
	if p.setupsErr != nil || p.setups[rs.ID] {
		return
	}
	p.missing[rs.ID] = true
	first := s.unheld.since(rs.ID, now)
	if now.Sub(first) < s.cfg.OrphanGrace || now.Sub(rs.UpdateTime) < s.cfg.OrphanGrace {
		return
	}
	// Ask once more: the relay may have adopted the session since the list.
	if has, err := s.relayHas(ctx, rs.RelayID, rs.ID); err != nil || has {
		return
	}
	err := s.cfg.Registry.DeleteSessionIf(ctx, rs.ID, func(cur registry.Session) bool {
		return cur.RelayID == rs.RelayID && cur.UpdateTime.Equal(rs.UpdateTime)
	})
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrConflict):
		return // gone, or changed since the list: not the record judged
	case err != nil:
		s.log.Warn("signaling: reaper could not delete a session its relay does not hold", "session", rs.ID, "err", err)
		return
	}
	s.unheld.forget(rs.ID)
	delete(p.missing, rs.ID)
	if rs.OriginResource != "" {
		octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
		resp, err := s.origins.Do(octx, http.MethodDelete, rs.OriginResource, "", nil, nil)
		cancel()
		if err != nil || resp.Status >= 500 {
			s.metrics.originErrors.WithLabelValues("delete").Inc()
			s.log.Warn("signaling: reaper could not delete the origin's session", "session", rs.ID, "err", err)
		}
	}
	s.metrics.unheldReaped.Inc()
	s.log.Info("signaling: reaped a session its live relay does not hold", "session", rs.ID, "relay", rs.RelayID,
		"stream", rs.Stream, "unheld_for", now.Sub(first).Round(time.Second))
}

// relayHolds lists the session ids relay id holds (its ListSessions).
func (s *Server) relayHolds(ctx context.Context, id string) (map[string]bool, error) {
	rc, err := s.relayClientByID(ctx, id)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
	defer cancel()
	held := map[string]bool{}
	token := ""
	for range maxRelayListPages {
		page, err := rc.ListSessions(rctx, &relayv1.ListSessionsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("relay %s: %w", id, err)
		}
		for _, ss := range page.GetSessions() {
			held[ss.GetId()] = true
		}
		if token = page.GetNextPageToken(); token == "" {
			return held, nil
		}
	}
	return nil, fmt.Errorf("relay %s: more than %d sessions listed", id, maxRelayListPages*1000)
}

// relayHas asks relay id whether it holds session sid.
func (s *Server) relayHas(ctx context.Context, id, sid string) (bool, error) {
	rc, err := s.relayClientByID(ctx, id)
	if err != nil {
		return false, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
	defer cancel()
	_, err = rc.GetSession(rctx, &relayv1.GetSessionRequest{Id: sid})
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("relay %s: %w", id, err)
}

// relayClientByID returns a client for the registered relay id.
func (s *Server) relayClientByID(ctx context.Context, id string) (relayv1.RelayServiceClient, error) {
	relay, err := s.cfg.Registry.GetRelay(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.relayClient(relay.GRPCAddress)
}

// unheldSessions remembers when this instance first saw each record that
// its live relay does not hold.
type unheldSessions struct {
	mu    sync.Mutex
	first map[string]time.Time
}

// since returns when session id was first seen missing from its relay, now
// if this is the first time.
func (u *unheldSessions) since(id string, now time.Time) time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.first == nil {
		u.first = map[string]time.Time{}
	}
	if t, ok := u.first[id]; ok {
		return t
	}
	u.first[id] = now
	return now
}

func (u *unheldSessions) forget(id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.first, id)
}

// keep forgets the sessions a pass did not see missing from their relay
// (held, gone, their relay dead or not answering): the grace counts again
// from the next time one is seen missing.
func (u *unheldSessions) keep(missing map[string]bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id := range u.first {
		if !missing[id] {
			delete(u.first, id)
		}
	}
}
