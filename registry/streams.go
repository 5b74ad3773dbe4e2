package registry

// Stream discovery and origin health marks.
//
//	livestreams/<stream>/<origin-id>     LiveStream: the origin has the stream live (leased)
//	originstreams/<origin-id>/<stream>   "" (index of the above by origin, same lease)
//	inventories/<origin-id>              Inventory: the origin's stream list was read (leased)
//	suspects/<origin-id>                 Suspect: no new pins (leased)
//
// A prober (signaling's leader) writes each origin's inventory with an
// InventoryWriter, which keeps one short lease per origin alive between
// writes: when the prober stops, the records go with the lease. An SRS
// on_publish hook writes one LiveStream on a lease of its own
// (MarkStreamLive); on_unpublish deletes it.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNotLive is returned by PickOriginFor for a play when the stream is
// live on no origin and every origin that could have it has an inventory
// that lacks it.
var ErrNotLive = errors.New("registry: stream is live on no origin")

// Sources of LiveStream.Source.
const (
	StreamSourceProbe = "probe" // an origin's inventory API
	StreamSourceHook  = "hook"  // an SRS on_publish hook
)

// MaxInventoryStreams bounds the streams recorded per origin.
const MaxInventoryStreams = 10000

// maxTxnOps is the largest transaction written here (etcd's default
// --max-txn-ops is 128).
const maxTxnOps = 100

// LiveStream says an origin has a stream live, stored at
// livestreams/<stream>/<origin-id>.
type LiveStream struct {
	V        int       `json:"v"`
	Stream   string    `json:"stream"`
	OriginID string    `json:"origin_id"`
	Source   string    `json:"source"` // StreamSource*
	SeenTime time.Time `json:"seen_time"`
}

// Inventory says an origin's stream list was read, stored at
// inventories/<origin-id>: an origin with an inventory that lacks a stream
// does not have it (as of Time).
type Inventory struct {
	V        int       `json:"v"`
	OriginID string    `json:"origin_id"`
	Streams  int       `json:"streams"`
	Time     time.Time `json:"time"`
	// Truncated: the origin listed more than MaxInventoryStreams streams
	// (or the prober's limit); absence proves nothing then.
	Truncated bool `json:"truncated,omitempty"`
}

// Suspect marks an origin that could not be reached, stored at
// suspects/<origin-id>: no new pins go to it, and streams pinned to it are
// re-pinned, until the mark is cleared or its lease ends.
type Suspect struct {
	V        int       `json:"v"`
	OriginID string    `json:"origin_id"`
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason,omitempty"`
}

func (k keys) liveStreamsRoot() string                   { return k.prefix + "livestreams/" }
func (k keys) liveStreams(stream string) string          { return k.liveStreamsRoot() + stream + "/" }
func (k keys) liveStream(stream, originID string) string { return k.liveStreams(stream) + originID }
func (k keys) originStreams(originID string) string {
	return k.prefix + "originstreams/" + originID + "/"
}
func (k keys) originStream(originID, stream string) string {
	return k.originStreams(originID) + stream
}
func (k keys) inventories() string              { return k.prefix + "inventories/" }
func (k keys) inventory(originID string) string { return k.inventories() + originID }
func (k keys) suspects() string                 { return k.prefix + "suspects/" }
func (k keys) suspect(originID string) string   { return k.suspects() + originID }

// ElectionPrefix is the etcd prefix of the prober election among signaling
// instances (clientv3/concurrency).
func (c *Client) ElectionPrefix() string { return c.keys.prefix + "election/prober" }

// InventoryWriter records one origin's live streams. It keeps one lease
// between writes, so a write only puts what changed. Not safe for
// concurrent use.
type InventoryWriter struct {
	c        *Client
	originID string
	ttl      time.Duration
	lease    clientv3.LeaseID
	known    map[string]bool // streams written on lease
}

