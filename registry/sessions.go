package registry

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxCASAttempts bounds the read-modify-write retries of UpdateSession.
const maxCASAttempts = 8

func (s *Session) validate() error {
	if err := checkSessionID(s.ID); err != nil {
		return err
	}
	if err := CheckStream(s.Stream); err != nil {
		return err
	}
	if s.Direction != DirectionPublish && s.Direction != DirectionPlay {
		return fmt.Errorf("%w: session direction %q: want publish or play", ErrInvalid, s.Direction)
	}
	if err := checkRelayID(s.RelayID); err != nil {
		return err
	}
	if err := checkUfrag("client", s.ClientICE.Ufrag); err != nil {
		return err
	}
	if err := checkUfrag("origin", s.OriginICE.Ufrag); err != nil {
		return err
	}
	if s.ServerICE.Ufrag != "" {
		if err := checkUfrag("server", s.ServerICE.Ufrag); err != nil {
			return err
		}
	}
	if s.OriginClientICE.Ufrag != "" {
		if err := checkUfrag("origin client", s.OriginClientICE.Ufrag); err != nil {
			return err
		}
	}
	if s.RelayOriginAddress != "" {
		if _, err := netip.ParseAddrPort(s.RelayOriginAddress); err != nil {
			return fmt.Errorf("%w: relay origin address %q: want ip:port", ErrInvalid, s.RelayOriginAddress)
		}
	}
	return checkClientPaths(s.ClientPaths)
}

// MaxClientPaths bounds a session's verified client paths.
const MaxClientPaths = 8

func checkClientPaths(paths []ClientPath) error {
	if len(paths) > MaxClientPaths {
		return fmt.Errorf("%w: %d client paths, at most %d", ErrInvalid, len(paths), MaxClientPaths)
	}
	for _, p := range paths {
		if _, err := netip.ParseAddrPort(p.Addr); err != nil {
			return fmt.Errorf("%w: client path %q: want ip:port", ErrInvalid, p.Addr)
		}
		if p.Via != "" {
			if _, err := netip.ParseAddrPort(p.Via); err != nil {
				return fmt.Errorf("%w: client path via %q: want ip:port", ErrInvalid, p.Via)
			}
		}
	}
	return nil
}

// CreateSession stores a new session with its ufrag, relay and stream
// indexes in one create-if-absent transaction: ErrConflict when the id or
// the ufrag pair is taken.
func (c *Client) CreateSession(ctx context.Context, s Session) error {
	if err := s.validate(); err != nil {
		return err
	}
	s.V = recordVersion
	now := time.Now().UTC()
	if s.CreateTime.IsZero() {
		s.CreateTime = now
	}
	s.UpdateTime = now
	val, err := encode(s)
	if err != nil {
		return err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	sk, uk := c.keys.session(s.ID), c.keys.ufrag(s.UfragKey())
	tx, err := c.etcd.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(sk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(uk), "=", 0),
	).Then(
		clientv3.OpPut(sk, val),
		clientv3.OpPut(uk, s.ID),
		clientv3.OpPut(c.keys.relaySession(s.RelayID, s.ID), ""),
		clientv3.OpPut(c.keys.streamSession(s.Stream, s.ID), ""),
	).Commit()
	if err != nil {
		return mapErr(err)
	}
	if !tx.Succeeded {
		return fmt.Errorf("%w: session %s or ufrag pair %s exists", ErrConflict, s.ID, s.UfragKey())
	}
	return nil
}

// GetSession reads one session.
func (c *Client) GetSession(ctx context.Context, id string) (Session, error) {
	s, _, err := c.getSession(ctx, id)
	return s, err
}

