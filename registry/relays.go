package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultRelayTTL is the relay lease TTL RegisterRelay uses for ttl <= 0.
const DefaultRelayTTL = 10 * time.Second

// MinRelayTTL is the shortest relay lease TTL RegisterRelay accepts.
const MinRelayTTL = 2 * time.Second

// RelayRegistration keeps a relay's key alive under its own lease until
// Close. The lease is kept alive through the etcd client's KeepAlive
// channel; when etcd was unreachable long enough for the lease to expire
// (the channel closes), it grants a new lease and puts the record again by
// itself, retrying with backoff until etcd answers.
//
// Only the first put is unconditional (it takes the key over from a dead
// or a running process of the same id). Every later write checks that the
// key is still this registration's (its record names this registration's
// Relay.Instance, or the key is absent after the lease ran out): once
// another process of the same relay id has put it,
// this registration is superseded and writes nothing more, so that the
// process it replaced cannot take the key back nor delete it on its way
// out.
type RelayRegistration struct {
	c     *Client
	key   string
	ttl   time.Duration
	id    string
	stop  context.CancelFunc
	done  chan struct{} // closed when the loop has returned
	kick  chan struct{} // asks the loop to write a changed record now
	taken chan struct{} // closed once another process took the key over

	putMu sync.Mutex // serialises puts so that a newer record is never overwritten by an older one

	mu         sync.Mutex // guards the following
	relay      Relay
	gen        uint64 // incremented by every Update
	putGen     uint64 // gen of the last record written
	lease      clientv3.LeaseID
	putRev     int64 // the etcd revision of the last write
	written    bool  // the first, unconditional put succeeded
	superseded bool
	closing    bool
}

// RegisterRelay puts r under a new lease of ttl (DefaultRelayTTL when
// ttl <= 0, at least MinRelayTTL) and keeps it alive in the background.
// The first put must succeed: an error is returned when etcd is
// unreachable now. An existing key of the same id (a previous incarnation
// whose lease has not run out yet) is overwritten.
func (c *Client) RegisterRelay(ctx context.Context, r Relay, ttl time.Duration) (*RelayRegistration, error) {
	if err := checkRelayID(r.ID); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultRelayTTL
	}
	if ttl < MinRelayTTL {
		return nil, fmt.Errorf("%w: relay ttl %s: want at least %s", ErrInvalid, ttl, MinRelayTTL)
	}
	r.V = recordVersion
	r.Instance = newInstance()
	reg := &RelayRegistration{c: c, key: c.keys.relay(r.ID), ttl: ttl, id: r.ID, relay: r,
		done: make(chan struct{}), kick: make(chan struct{}, 1), taken: make(chan struct{})}
	if err := reg.put(ctx); err != nil {
		return nil, err
	}
	lctx, stop := context.WithCancel(c.ctx)
	reg.stop = stop
	if !c.goroutine(func() { reg.watch(lctx) }) || !c.goroutine(func() { reg.loop(lctx) }) {
		stop()
		reg.revoke(ctx)
		return nil, ErrClosed
	}
	return reg, nil
}

// put writes the current record under the current lease, granting a lease
// when there is none. After the first write it writes only while the key
// is still this registration's; ErrSuperseded otherwise.
func (r *RelayRegistration) put(ctx context.Context) error {
	r.putMu.Lock()
	defer r.putMu.Unlock()
	ctx, cancel := r.c.call(ctx)
	defer cancel()
	r.mu.Lock()
	lease, rec, gen, written, superseded := r.lease, r.relay, r.gen, r.written, r.superseded
	r.mu.Unlock()
	if superseded {
		return fmt.Errorf("relay %s: %w", r.id, ErrSuperseded)
	}
	if lease == 0 {
		g, err := r.c.etcd.Grant(ctx, int64((r.ttl+time.Second-1)/time.Second))
		if err != nil {
			return mapErr(err)
		}
		lease = g.ID
	}
	rec.UpdateTime = time.Now().UTC()
	val, err := encode(rec)
	if err != nil {
		return err
	}
	var rev int64
	if written {
		rev, err = r.putOwnLocked(ctx, val, lease, rec.Instance)
	} else {
		var resp *clientv3.PutResponse
		if resp, err = r.c.etcd.Put(ctx, r.key, val, clientv3.WithLease(lease)); err == nil {
			rev = resp.Header.Revision
		}
		err = mapErr(err)
	}
	if err != nil {
		if isLeaseNotFound(err) {
			r.dropLease(lease)
		}
		if errors.Is(err, ErrSuperseded) {
			r.markSuperseded()
		}
		return err
	}
	r.mu.Lock()
	r.written = true
	r.putRev = max(r.putRev, rev)
	r.lease = lease
	r.putGen = max(r.putGen, gen)
	r.mu.Unlock()
	return nil
}

