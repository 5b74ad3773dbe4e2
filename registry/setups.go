package registry

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func (s *Setup) validate() error {
	if err := checkSessionID(s.ID); err != nil {
		return err
	}
	if err := CheckStream(s.Stream); err != nil {
		return err
	}
	if s.Direction != DirectionPublish && s.Direction != DirectionPlay {
		return fmt.Errorf("%w: setup direction %q: want publish or play", ErrInvalid, s.Direction)
	}
	if err := checkOriginID(s.OriginID); err != nil {
		return err
	}
	if s.RelayID != "" {
		if err := checkRelayID(s.RelayID); err != nil {
			return err
		}
	}
	if s.Deadline.IsZero() {
		return fmt.Errorf("%w: setup %s has no deadline", ErrInvalid, s.ID)
	}
	return nil
}

// BeginSetup records a pending setup before its origin is contacted, with
// its stream index key, in a create-if-absent transaction (ErrConflict when
// the id is taken, or when st.PinRev > 0 and the stream's pin is no longer
// at that revision: pick the origin again). It returns the record as
// stored, with its revision, for the calls that follow (NoteSetupOrigin,
// FinishSetup, DeleteSetup).
func (c *Client) BeginSetup(ctx context.Context, st Setup) (PendingSetup, error) {
	if err := st.validate(); err != nil {
		return PendingSetup{}, err
	}
	st.V = recordVersion
	if st.CreateTime.IsZero() {
		st.CreateTime = time.Now().UTC()
	}
	val, err := encode(st)
	if err != nil {
		return PendingSetup{}, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	key := c.keys.setup(st.ID)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	if st.PinRev > 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.keys.pin(st.Stream)), "=", st.PinRev))
	}
	tx, err := c.etcd.Txn(ctx).If(cmps...).
		Then(clientv3.OpPut(key, val), clientv3.OpPut(c.keys.streamSetup(st.Stream, st.ID), "")).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return PendingSetup{}, mapErr(err)
	}
	if !tx.Succeeded {
		if len(tx.Responses[0].GetResponseRange().Kvs) > 0 {
			return PendingSetup{}, fmt.Errorf("%w: setup %s exists", ErrConflict, st.ID)
		}
		return PendingSetup{}, fmt.Errorf("%w: the pin of stream %s changed since revision %d", ErrConflict, st.Stream, st.PinRev)
	}
	return PendingSetup{Setup: st, Rev: tx.Header.Revision}, nil
}

// NoteSetupOrigin records the origin's session (its absolute resource URL
// and ETag) on a pending setup, with a compare-and-swap on the revision p
// was read at: ErrConflict when the record changed meanwhile (a reaper
// claimed it), ErrNotFound when it is gone. It returns the record as
// stored.
func (c *Client) NoteSetupOrigin(ctx context.Context, p PendingSetup, location, etag string) (PendingSetup, error) {
	next := p.Setup
	next.OriginResource, next.OriginETag = location, etag
	return c.casSetup(ctx, next, p.Rev)
}

// ClaimSetup marks a stale pending setup as being cleaned up by claimant
// until the given time, with a compare-and-swap on the revision p was read
// at: of several reapers that listed the same record, exactly one claim
// succeeds (the others get ErrConflict). A claim that is not followed by
// DeleteSetup before until (the claimant died) makes the record stale again.
func (c *Client) ClaimSetup(ctx context.Context, p PendingSetup, claimant string, until time.Time) (PendingSetup, error) {
	next := p.Setup
	next.ClaimedBy, next.ClaimTime, next.Deadline = claimant, time.Now().UTC(), until.UTC()
	return c.casSetup(ctx, next, p.Rev)
}

func (c *Client) casSetup(ctx context.Context, st Setup, rev int64) (PendingSetup, error) {
	if err := st.validate(); err != nil {
		return PendingSetup{}, err
	}
	st.V = recordVersion
	val, err := encode(st)
	if err != nil {
		return PendingSetup{}, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	key := c.keys.setup(st.ID)
	tx, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, val)).Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return PendingSetup{}, mapErr(err)
	}
	if !tx.Succeeded {
		if len(tx.Responses[0].GetResponseRange().Kvs) == 0 {
			return PendingSetup{}, fmt.Errorf("setup %s: %w", st.ID, ErrNotFound)
		}
		return PendingSetup{}, fmt.Errorf("%w: setup %s changed (claimed by a reaper?)", ErrConflict, st.ID)
	}
	return PendingSetup{Setup: st, Rev: tx.Header.Revision}, nil
}