func (c *Client) getSession(ctx context.Context, id string) (Session, int64, error) {
	if err := checkSessionID(id); err != nil {
		return Session{}, 0, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	key := c.keys.session(id)
	resp, err := c.etcd.Get(ctx, key)
	if err != nil {
		return Session{}, 0, mapErr(err)
	}
	if len(resp.Kvs) == 0 {
		return Session{}, 0, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	var s Session
	if err := decode(key, resp.Kvs[0].Value, &s); err != nil {
		return Session{}, 0, err
	}
	return s, resp.Kvs[0].ModRevision, nil
}

// GetSessionByUfrag finds a session by its STUN USERNAME,
// "<origin-ufrag>:<client-ufrag>".
func (c *Client) GetSessionByUfrag(ctx context.Context, username string) (Session, error) {
	if err := CheckUsername(username); err != nil {
		return Session{}, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.etcd.Get(ctx, c.keys.ufrag(username))
	if err != nil {
		return Session{}, mapErr(err)
	}
	if len(resp.Kvs) == 0 {
		return Session{}, fmt.Errorf("ufrag %s: %w", username, ErrNotFound)
	}
	// The record is read at a later revision than the index: a session
	// deleted in between is not found, and one rekeyed in between no longer
	// answers to this username (the rekey moved the index atomically).
	s, err := c.GetSession(ctx, string(resp.Kvs[0].Value))
	if err != nil {
		return Session{}, err
	}
	if s.UfragKey() != username {
		return Session{}, fmt.Errorf("ufrag %s: session %s was rekeyed: %w", username, s.ID, ErrNotFound)
	}
	return s, nil
}

// UpdateSession applies fn to the stored session and writes it back with a
// compare-and-swap on its revision, retrying a bounded number of times on a
// concurrent change. fn must not change ID, Stream, RelayID, Direction,
// RelayOriginAddress or the ICE credentials (RekeySession and
// NoteRelayOrigin do that): ErrInvalid if it does. An
// error from fn aborts the update and is returned.
func (c *Client) UpdateSession(ctx context.Context, id string, fn func(*Session) error) (Session, error) {
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		s, rev, err := c.getSession(ctx, id)
		if err != nil {
			return Session{}, err
		}
		next, err := applyUpdate("UpdateSession", s, fn)
		if err != nil {
			return Session{}, err
		}
		ok, err := c.casSession(ctx, next, rev)
		if err != nil {
			return Session{}, err
		}
		if ok {
			return next, nil
		}
	}
	return Session{}, fmt.Errorf("%w: session %s kept changing", ErrConflict, id)
}

func (c *Client) casSession(ctx context.Context, s Session, rev int64, extra ...clientv3.Op) (bool, error) {
	val, err := encode(s)
	if err != nil {
		return false, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	key := c.keys.session(s.ID)
	tx, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(append([]clientv3.Op{clientv3.OpPut(key, val)}, extra...)...).Commit()
	if err != nil {
		return false, mapErr(err)
	}
	return tx.Succeeded, nil
}

// NoteRelayOrigin records addr ("ip:port") as the relay's socket toward the
// origin of session id, if the session is still assigned to relayID
// (ErrConflict if it moved to another relay meanwhile).
func (c *Client) NoteRelayOrigin(ctx context.Context, id, relayID, addr string) error {
	if addr != "" {
		if _, err := netip.ParseAddrPort(addr); err != nil {
			return fmt.Errorf("%w: relay origin address %q: want ip:port", ErrInvalid, addr)
		}
	}
	return c.noteRelayOwned(ctx, id, relayID, func(s *Session) bool {
		if s.RelayOriginAddress == addr {
			return false
		}
		s.RelayOriginAddress = addr
		return true
	})
}

// NoteClientPaths records the verified client paths of session id, if the
// session is still assigned to relayID (ErrConflict if it moved to another
// relay meanwhile).
func (c *Client) NoteClientPaths(ctx context.Context, id, relayID string, paths []ClientPath) error {
	if err := checkClientPaths(paths); err != nil {
		return err
	}
	return c.noteRelayOwned(ctx, id, relayID, func(s *Session) bool {
		if slices.Equal(s.ClientPaths, paths) {
			return false
		}
		s.ClientPaths = slices.Clone(paths)
		return true
	})
}

// noteRelayOwned applies set, which changes a relay-owned field of session
// id and reports whether it changed anything, with a compare-and-swap, if
// the session is still assigned to relayID.
func (c *Client) noteRelayOwned(ctx context.Context, id, relayID string, set func(*Session) bool) error {
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		s, rev, err := c.getSession(ctx, id)
		if err != nil {
			return err
		}
		if s.RelayID != relayID {
			return fmt.Errorf("%w: session %s is assigned to relay %s, not %s", ErrConflict, id, s.RelayID, relayID)
		}
		if !set(&s) {
			return nil
		}
		s.V, s.UpdateTime = recordVersion, time.Now().UTC()
		ok, err := c.casSession(ctx, s, rev)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: session %s kept changing", ErrConflict, id)
}

// RekeySession moves a session to new ICE credentials in one transaction:
// the old ufrag key is deleted and the new one created (ErrConflict when the
// new pair is taken). relayID != "" moves the session to that relay's
// index (its recorded client paths are cleared: they were verified on the
// old relay); originAddrs != nil replaces its origin addresses.
func (c *Client) RekeySession(ctx context.Context, id string, keys ICEKeys,
	originAddrs []string, relayID string) (Session, error) {
	if keys.Server == keys.Origin {
		keys.Server = ICECredentials{}
	}
	if keys.OriginClient == keys.Client {
		keys.OriginClient = ICECredentials{}
	}
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		s, rev, err := c.getSession(ctx, id)
		if err != nil {
			return Session{}, err
		}
		next := s
		next.ClientICE, next.OriginICE = keys.Client, keys.Origin
		next.ServerICE, next.OriginClientICE = keys.Server, keys.OriginClient
		if originAddrs != nil && !slices.Equal(originAddrs, s.OriginAddresses) {
			next.OriginAddresses = slices.Clone(originAddrs)
			next.RelayOriginAddress = "" // the relay notes its new socket
		}
		if relayID != "" && relayID != s.RelayID {
			next.RelayID = relayID
			next.RelayOriginAddress = ""
			next.ClientPaths = nil
			if next.Moves < math.MaxUint32 {
				next.Moves++
			}
		}
		if err := next.validate(); err != nil {
			return Session{}, err
		}
		next.V, next.UpdateTime = recordVersion, time.Now().UTC()
		oldU, newU := c.keys.ufrag(s.UfragKey()), c.keys.ufrag(next.UfragKey())
		val, err := encode(next)
		if err != nil {
			return Session{}, err
		}
		sk := c.keys.session(id)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(sk), "=", rev)}
		ops := []clientv3.Op{clientv3.OpPut(sk, val)}
		if oldU != newU {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(newU), "=", 0))
			ops = append(ops, clientv3.OpDelete(oldU), clientv3.OpPut(newU, id))
		}
		if next.RelayID != s.RelayID {
			ops = append(ops, clientv3.OpDelete(c.keys.relaySession(s.RelayID, id)), clientv3.OpPut(c.keys.relaySession(next.RelayID, id), ""))
		}
		cctx, cancel := c.call(ctx)
		tx, err := c.etcd.Txn(cctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(sk), clientv3.OpGet(newU)).Commit()
		cancel()
		if err != nil {
			return Session{}, mapErr(err)
		}
		if tx.Succeeded {
			return next, nil
		}
		if len(tx.Responses[1].GetResponseRange().Kvs) > 0 && oldU != newU {
			return Session{}, fmt.Errorf("%w: ufrag pair %s is taken", ErrConflict, next.UfragKey())
		}
	}
	return Session{}, fmt.Errorf("%w: session %s kept changing", ErrConflict, id)
}