// putOwnLocked writes val under lease if the key is still this
// registration's: its record names instance, or it is absent (its lease
// ran out). Ownership is the record's, not the lease's: a write that timed
// out may still have been applied under a lease this registration then
// gave up. r.putMu is held.
func (r *RelayRegistration) putOwnLocked(ctx context.Context, val string, lease clientv3.LeaseID, instance string) (int64, error) {
	put := clientv3.OpPut(r.key, val, clientv3.WithLease(lease))
	resp, err := r.c.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", lease)).
		Then(put).Else(clientv3.OpGet(r.key)).Commit()
	if err != nil {
		return 0, mapErr(err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	var cmp clientv3.Cmp
	switch kvs := resp.Responses[0].GetResponseRange().GetKvs(); {
	case len(kvs) == 0:
		cmp = clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)
	default:
		if err := r.ownRecord(kvs[0].Value, instance); err != nil {
			return 0, err
		}
		cmp = clientv3.Compare(clientv3.ModRevision(r.key), "=", kvs[0].ModRevision)
	}
	resp, err = r.c.etcd.Txn(ctx).If(cmp).Then(put).Commit()
	if err != nil {
		return 0, mapErr(err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("relay %s: the key changed while it was written: %w", r.id, ErrSuperseded)
	}
	return resp.Header.Revision, nil
}

// ownRecord returns ErrSuperseded unless the stored record b names instance.
func (r *RelayRegistration) ownRecord(b []byte, instance string) error {
	var stored Relay
	if err := decode(r.key, b, &stored); err != nil {
		return fmt.Errorf("relay %s: the key holds an unreadable record: %w", r.id, ErrSuperseded)
	}
	if stored.Instance != instance {
		return fmt.Errorf("relay %s: the key is process %q's, not this one's (%q): %w", r.id, stored.Instance, instance, ErrSuperseded)
	}
	return nil
}

// markSuperseded records the takeover: nothing is written from now on and
// Taken's channel closes.
func (r *RelayRegistration) markSuperseded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.superseded {
		r.superseded = true
		close(r.taken)
	}
}

// Taken returns a channel closed once another process of the same relay id
// has taken the key over (seen by a watch on the key, or a write): a
// relay then takes no new session, its successor does.
func (r *RelayRegistration) Taken() <-chan struct{} { return r.taken }

// watch follows the key from the registration's last write and marks the
// registration superseded at the first record another process wrote. It
// ends with ctx (Close) or at the takeover.
func (r *RelayRegistration) watch(ctx context.Context) {
	r.mu.Lock()
	rev, instance := r.putRev, r.relay.Instance
	r.mu.Unlock()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range r.c.etcd.Watch(wctx, r.key, clientv3.WithRev(rev+1)) {
			if wr.Err() != nil {
				break // compacted, or no leader: read the key again below
			}
			for _, ev := range wr.Events {
				rev = max(rev, ev.Kv.ModRevision)
				if ev.Type == clientv3.EventTypePut && r.ownRecord(ev.Kv.Value, instance) != nil {
					cancel()
					r.markSuperseded()
					r.c.log.Warn("registry: relay registration taken over by another process of the same id", "relay", r.id)
					return
				}
			}
		}
		cancel()
		if !sleep(ctx, time.Second) {
			return
		}
		// Missed events (a compaction, an outage): the key as it is now.
		gctx, gcancel := r.c.call(ctx)
		resp, err := r.c.etcd.Get(gctx, r.key)
		gcancel()
		if err != nil {
			continue
		}
		rev = resp.Header.Revision
		if len(resp.Kvs) == 1 && r.ownRecord(resp.Kvs[0].Value, instance) != nil {
			r.markSuperseded()
			r.c.log.Warn("registry: relay registration taken over by another process of the same id", "relay", r.id)
			return
		}
	}
}