// FinishSetup completes a setup: it applies fn to the session record (as
// UpdateSession does, with the same restrictions) and deletes the pending
// setup key in one transaction, on the condition that the pending record is
// still at revision p.Rev. ErrConflict when the pending record changed or
// is gone (a reaper claimed it: the setup must be undone), so a session is
// never completed under a reaper's feet.
func (c *Client) FinishSetup(ctx context.Context, p PendingSetup, fn func(*Session) error) (Session, error) {
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	setupKey := c.keys.setup(p.ID)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		s, rev, err := c.getSession(ctx, p.ID)
		if err != nil {
			return Session{}, err
		}
		next, err := applyUpdate("FinishSetup", s, fn)
		if err != nil {
			return Session{}, err
		}
		val, err := encode(next)
		if err != nil {
			return Session{}, err
		}
		sk := c.keys.session(p.ID)
		tx, err := c.etcd.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(sk), "=", rev),
			clientv3.Compare(clientv3.ModRevision(setupKey), "=", p.Rev),
		).Then(clientv3.OpPut(sk, val), clientv3.OpDelete(setupKey), clientv3.OpDelete(c.keys.streamSetup(p.Stream, p.ID))).
			Else(clientv3.OpGet(setupKey, clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return Session{}, mapErr(err)
		}
		if tx.Succeeded {
			return next, nil
		}
		if kvs := tx.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].ModRevision != p.Rev {
			return Session{}, fmt.Errorf("%w: setup %s was claimed or removed before it finished", ErrConflict, p.ID)
		}
		// Only the session record changed: read it again.
	}
	return Session{}, fmt.Errorf("%w: session %s kept changing", ErrConflict, p.ID)
}

// GetSetup reads one pending setup with its revision.
func (c *Client) GetSetup(ctx context.Context, id string) (PendingSetup, error) {
	if err := checkSessionID(id); err != nil {
		return PendingSetup{}, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	key := c.keys.setup(id)
	resp, err := c.etcd.Get(ctx, key)
	if err != nil {
		return PendingSetup{}, mapErr(err)
	}
	if len(resp.Kvs) == 0 {
		return PendingSetup{}, fmt.Errorf("setup %s: %w", id, ErrNotFound)
	}
	var st Setup
	if err := decode(key, resp.Kvs[0].Value, &st); err != nil {
		return PendingSetup{}, err
	}
	return PendingSetup{Setup: st, Rev: resp.Kvs[0].ModRevision}, nil
}

// ListSetups lists every pending setup with its revision, ordered by id.
func (c *Client) ListSetups(ctx context.Context) ([]PendingSetup, error) {
	return c.listSetups(ctx, time.Time{})
}

// ListStaleSetups lists the pending setups whose deadline is before now
// (their signaling instance died, or a reaper that claimed them did), with
// their revisions, ordered by id.
func (c *Client) ListStaleSetups(ctx context.Context, now time.Time) ([]PendingSetup, error) {
	if now.IsZero() {
		return nil, fmt.Errorf("%w: ListStaleSetups needs a time", ErrInvalid)
	}
	return c.listSetups(ctx, now)
}

func (c *Client) listSetups(ctx context.Context, staleAt time.Time) ([]PendingSetup, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.etcd.Get(ctx, c.keys.setups(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, mapErr(err)
	}
	var out []PendingSetup
	for _, kv := range resp.Kvs {
		var st Setup
		if err := decode(string(kv.Key), kv.Value, &st); err != nil {
			c.log.Warn("registry: skipping record", "err", err)
			continue
		}
		if !staleAt.IsZero() && !st.Deadline.Before(staleAt) {
			continue
		}
		out = append(out, PendingSetup{Setup: st, Rev: kv.ModRevision})
	}
	return out, nil
}

// DeleteSetup removes a pending setup and its stream index key. With rev >
// 0 it is a compare-and-delete on that revision (ErrConflict when the
// record changed, e.g. a reaper claimed it); rev 0 deletes whatever is
// there. A missing record is ErrNotFound.
func (c *Client) DeleteSetup(ctx context.Context, id string, rev int64) error {
	if err := checkSessionID(id); err != nil {
		return err
	}
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	key := c.keys.setup(id)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		// The record names the stream, whose index key goes with it.
		p, err := c.GetSetup(ctx, id)
		if err != nil {
			return err
		}
		if rev > 0 && p.Rev != rev {
			return fmt.Errorf("%w: setup %s changed", ErrConflict, id)
		}
		cctx, cancel := c.call(ctx)
		tx, err := c.etcd.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", p.Rev)).
			Then(clientv3.OpDelete(key), clientv3.OpDelete(c.keys.streamSetup(p.Stream, id))).Commit()
		cancel()
		if err != nil {
			return mapErr(err)
		}
		if tx.Succeeded {
			return nil
		}
		if rev > 0 {
			return fmt.Errorf("%w: setup %s changed", ErrConflict, id)
		}
	}
	return fmt.Errorf("%w: setup %s kept changing", ErrConflict, id)
}