// DeleteSession removes a session and every index entry of it.
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	return c.DeleteSessionIf(ctx, id, nil)
}

// DeleteSessionIf removes a session and every index entry of it if match
// (nil: any record) accepts the stored record: ErrConflict, and nothing
// removed, when it does not. The record is read and deleted with a
// compare-and-swap on its revision, so a record changed in between (a
// move to another relay, a session re-created under the same id) is read
// and judged again, never deleted unseen. ErrNotFound when there is none.
func (c *Client) DeleteSessionIf(ctx context.Context, id string, match func(Session) bool) error {
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		s, rev, err := c.getSession(ctx, id)
		if err != nil {
			return err
		}
		if match != nil && !match(s) {
			return fmt.Errorf("%w: session %s is not the record to delete (relay %s, created %s)",
				ErrConflict, id, s.RelayID, s.CreateTime.Format(time.RFC3339Nano))
		}
		sk := c.keys.session(id)
		cctx, cancel := c.call(ctx)
		tx, err := c.etcd.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(sk), "=", rev)).Then(
			clientv3.OpDelete(sk),
			clientv3.OpDelete(c.keys.ufrag(s.UfragKey())),
			clientv3.OpDelete(c.keys.relaySession(s.RelayID, id)),
			clientv3.OpDelete(c.keys.streamSession(s.Stream, id)),
		).Commit()
		cancel()
		if err != nil {
			return mapErr(err)
		}
		if tx.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%w: session %s kept changing", ErrConflict, id)
}