// NewInventoryWriter returns a writer for originID whose records live ttl
// (at least 2s) after the last write.
func (c *Client) NewInventoryWriter(originID string, ttl time.Duration) (*InventoryWriter, error) {
	if err := checkOriginID(originID); err != nil {
		return nil, err
	}
	if ttl < 2*time.Second {
		return nil, fmt.Errorf("%w: inventory ttl %s: want at least 2s", ErrInvalid, ttl)
	}
	return &InventoryWriter{c: c, originID: originID, ttl: ttl}, nil
}

// Write records streams (normalised keys) as the origin's live streams and
// removes the ones it no longer lists. Invalid keys are skipped; more than
// MaxInventoryStreams are cut and the inventory marked truncated.
func (w *InventoryWriter) Write(ctx context.Context, streams []string, truncated bool) error {
	c := w.c
	ctx, cancel := c.call(ctx)
	defer cancel()
	want := map[string]bool{}
	for _, s := range streams {
		if len(want) == MaxInventoryStreams {
			truncated = true
			break
		}
		if CheckStream(s) == nil {
			want[s] = true
		}
	}
	fresh := false
	if w.lease != 0 {
		if _, err := c.etcd.KeepAliveOnce(ctx, w.lease); err != nil {
			if !isLeaseNotFound(err) {
				return mapErr(err)
			}
			w.lease = 0
		}
	}
	if w.lease == 0 {
		g, err := c.etcd.Grant(ctx, int64((w.ttl+time.Second-1)/time.Second))
		if err != nil {
			return mapErr(err)
		}
		w.lease, w.known, fresh = g.ID, map[string]bool{}, true
	}
	// What is indexed now (another writer's, an old lease's, a hook's).
	resp, err := c.etcd.Get(ctx, c.keys.originStreams(w.originID), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return mapErr(err)
	}
	indexed := map[string]bool{}
	for _, kv := range resp.Kvs {
		indexed[strings.TrimPrefix(string(kv.Key), c.keys.originStreams(w.originID))] = true
	}
	now := time.Now().UTC()
	var ops []clientv3.Op
	for _, s := range slices.Sorted(maps.Keys(want)) {
		if !fresh && w.known[s] && indexed[s] {
			continue
		}
		val, err := encode(LiveStream{V: recordVersion, Stream: s, OriginID: w.originID, Source: StreamSourceProbe, SeenTime: now})
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(c.keys.liveStream(s, w.originID), val, clientv3.WithLease(w.lease)),
			clientv3.OpPut(c.keys.originStream(w.originID, s), "", clientv3.WithLease(w.lease)))
	}
	for s := range indexed {
		if !want[s] {
			ops = append(ops, clientv3.OpDelete(c.keys.liveStream(s, w.originID)), clientv3.OpDelete(c.keys.originStream(w.originID, s)))
		}
	}
	inv, err := encode(Inventory{V: recordVersion, OriginID: w.originID, Streams: len(want), Time: now, Truncated: truncated})
	if err != nil {
		return err
	}
	// The inventory goes last: it claims the list is complete.
	ops = append(ops, clientv3.OpPut(c.keys.inventory(w.originID), inv, clientv3.WithLease(w.lease)))
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		if _, err := c.etcd.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			if isLeaseNotFound(err) {
				w.lease = 0
			}
			return mapErr(err)
		}
		ops = ops[n:]
	}
	w.known = want
	return nil
}

// Drop revokes the writer's lease: the origin's probe records and its
// inventory go at once.
func (w *InventoryWriter) Drop(ctx context.Context) error {
	if w.lease == 0 {
		return nil
	}
	ctx, cancel := w.c.call(ctx)
	defer cancel()
	_, err := w.c.etcd.Revoke(ctx, w.lease)
	w.lease, w.known = 0, nil
	if err != nil && !isLeaseNotFound(err) {
		return mapErr(err)
	}
	return nil
}

