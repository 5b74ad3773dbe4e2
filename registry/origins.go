package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Origin lease bounds.
const (
	DefaultOriginTTL = 30 * time.Second
	MinOriginTTL     = 5 * time.Second
	MaxOriginTTL     = 300 * time.Second
)

// RegisterOrigin creates or refreshes o's leased registration. Any signaling
// instance may receive the next heartbeat: a refresh finds the lease of the
// stored key and keeps it alive, or grants a new lease when that one has
// expired. created reports whether no live registration existed.
func (c *Client) RegisterOrigin(ctx context.Context, o Origin) (stored Origin, created bool, err error) {
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	if err := checkOriginID(o.ID); err != nil {
		return Origin{}, false, err
	}
	switch o.Kind {
	case OriginKindSRS, OriginKindMediaMTX, OriginKindWHIP:
	default:
		return Origin{}, false, fmt.Errorf("%w: origin kind %q: want srs, mediamtx or whip", ErrInvalid, o.Kind)
	}
	if o.TTL == 0 {
		o.TTL = DefaultOriginTTL
	}
	if o.TTL < MinOriginTTL || o.TTL > MaxOriginTTL {
		return Origin{}, false, fmt.Errorf("%w: origin ttl %s: want %s to %s", ErrInvalid, o.TTL, MinOriginTTL, MaxOriginTTL)
	}
	o.V = recordVersion
	key := c.keys.origin(o.ID)
	now := time.Now().UTC()
	for attempt := 0; attempt < 5; attempt++ {
		cctx, cancel := c.call(ctx)
		stored, created, err = c.registerOriginOnce(cctx, key, o, now)
		cancel()
		if !errors.Is(err, ErrConflict) {
			return stored, created, err
		}
	}
	return Origin{}, false, err
}

func (c *Client) registerOriginOnce(ctx context.Context, key string, o Origin, now time.Time) (Origin, bool, error) {
	resp, err := c.etcd.Get(ctx, key)
	if err != nil {
		return Origin{}, false, mapErr(err)
	}
	o.HeartbeatTime = now
	o.RegisterTime = now
	var lease, oldLease clientv3.LeaseID
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if len(resp.Kvs) == 1 {
		kv := resp.Kvs[0]
		var old Origin
		if err := decode(key, kv.Value, &old); err == nil {
			o.RegisterTime = old.RegisterTime
		}
		lease = clientv3.LeaseID(kv.Lease)
		// A TTL change needs a new lease; otherwise keep the one in use.
		if old.TTL != o.TTL || lease == 0 {
			oldLease, lease = lease, 0
		} else if _, err := c.etcd.KeepAliveOnce(ctx, lease); err != nil {
			if !isLeaseNotFound(err) {
				return Origin{}, false, mapErr(err)
			}
			lease = 0
		}
		if lease != 0 {
			// A plain refresh: the key must still be on the lease just kept
			// alive (not expired and registered afresh meanwhile). Concurrent
			// refreshes all succeed, the last write wins.
			cmp = clientv3.Compare(clientv3.LeaseValue(key), "=", int64(lease))
		} else {
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
		}
	}
	created := len(resp.Kvs) == 0
	granted := false
	if lease == 0 {
		g, err := c.etcd.Grant(ctx, int64(o.TTL/time.Second))
		if err != nil {
			return Origin{}, false, mapErr(err)
		}
		lease, granted = g.ID, true
	}
	val, err := encode(o)
	if err != nil {
		return Origin{}, false, err
	}
	tx, err := c.etcd.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, val, clientv3.WithLease(lease))).Commit()
	if isLeaseNotFound(err) {
		// The lease expired between the keepalive and the put: start over.
		return Origin{}, false, fmt.Errorf("%w: origin %s lease expired during refresh", ErrConflict, o.ID)
	}
	if err != nil {
		return Origin{}, false, mapErr(err)
	}
	if !tx.Succeeded {
		if granted {
			// Lost the race to another instance's heartbeat: the new lease
			// holds nothing. (Not after an error: the put may have landed.)
			_, _ = c.etcd.Revoke(ctx, lease)
		}
		return Origin{}, false, fmt.Errorf("%w: origin %s changed concurrently", ErrConflict, o.ID)
	}
	if oldLease != 0 {
		// The key moved to a lease of the new TTL; the old one holds nothing.
		if _, err := c.etcd.Revoke(ctx, oldLease); err != nil && !isLeaseNotFound(err) {
			c.log.Debug("registry: revoking an origin's previous lease failed", "origin", o.ID, "err", err)
		}
	}
	return o, created, nil
}