// ListSessions lists every session, ordered by id.
func (c *Client) ListSessions(ctx context.Context) ([]Session, error) {
	return listJSON[Session](ctx, c, c.keys.sessions())
}

// ListSessionsByRelay lists the sessions assigned to a relay, alive or not,
// ordered by id.
func (c *Client) ListSessionsByRelay(ctx context.Context, relayID string) ([]Session, error) {
	if err := checkRelayID(relayID); err != nil {
		return nil, err
	}
	return c.listIndexed(ctx, c.keys.relaySessions(relayID))
}

// ListSessionsByStream lists a stream's sessions, ordered by id.
func (c *Client) ListSessionsByStream(ctx context.Context, stream string) ([]Session, error) {
	if err := CheckStream(stream); err != nil {
		return nil, err
	}
	return c.listIndexed(ctx, c.keys.streamSessions(stream))
}

// listIndexed reads the ids under an index prefix, then their records in one
// transaction.
func (c *Client) listIndexed(ctx context.Context, prefix string) ([]Session, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, mapErr(err)
	}
	// A stream index prefix "streamsessions/a/" also covers the entries of
	// the nested stream "a/b" ("streamsessions/a/b/<id>"): keep only direct
	// children (session ids contain no "/").
	kvs := resp.Kvs[:0:0]
	for _, kv := range resp.Kvs {
		if rest := strings.TrimPrefix(string(kv.Key), prefix); rest != "" && !strings.Contains(rest, "/") {
			kvs = append(kvs, kv)
		}
	}
	resp.Kvs = kvs
	out := make([]Session, 0, len(resp.Kvs))
	// etcd limits operations per transaction (128 by default): read in chunks.
	for start := 0; start < len(resp.Kvs); start += 100 {
		end := min(start+100, len(resp.Kvs))
		ops := make([]clientv3.Op, 0, end-start)
		for _, kv := range resp.Kvs[start:end] {
			ops = append(ops, clientv3.OpGet(c.keys.session(lastSegment(string(kv.Key)))))
		}
		tx, err := c.etcd.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, mapErr(err)
		}
		for _, r := range tx.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				var s Session
				if err := decode(string(kv.Key), kv.Value, &s); err != nil {
					c.log.Warn("registry: skipping record", "err", err)
					continue
				}
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// applyUpdate runs fn on a copy of s and returns the copy stamped for
// writing. fn may change the signaling-owned fields only: the session's
// identity, relay and ICE credentials stay (op names the caller).
func applyUpdate(op string, s Session, fn func(*Session) error) (Session, error) {
	next := s
	next.Labels = cloneMap(s.Labels)
	next.OriginAddresses = slices.Clone(s.OriginAddresses)
	next.ClientPaths = slices.Clone(s.ClientPaths)
	if err := fn(&next); err != nil {
		return Session{}, err
	}
	if next.ID != s.ID || next.Stream != s.Stream || next.RelayID != s.RelayID || next.Direction != s.Direction ||
		next.ClientICE != s.ClientICE || next.OriginICE != s.OriginICE || next.RelayOriginAddress != s.RelayOriginAddress ||
		next.ServerICE != s.ServerICE || next.OriginClientICE != s.OriginClientICE || !slices.Equal(next.ClientPaths, s.ClientPaths) ||
		next.Moves != s.Moves {
		return Session{}, fmt.Errorf("%w: %s may not change the session's identity, relay, relay socket, client paths, moves or ICE credentials", ErrInvalid, op)
	}
	next.V, next.UpdateTime = recordVersion, time.Now().UTC()
	return next, nil
}