// newInstance returns a random process identity for a relay record.
func newInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Superseded reports whether another process of the same relay id took the
// key over: this registration writes nothing more.
func (r *RelayRegistration) Superseded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.superseded
}

// dropLease forgets lease if it is still the current one.
func (r *RelayRegistration) dropLease(lease clientv3.LeaseID) {
	r.mu.Lock()
	if r.lease == lease {
		r.lease = 0
	}
	r.mu.Unlock()
}

func (r *RelayRegistration) state() (lease clientv3.LeaseID, dirty bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease, r.putGen < r.gen
}

// loop keeps the lease alive and re-registers after losing it.
func (r *RelayRegistration) loop(ctx context.Context) {
	defer close(r.done)
	const minBackoff = 200 * time.Millisecond
	backoff := minBackoff
	for ctx.Err() == nil {
		lease, _ := r.state()
		if lease == 0 {
			if err := r.put(ctx); err != nil {
				if errors.Is(err, ErrSuperseded) {
					r.c.log.Warn("registry: relay registration taken over by another process of the same id; this one stops writing it", "relay", r.id, "err", err)
					return
				}
				r.c.log.Debug("registry: relay registration failed, retrying", "relay", r.id, "err", err, "backoff", backoff)
				if !sleep(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, r.ttl/2)
				continue
			}
			r.c.log.Info("registry: relay registered again under a new lease", "relay", r.id)
			lease, _ = r.state()
		}
		backoff = minBackoff
		r.keepAlive(ctx, lease)
		if ctx.Err() != nil || r.Superseded() {
			return
		}
		r.c.log.Warn("registry: relay lease lost, registering again", "relay", r.id)
		r.dropLease(lease)
	}
}

// keepAlive consumes lease's KeepAlive channel until it closes (the lease
// expired or was revoked, or etcd was unreachable past its TTL) or ctx
// ends, writing changed records meanwhile.
func (r *RelayRegistration) keepAlive(ctx context.Context, lease clientv3.LeaseID) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.c.etcd.KeepAlive(kctx, lease)
	if err != nil {
		r.c.log.Debug("registry: relay keepalive failed", "relay", r.id, "err", err)
		return
	}
	retry := time.NewTicker(max(r.ttl/4, 500*time.Millisecond))
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			continue
		case <-r.kick:
		case <-retry.C:
		}
		cur, dirty := r.state()
		if cur != lease {
			return
		}
		if dirty {
			err := r.put(ctx)
			if errors.Is(err, ErrSuperseded) {
				r.c.log.Warn("registry: relay registration taken over by another process of the same id; this one stops writing it", "relay", r.id, "err", err)
				return
			}
			if err != nil && ctx.Err() == nil {
				r.c.log.Debug("registry: relay update failed, retrying", "relay", r.id, "err", err)
			}
		}
	}
}

// Update applies fn to the record (load, draining) and writes it now. When
// the write fails (etcd unreachable) the error is returned and the
// registration keeps retrying in the background; the latest record wins.
// fn must not change the id.
func (r *RelayRegistration) Update(ctx context.Context, fn func(*Relay)) error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return fmt.Errorf("relay %s: registration closed: %w", r.id, ErrClosed)
	}
	instance := r.relay.Instance
	fn(&r.relay)
	r.relay.ID, r.relay.V, r.relay.Instance = r.id, recordVersion, instance
	r.gen++
	r.mu.Unlock()
	err := r.put(ctx)
	if err != nil {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return err
}

// Relay returns the record as last written or queued.
func (r *RelayRegistration) Relay() Relay {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.relay
}

// Close stops the keepalive and revokes the lease, which deletes the key at
// once. Calling it again does nothing.
func (r *RelayRegistration) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return nil
	}
	r.closing = true
	r.mu.Unlock()
	r.stop()
	<-r.done
	return r.revoke(ctx)
}

func (r *RelayRegistration) revoke(ctx context.Context) error {
	r.putMu.Lock()
	defer r.putMu.Unlock()
	r.mu.Lock()
	lease := r.lease
	r.lease = 0
	r.mu.Unlock()
	if lease == 0 {
		return nil
	}
	ctx, cancel := r.c.call(ctx)
	defer cancel()
	if _, err := r.c.etcd.Revoke(ctx, lease); err != nil && !isLeaseNotFound(err) {
		return mapErr(err)
	}
	return nil
}

