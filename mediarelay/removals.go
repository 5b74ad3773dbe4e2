package mediarelay

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// Bounds of the retried removals of released sessions' records.
const (
	// maxPendingRemovals bounds the records waiting for their removal; a
	// release beyond it tries once and leaves a failure to signaling's
	// reaper (it removes records a live relay does not hold).
	maxPendingRemovals = 10000
	// removalBackoffMin and removalBackoffMax bound the wait between two
	// passes over the pending removals while they fail: it doubles from
	// the first to the second.
	removalBackoffMin = time.Second
	removalBackoffMax = 5 * time.Second
	// closeRemovalTimeout bounds Close's last attempt at the pending
	// removals.
	closeRemovalTimeout = 3 * time.Second
)

// removals are the registry records of released sessions being removed:
// from the release until the removal succeeded, the record turned out gone,
// or it turned out to be another session's (moved to another relay, or
// re-created under the same id). A removal that failed (etcd unreachable,
// a timeout) stays here and removalLoop retries it with backoff; while one
// fails, releases do not try at once (the release call and the idle sweep
// would wait a registry timeout each) and leave theirs to the loop.
type removals struct {
	wake    chan struct{} // a removal was left to the loop
	dropped atomic.Uint64 // releases whose record could not be tracked (set full)

	mu      sync.Mutex
	pending map[string]time.Time // session id -> its record's CreateTime
	failing bool                 // the last attempt failed
}

func (m *removals) init() {
	m.wake = make(chan struct{}, 1)
	m.pending = map[string]time.Time{}
}

// add tracks the removal of session id's record, created at created; false
// when the set is full.
func (m *removals) add(id string, created time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pending[id]; !ok && len(m.pending) >= maxPendingRemovals {
		return false
	}
	m.pending[id] = created
	return true
}

// done forgets the removal of session id's record if it is still the one
// of the record created at created.
func (m *removals) done(id string, created time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.pending[id]; ok && c.Equal(created) {
		delete(m.pending, id)
	}
}

// has reports whether session id's record is being removed.
func (m *removals) has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.pending[id]
	return ok
}

// len returns the number of records being removed.
func (m *removals) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// snapshot returns the pending removals, ordered by id.
func (m *removals) snapshot() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.pending))
}

// created returns the CreateTime of session id's record being removed.
func (m *removals) created(id string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.pending[id]
	return c, ok
}

func (m *removals) setFailing(f bool) {
	m.mu.Lock()
	m.failing = f
	m.mu.Unlock()
}

func (m *removals) isFailing() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failing
}

// poke wakes removalLoop without ever blocking.
func (m *removals) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// removeRecord removes the registry record of released session id, whose
// record was created at created, or leaves the removal to removalLoop when
// it fails (or while removals fail: etcd is away). It never deletes a record
// that names another relay (the session moved there: an ICE restart while
// this relay was unreachable) or that was created at another time (a new
// session under the same id).
func (r *Relay) removeRecord(id string, created time.Time) {
	if !r.removals.add(id, created) {
		// Untracked: one attempt, its failure left to signaling's reaper.
		r.removals.dropped.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Registry.RequestTimeout())
		defer cancel()
		if _, err := r.tryRemoveRecord(ctx, id, created); err != nil {
			r.log.Warn("relay: removing the session record failed, and too many removals are pending to retry it",
				"session", id, "pending", maxPendingRemovals, "err", err)
		}
		return
	}
	if r.removals.isFailing() {
		r.removals.poke()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Registry.RequestTimeout())
	defer cancel()
	if _, err := r.tryRemoveRecord(ctx, id, created); err != nil {
		r.removals.setFailing(true)
		r.log.Warn("relay: removing the session record failed; retrying in the background", "session", id, "err", err)
		r.removals.poke()
		return
	}
	r.removals.done(id, created)
}