// MarkStreamLive records that originID has stream live, on a lease of ttl
// (an SRS on_publish hook; a probe refreshes it when the origin has an
// inventory).
func (c *Client) MarkStreamLive(ctx context.Context, stream, originID, source string, ttl time.Duration) error {
	if err := CheckStream(stream); err != nil {
		return err
	}
	if err := checkOriginID(originID); err != nil {
		return err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	g, err := c.etcd.Grant(ctx, int64(max(ttl, 2*time.Second)/time.Second))
	if err != nil {
		return mapErr(err)
	}
	val, err := encode(LiveStream{V: recordVersion, Stream: stream, OriginID: originID, Source: source, SeenTime: time.Now().UTC()})
	if err != nil {
		return err
	}
	_, err = c.etcd.Txn(ctx).Then(clientv3.OpPut(c.keys.liveStream(stream, originID), val, clientv3.WithLease(g.ID)),
		clientv3.OpPut(c.keys.originStream(originID, stream), "", clientv3.WithLease(g.ID))).Commit()
	return mapErr(err)
}

// MarkStreamGone removes the record that originID has stream live.
func (c *Client) MarkStreamGone(ctx context.Context, stream, originID string) error {
	if err := CheckStream(stream); err != nil {
		return err
	}
	if err := checkOriginID(originID); err != nil {
		return err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.etcd.Txn(ctx).Then(clientv3.OpDelete(c.keys.liveStream(stream, originID)),
		clientv3.OpDelete(c.keys.originStream(originID, stream))).Commit()
	return mapErr(err)
}

// LiveOrigins returns the records of the origins that have stream live,
// ordered by origin id (whether those origins are alive is not checked).
func (c *Client) LiveOrigins(ctx context.Context, stream string) ([]LiveStream, error) {
	if err := CheckStream(stream); err != nil {
		return nil, err
	}
	all, err := listJSON[LiveStream](ctx, c, c.keys.liveStreams(stream))
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, l := range all {
		if l.Stream == stream { // not a longer stream's record
			out = append(out, l)
		}
	}
	return out, nil
}

// ListLiveStreams lists every discovered stream record, ordered by stream
// then origin.
func (c *Client) ListLiveStreams(ctx context.Context) ([]LiveStream, error) {
	return listJSON[LiveStream](ctx, c, c.keys.liveStreamsRoot())
}

// ListInventories lists the origins whose stream list is known.
func (c *Client) ListInventories(ctx context.Context) ([]Inventory, error) {
	return listJSON[Inventory](ctx, c, c.keys.inventories())
}

// MarkOriginSuspect marks an origin that could not be reached: for ttl (at
// least 2s), or until ClearOriginSuspect, no new stream is pinned to it and
// streams pinned to it are re-pinned by their next setup.
func (c *Client) MarkOriginSuspect(ctx context.Context, originID, reason string, ttl time.Duration) error {
	if err := checkOriginID(originID); err != nil {
		return err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	g, err := c.etcd.Grant(ctx, int64(max(ttl, 2*time.Second)/time.Second))
	if err != nil {
		return mapErr(err)
	}
	if len(reason) > 200 {
		reason = reason[:200]
	}
	val, err := encode(Suspect{V: recordVersion, OriginID: originID, Since: time.Now().UTC(), Reason: reason})
	if err != nil {
		return err
	}
	_, err = c.etcd.Put(ctx, c.keys.suspect(originID), val, clientv3.WithLease(g.ID))
	return mapErr(err)
}

// ClearOriginSuspect removes an origin's suspect mark; it reports whether
// there was one.
func (c *Client) ClearOriginSuspect(ctx context.Context, originID string) (bool, error) {
	if err := checkOriginID(originID); err != nil {
		return false, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.etcd.Delete(ctx, c.keys.suspect(originID))
	if err != nil {
		return false, mapErr(err)
	}
	return resp.Deleted > 0, nil
}

// ListSuspects lists the origins marked suspect.
func (c *Client) ListSuspects(ctx context.Context) ([]Suspect, error) {
	return listJSON[Suspect](ctx, c, c.keys.suspects())
}

// PinStreamTo pins stream to originID (an SRS on_publish: the origin has
// it now), replacing another origin's pin only when the stream has no
// session and no setup in progress. It reports whether the stream is now
// pinned to originID.
func (c *Client) PinStreamTo(ctx context.Context, stream, originID string) (bool, error) {
	if err := CheckStream(stream); err != nil {
		return false, err
	}
	if err := checkOriginID(originID); err != nil {
		return false, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	pinKey := c.keys.pin(stream)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		resp, err := c.etcd.Get(ctx, pinKey)
		if err != nil {
			return false, mapErr(err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(pinKey), "=", 0)
		var ops []clientv3.Op
		if len(resp.Kvs) == 1 {
			var p Pin
			if err := decode(pinKey, resp.Kvs[0].Value, &p); err == nil {
				if p.OriginID == originID {
					return true, nil
				}
				if checkOriginID(p.OriginID) == nil {
					ops = append(ops, clientv3.OpDelete(c.keys.originPin(p.OriginID, stream)))
				}
			}
			cmp = clientv3.Compare(clientv3.ModRevision(pinKey), "=", resp.Kvs[0].ModRevision)
		}
		val, err := encode(Pin{V: recordVersion, Stream: stream, OriginID: originID, PinTime: time.Now().UTC()})
		if err != nil {
			return false, err
		}
		ops = append(ops, clientv3.OpPut(pinKey, val), clientv3.OpPut(c.keys.originPin(originID, stream), ""))
		conds := []clientv3.Cmp{cmp, clientv3.Compare(clientv3.CreateRevision(c.keys.origin(originID)), ">", 0)}
		if len(resp.Kvs) == 1 {
			conds = append(conds,
				clientv3.Compare(clientv3.CreateRevision(c.keys.streamSessions(stream)), "=", 0).WithPrefix(),
				clientv3.Compare(clientv3.CreateRevision(c.keys.streamSetups(stream)), "=", 0).WithPrefix())
		}
		tx, err := c.etcd.Txn(ctx).If(conds...).Then(ops...).Commit()
		if err != nil {
			return false, mapErr(err)
		}
		if tx.Succeeded {
			return true, nil
		}
		// The pin changed, the stream is busy or the origin is gone: look
		// again, unless it is busy or gone.
		chk, err := c.etcd.Txn(ctx).Then(
			clientv3.OpGet(c.keys.streamSessions(stream), clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpGet(c.keys.streamSetups(stream), clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpGet(c.keys.origin(originID), clientv3.WithCountOnly())).Commit()
		if err != nil {
			return false, mapErr(err)
		}
		if chk.Responses[2].GetResponseRange().Count == 0 {
			return false, fmt.Errorf("origin %s: %w", originID, ErrNotFound)
		}
		if chk.Responses[0].GetResponseRange().Count+chk.Responses[1].GetResponseRange().Count > 0 {
			return false, nil
		}
	}
	return false, fmt.Errorf("%w: pin of %s kept changing", ErrConflict, stream)
}

// UnpinIdleFrom removes stream's pin if it points at originID and the
// stream has no session and no setup in progress (an SRS on_unpublish).
func (c *Client) UnpinIdleFrom(ctx context.Context, stream, originID string) (bool, error) {
	if err := CheckStream(stream); err != nil {
		return false, err
	}
	if err := checkOriginID(originID); err != nil {
		return false, err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	pinKey := c.keys.pin(stream)
	resp, err := c.etcd.Get(ctx, pinKey)
	if err != nil || len(resp.Kvs) == 0 {
		return false, mapErr(err)
	}
	var p Pin
	if err := decode(pinKey, resp.Kvs[0].Value, &p); err != nil || p.OriginID != originID {
		return false, nil
	}
	tx, err := c.etcd.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(pinKey), "=", resp.Kvs[0].ModRevision),
		clientv3.Compare(clientv3.CreateRevision(c.keys.streamSessions(stream)), "=", 0).WithPrefix(),
		clientv3.Compare(clientv3.CreateRevision(c.keys.streamSetups(stream)), "=", 0).WithPrefix(),
	).Then(clientv3.OpDelete(pinKey), clientv3.OpDelete(c.keys.originPin(originID, stream))).Commit()
	if err != nil {
		return false, mapErr(err)
	}
	return tx.Succeeded, nil
}