// DeregisterOrigin removes a registration and revokes its lease.
func (c *Client) DeregisterOrigin(ctx context.Context, id string) error {
	if err := checkOriginID(id); err != nil {
		return err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	key := c.keys.origin(id)
	resp, err := c.etcd.Delete(ctx, key, clientv3.WithPrevKV())
	if err != nil {
		return mapErr(err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("origin %s: %w", id, ErrNotFound)
	}
	if lease := clientv3.LeaseID(resp.PrevKvs[0].Lease); lease != 0 {
		if _, err := c.etcd.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			c.log.Debug("registry: revoking a deregistered origin's lease failed", "origin", id, "err", err)
		}
	}
	return nil
}

// GetOrigin reads one live registration from etcd.
func (c *Client) GetOrigin(ctx context.Context, id string) (Origin, error) {
	if err := checkOriginID(id); err != nil {
		return Origin{}, err
	}
	var o Origin
	err := c.getJSON(ctx, c.keys.origin(id), &o)
	if errors.Is(err, ErrNotFound) {
		return o, fmt.Errorf("origin %s: %w", id, ErrNotFound)
	}
	return o, err
}

// ListOrigins lists the live registrations from etcd, ordered by id.
func (c *Client) ListOrigins(ctx context.Context) ([]Origin, error) {
	return listJSON[Origin](ctx, c, c.keys.origins())
}

// Origins returns the live registrations from the watch-fed cache, ordered
// by id, waiting for the cache's first fill (bounded by the request timeout).
// The records share their slices and maps with the cache: treat them as
// read-only.
func (c *Client) Origins(ctx context.Context) ([]Origin, error) {
	k := c.origins()
	if err := k.wait(ctx); err != nil {
		return nil, err
	}
	return k.snapshot(), nil
}

// OriginLoad is an origin and the number of streams pinned to it.
type OriginLoad struct {
	Origin  Origin
	Streams int
}

// OriginPolicy chooses the origin a new stream is pinned to.
type OriginPolicy interface {
	// Choose returns the id of the origin to pin stream to, or "" if none
	// fits. origins are the live ones, ordered by id.
	Choose(stream, zone string, origins []OriginLoad) string
}

// DefaultOriginPolicy picks the least-loaded origin with free capacity,
// preferring the caller's zone; ties go to the smallest id.
type DefaultOriginPolicy struct{}

// Choose implements OriginPolicy.
func (DefaultOriginPolicy) Choose(_, zone string, origins []OriginLoad) string {
	best, bestLocal, bestLoad := "", false, 0.0
	for _, o := range origins {
		if o.Origin.Capacity > 0 && o.Streams >= int(o.Origin.Capacity) {
			continue
		}
		load := float64(o.Streams)
		if o.Origin.Capacity > 0 {
			load /= float64(o.Origin.Capacity)
		}
		local := zone != "" && o.Origin.Zone == zone
		if best == "" || local && !bestLocal || local == bestLocal && load < bestLoad {
			best, bestLocal, bestLoad = o.Origin.ID, local, load
		}
	}
	return best
}

// SetOriginPolicy replaces the policy PickOrigin uses for new pins.
func (c *Client) SetOriginPolicy(p OriginPolicy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.policy = p
}

// PickOrigin returns the origin stream is pinned to when that origin is
// alive. Otherwise it chooses one with the policy and pins it atomically: of
// concurrent callers exactly one pin wins and all return its origin. A pin
// pointing at a dead origin is replaced.
func (c *Client) PickOrigin(ctx context.Context, stream, zone string) (Origin, error) {
	o, _, err := c.PickOriginPin(ctx, stream, zone)
	return o, err
}

// PickOriginPin is PickOrigin that also returns the mod revision of the pin
// it read or wrote, for Setup.PinRev: BeginSetup then fails if the pin was
// removed or replaced in between (ReleaseIdlePins), so a setup never
// proceeds on an origin its stream is no longer pinned to.
func (c *Client) PickOriginPin(ctx context.Context, stream, zone string) (Origin, int64, error) {
	return c.PickOriginFor(ctx, stream, PickOptions{Zone: zone})
}

// PickOptions refine PickOriginFor.
type PickOptions struct {
	// Zone is the caller's zone, preferred by the policy.
	Zone string
	// Play: the stream is to be played. A stream that is live on some
	// origins (discovered, see LiveStream) is pinned to one of them; an
	// origin whose inventory lacks the stream is never chosen; with no
	// candidate left the pick fails with ErrNotLive.
	Play bool
	// Avoid are origins not to use (they just failed this request): a pin
	// to one of them is replaced.
	Avoid []string
	// OnlyLive: choose only among origins that have the stream live
	// (ErrNotLive if none); for a retry after the pinned origin said it
	// does not have the stream.
	OnlyLive bool
}

// PickOriginFor returns the origin stream is pinned to when that origin is
// alive, not suspect (MarkOriginSuspect) and not avoided, and, for a play,
// not known to lack the stream. Otherwise it chooses one with the policy
// among the live, unsuspected origins (for a stream live somewhere: among
// those that have it) and pins it atomically: of concurrent callers
// exactly one pin wins and all return its origin. It also returns the mod
// revision of the pin it read or wrote (see PickOriginPin).
func (c *Client) PickOriginFor(ctx context.Context, stream string, opt PickOptions) (Origin, int64, error) {
	ctx, cancel := c.call(ctx) // bounds the retries too
	defer cancel()
	if err := CheckStream(stream); err != nil {
		return Origin{}, 0, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		o, rev, err := c.pickOriginOnce(ctx, stream, opt)
		if !errors.Is(err, ErrConflict) {
			return o, rev, err
		}
		lastErr = err
	}
	return Origin{}, 0, lastErr
}

func (c *Client) pickOriginOnce(ctx context.Context, stream string, opt PickOptions) (Origin, int64, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	pinKey := c.keys.pin(stream)
	// One read at one revision: the pin, every live origin, the suspect
	// marks, the stream's discovery records, the inventories and whether
	// the stream has sessions or setups.
	tx, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(pinKey),
		clientv3.OpGet(c.keys.origins(), clientv3.WithPrefix()),
		clientv3.OpGet(c.keys.suspects(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(c.keys.liveStreams(stream), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(c.keys.inventories(), clientv3.WithPrefix()),
		clientv3.OpGet(c.keys.streamSessions(stream), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(c.keys.streamSetups(stream), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return Origin{}, 0, mapErr(err)
	}
	origins := map[string]Origin{}
	for _, kv := range tx.Responses[1].GetResponseRange().Kvs {
		var o Origin
		if err := decode(string(kv.Key), kv.Value, &o); err == nil {
			origins[o.ID] = o
		}
	}
	excluded := map[string]bool{}
	for _, id := range opt.Avoid {
		excluded[id] = true
	}
	for _, kv := range tx.Responses[2].GetResponseRange().Kvs {
		excluded[lastSegment(string(kv.Key))] = true
	}
	liveAt := map[string]bool{} // origins that have the stream live, alive or not
	for _, kv := range tx.Responses[3].GetResponseRange().Kvs {
		if id, ok := strings.CutPrefix(string(kv.Key), c.keys.liveStreams(stream)); ok && !strings.Contains(id, "/") {
			liveAt[id] = true
		}
	}
	inventories := map[string]Inventory{}
	for _, kv := range tx.Responses[4].GetResponseRange().Kvs {
		var inv Inventory
		if err := decode(string(kv.Key), kv.Value, &inv); err == nil && !inv.Truncated {
			inventories[inv.OriginID] = inv
		}
	}
	busy := tx.Responses[5].GetResponseRange().Count+tx.Responses[6].GetResponseRange().Count > 0
	// live: usable origins that have the stream.
	live := map[string]Origin{}
	for id := range liveAt {
		if o, ok := origins[id]; ok && !excluded[id] {
			live[id] = o
		}
	}

	pinCmp := clientv3.Compare(clientv3.CreateRevision(pinKey), "=", 0)
	var unindex []clientv3.Op
	if kvs := tx.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		var p Pin
		err := decode(pinKey, kvs[0].Value, &p)
		if err == nil {
			if o, ok := origins[p.OriginID]; ok && !excluded[p.OriginID] {
				inv, inventoried := inventories[p.OriginID]
				switch {
				case !opt.Play && !opt.OnlyLive, liveAt[p.OriginID], busy:
					// A publish, or the pinned origin has the stream, or
					// sessions hold the pin.
					return o, kvs[0].ModRevision, nil
				case len(live) > 0:
					// Live elsewhere and not known here: move the pin.
				case inventoried && inv.Time.After(p.PinTime), opt.OnlyLive:
					// The origin's inventory, read after the pin, lacks
					// the stream, and nobody else has it.
					return Origin{}, 0, fmt.Errorf("stream %s: %w", stream, ErrNotLive)
				default:
					return o, kvs[0].ModRevision, nil
				}
			}
			if checkOriginID(p.OriginID) == nil {
				unindex = append(unindex, clientv3.OpDelete(c.keys.originPin(p.OriginID, stream)))
			}
		}
		// The pinned origin is dead, suspect, avoided or lacks the stream
		// (or the pin is unreadable): replace the pin if nobody else did.
		pinCmp = clientv3.Compare(clientv3.ModRevision(pinKey), "=", kvs[0].ModRevision)
	}
	candidates := map[string]Origin{}
	switch {
	case len(live) > 0:
		candidates = live
	case opt.OnlyLive:
		return Origin{}, 0, fmt.Errorf("stream %s: %w", stream, ErrNotLive)
	case opt.Play:
		// Nobody is known to have it: only origins without an inventory
		// might.
		for id, o := range origins {
			if _, inventoried := inventories[id]; !inventoried && !excluded[id] {
				candidates[id] = o
			}
		}
		if len(candidates) == 0 {
			// Not live on a usable origin whose list is known: 409 unless
			// no origin is usable at all (that is ErrNoOrigin).
			for id := range origins {
				if !excluded[id] {
					return Origin{}, 0, fmt.Errorf("stream %s: %w", stream, ErrNotLive)
				}
			}
		}
	default:
		for id, o := range origins {
			if !excluded[id] {
				candidates[id] = o
			}
		}
	}
	loads, err := c.originLoads(ctx, candidates)
	if err != nil {
		return Origin{}, 0, err
	}
	c.mu.Lock()
	policy := c.policy
	c.mu.Unlock()
	id := policy.Choose(stream, opt.Zone, loads)
	o, ok := candidates[id]
	if !ok {
		return Origin{}, 0, fmt.Errorf("stream %s: %w", stream, ErrNoOrigin)
	}
	val, err := encode(Pin{V: recordVersion, Stream: stream, OriginID: id, PinTime: time.Now().UTC()})
	if err != nil {
		return Origin{}, 0, err
	}
	originKey := c.keys.origin(id)
	ops := append(unindex, clientv3.OpPut(pinKey, val), clientv3.OpPut(c.keys.originPin(id, stream), ""))
	put, err := c.etcd.Txn(ctx).
		If(pinCmp, clientv3.Compare(clientv3.CreateRevision(originKey), ">", 0)).
		Then(ops...).Commit()
	if err != nil {
		return Origin{}, 0, mapErr(err)
	}
	if !put.Succeeded {
		return Origin{}, 0, fmt.Errorf("%w: pin of %s changed concurrently", ErrConflict, stream)
	}
	return o, put.Header.Revision, nil
}

// originLoads counts the pins of each origin through the originpins index
// (count-only ranges, one transaction per 100 origins), ordered by id. The
// counts are read after the origins: under concurrent pinning they may be a
// little stale (capacity is a soft limit); the pin itself is decided by a
// transaction.
func (c *Client) originLoads(ctx context.Context, origins map[string]Origin) ([]OriginLoad, error) {
	ids := slices.Sorted(maps.Keys(origins))
	loads := make([]OriginLoad, 0, len(ids))
	for start := 0; start < len(ids); start += 100 {
		chunk := ids[start:min(start+100, len(ids))]
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, id := range chunk {
			ops = append(ops, clientv3.OpGet(c.keys.originPins(id), clientv3.WithPrefix(), clientv3.WithCountOnly()))
		}
		tx, err := c.etcd.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, mapErr(err)
		}
		for i, id := range chunk {
			loads = append(loads, OriginLoad{Origin: origins[id], Streams: int(tx.Responses[i].GetResponseRange().Count)})
		}
	}
	return loads, nil
}

// ListPins lists every stream pin, ordered by stream.
func (c *Client) ListPins(ctx context.Context) ([]Pin, error) {
	return listJSON[Pin](ctx, c, c.keys.pins())
}

// Unpin removes a stream's pin (and its entry in the origin's pin count);
// the next PickOrigin pins it afresh. Pins are not leased: call it when a
// stream has no session left, or the pin keeps counting toward its origin's
// load until the origin dies.
func (c *Client) Unpin(ctx context.Context, stream string) error {
	if err := CheckStream(stream); err != nil {
		return err
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	pinKey := c.keys.pin(stream)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		resp, err := c.etcd.Get(ctx, pinKey)
		if err != nil {
			return mapErr(err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("pin of %s: %w", stream, ErrNotFound)
		}
		ops := []clientv3.Op{clientv3.OpDelete(pinKey)}
		var p Pin
		if err := decode(pinKey, resp.Kvs[0].Value, &p); err == nil && checkOriginID(p.OriginID) == nil {
			ops = append(ops, clientv3.OpDelete(c.keys.originPin(p.OriginID, stream)))
		}
		tx, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(pinKey), "=", resp.Kvs[0].ModRevision)).
			Then(ops...).Commit()
		if err != nil {
			return mapErr(err)
		}
		if tx.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%w: pin of %s kept changing", ErrConflict, stream)
}

// origins returns the origin cache, starting it on first use.
func (c *Client) origins() *cache[Origin] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.originCache == nil {
		c.originCache = newCache[Origin](c, c.keys.origins())
	}
	return c.originCache
}

// getJSON reads and decodes one key; ErrNotFound when absent.
func (c *Client) getJSON(ctx context.Context, key string, v any) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.etcd.Get(ctx, key)
	if err != nil {
		return mapErr(err)
	}
	if len(resp.Kvs) == 0 {
		return ErrNotFound
	}
	return decode(key, resp.Kvs[0].Value, v)
}

// listJSON reads and decodes every key under prefix, in key order. Records
// that do not decode are skipped and logged.
func listJSON[T any](ctx context.Context, c *Client, prefix string) ([]T, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := decode(string(kv.Key), kv.Value, &v); err != nil {
			c.log.Warn("registry: skipping record", "err", err)
			continue
		}
		out = append(out, v)
	}
	return out, nil
}