// tryRemoveRecord makes one attempt at removing session id's record: a nil
// error when nothing is left to do (removed, reported by removed, or gone,
// or another session's record), an error to retry.
func (r *Relay) tryRemoveRecord(ctx context.Context, id string, created time.Time) (removed bool, err error) {
	r.mu.Lock()
	reg := r.reg
	r.mu.Unlock()
	if reg != nil {
		// A successor started with takeover holds this relay's sessions now
		// (the kernel may have sent this session's packets to it alone, so
		// that it went idle here): the record is the successor's. The
		// registration watches its key, so this costs no etcd call.
		if reg.Superseded() {
			r.log.Info("relay: a successor took this relay over; keeping the released session's record", "session", id)
			return false, nil
		}
	}
	var other *registry.Session
	err = r.cfg.Registry.DeleteSessionIf(ctx, id, func(s registry.Session) bool {
		if s.RelayID != r.cfg.RelayID || !s.CreateTime.Equal(created) {
			other = &s
			return false
		}
		other = nil
		return true
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, registry.ErrNotFound):
		return false, nil
	case other != nil && errors.Is(err, registry.ErrConflict):
		if other.RelayID != r.cfg.RelayID {
			r.log.Info("relay: session moved to another relay; keeping its record", "session", id, "relay", other.RelayID)
		} else {
			r.log.Info("relay: a new session has the released session's id; keeping its record", "session", id,
				"created", other.CreateTime, "released_created", created)
		}
		return false, nil
	}
	return false, err
}

// removalLoop retries the pending removals: a pass over them all, stopped
// by the first failure, then another after a backoff that doubles while
// passes fail (removalBackoffMin to removalBackoffMax); it sleeps while
// nothing is pending.
func (r *Relay) removalLoop() {
	backoff := removalBackoffMin
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	for {
		if r.removals.len() == 0 {
			backoff = removalBackoffMin
			select {
			case <-r.closing:
				return
			case <-r.removals.wake:
			}
		}
		timer.Reset(backoff)
		select {
		case <-r.closing:
			return
		case <-timer.C:
		}
		if r.retryRemovals(r.closing, r.cfg.Registry.RequestTimeout, "retried") {
			backoff = removalBackoffMin
		} else {
			backoff = min(2*backoff, removalBackoffMax)
		}
	}
}

// retryRemovals makes one pass over the pending removals, each attempt
// within timeout(), until stop closes or one fails (etcd is away: the
// others would wait their timeout too); it reports whether none failed.
// how is logged with each removal done.
func (r *Relay) retryRemovals(stop <-chan struct{}, timeout func() time.Duration, how string) bool {
	for _, id := range r.removals.snapshot() {
		select {
		case <-stop:
			return false
		default:
		}
		created, ok := r.removals.created(id)
		if !ok {
			continue
		}
		if r.lookupSession(id) != nil {
			// Held again: the record is a live session's.
			r.removals.done(id, created)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout())
		removed, err := r.tryRemoveRecord(ctx, id, created)
		cancel()
		if err != nil {
			r.removals.setFailing(true)
			r.log.Debug("relay: removing a released session's record failed again", "session", id,
				"pending", r.removals.len(), "err", err)
			return false
		}
		r.removals.setFailing(false)
		r.removals.done(id, created)
		if removed {
			r.log.Info("relay: released session's record removed", "session", id, "attempt", how)
		}
	}
	return true
}

// finishRemovals makes Close's last attempt at the pending removals, within
// closeRemovalTimeout in all. What is left stays in the registry: a relay
// started again with the same id resumes those sessions and releases them
// when idle, and signaling's reaper removes them meanwhile.
func (r *Relay) finishRemovals() {
	if r.removals.len() == 0 {
		return
	}
	deadline := time.Now().Add(closeRemovalTimeout)
	stop := make(chan struct{})
	t := time.AfterFunc(closeRemovalTimeout, func() { close(stop) })
	defer t.Stop()
	r.retryRemovals(stop, func() time.Duration {
		return max(0, min(r.cfg.Registry.RequestTimeout(), time.Until(deadline)))
	}, "at close")
	if n := r.removals.len(); n > 0 {
		r.log.Warn("relay: closing with released sessions' records not removed (resumed and released again when the relay restarts; signaling's reaper removes them otherwise)",
			"records", n)
	}
}