// GetRelay reads one relay registration from etcd.
func (c *Client) GetRelay(ctx context.Context, id string) (Relay, error) {
	if err := checkRelayID(id); err != nil {
		return Relay{}, err
	}
	var r Relay
	err := c.getJSON(ctx, c.keys.relay(id), &r)
	if errors.Is(err, ErrNotFound) {
		return r, fmt.Errorf("relay %s: %w", id, ErrNotFound)
	}
	return r, err
}

// ListRelays lists the live relay registrations from etcd, ordered by id.
func (c *Client) ListRelays(ctx context.Context) ([]Relay, error) {
	return listJSON[Relay](ctx, c, c.keys.relays())
}

// Relays returns the live relays from the watch-fed cache, ordered by id.
// The records share their slices with the cache: treat them as read-only.
func (c *Client) Relays(ctx context.Context) ([]Relay, error) {
	k := c.relays()
	if err := k.wait(ctx); err != nil {
		return nil, err
	}
	return k.snapshot(), nil
}

// PickRelay returns the least-loaded alive, non-draining relay, preferring
// zone, from the watch-fed cache: no etcd round trip once the cache is warm.
//
// A relay's record shows its session count as of its last registration
// update (every few seconds). So that a burst of setups does not all go to
// the relay that was least loaded then, the load also counts this client's
// picks of that relay since its record last changed.
func (c *Client) PickRelay(ctx context.Context, zone string) (Relay, error) {
	return c.PickRelayExcept(ctx, zone)
}

// PickRelayExcept is PickRelay skipping the relays in exclude (one that
// just failed, when a session moves off it).
func (c *Client) PickRelayExcept(ctx context.Context, zone string, exclude ...string) (Relay, error) {
	k := c.relays()
	if err := k.wait(ctx); err != nil {
		return Relay{}, err
	}
	c.pickMu.Lock()
	defer c.pickMu.Unlock()
	var best *Relay
	var bestLocal bool
	var bestLoad float64
	k.scan(func(_ string, r *Relay) {
		if r.Draining || r.MaxSessions > 0 && r.Sessions >= r.MaxSessions || slices.Contains(exclude, r.ID) {
			return
		}
		pending := 0
		if p, ok := c.picks[r.ID]; ok && p.rec == r {
			pending = p.n
		}
		withPending := *r
		withPending.Sessions += pending
		local, load := zone != "" && r.Zone == zone, withPending.Load()
		// Prefer the zone, then the lower load, then the smaller id (ties
		// are decided the same way by every signaling instance).
		if best == nil || local && !bestLocal ||
			local == bestLocal && (load < bestLoad || load == bestLoad && r.ID < best.ID) {
			best, bestLocal, bestLoad = r, local, load
		}
	})
	if best == nil {
		return Relay{}, ErrNoRelay
	}
	if c.picks == nil || len(c.picks) > 4*k.len()+64 {
		c.picks = map[string]relayPicks{} // forget relays long gone
	}
	if p := c.picks[best.ID]; p.rec == best {
		c.picks[best.ID] = relayPicks{rec: best, n: p.n + 1}
	} else {
		c.picks[best.ID] = relayPicks{rec: best, n: 1}
	}
	out := *best
	out.PublicAddresses = slices.Clone(out.PublicAddresses)
	out.PublicTCPAddresses = slices.Clone(out.PublicTCPAddresses)
	return out, nil
}

// RelayAlive reports from the cache whether relay id has a live
// registration.
func (c *Client) RelayAlive(ctx context.Context, id string) (bool, error) {
	k := c.relays()
	if err := k.wait(ctx); err != nil {
		return false, err
	}
	_, ok := k.get(id)
	return ok, nil
}

// relays returns the relay cache, starting it on first use.
func (c *Client) relays() *cache[Relay] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.relayCache == nil {
		c.relayCache = newCache[Relay](c, c.keys.relays())
	}
	return c.relayCache
}

func isLeaseNotFound(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) ||
		containsLeaseNotFound(err.Error()))
}
