package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultRelayTTL is the relay lease TTL RegisterRelay uses for ttl <= 0.
const DefaultRelayTTL = 10 * time.Second

// RelayRegistration keeps a relay's key alive under its own lease until
// Close. When etcd was unreachable long enough for the lease to expire, it
// grants a new lease and puts the record again by itself.
type RelayRegistration struct {
	c   *Client
	key string
	ttl time.Duration

	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{} // asks the loop to put the record now

	mu    sync.Mutex // guards the following
	relay Relay
	lease clientv3.LeaseID
}

// RegisterRelay puts r under a new lease of ttl and keeps it alive in the
// background. The first put must succeed: an error is returned when etcd is
// unreachable now.
func (c *Client) RegisterRelay(ctx context.Context, r Relay, ttl time.Duration) (*RelayRegistration, error) {
	if err := checkRelayID(r.ID); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultRelayTTL
	}
	if ttl < 2*time.Second {
		return nil, fmt.Errorf("%w: relay ttl %s: want at least 2s", ErrInvalid, ttl)
	}
	r.V = recordVersion
	lctx, cancel := context.WithCancel(c.ctx)
	reg := &RelayRegistration{c: c, key: c.keys.relay(r.ID), ttl: ttl, relay: r, cancel: cancel,
		done: make(chan struct{}), kick: make(chan struct{}, 1)}
	if err := reg.put(ctx); err != nil {
		cancel()
		return nil, err
	}
	go reg.loop(lctx)
	return reg, nil
}

// put writes the record under the current lease, granting one when needed.
func (r *RelayRegistration) put(ctx context.Context) error {
	ctx, cancel := r.c.call(ctx)
	defer cancel()
	r.mu.Lock()
	lease := r.lease
	rec := r.relay
	r.mu.Unlock()
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
	if _, err := r.c.etcd.Put(ctx, r.key, val, clientv3.WithLease(lease)); err != nil {
		if isLeaseNotFound(err) {
			r.mu.Lock()
			r.lease = 0
			r.mu.Unlock()
		}
		return mapErr(err)
	}
	r.mu.Lock()
	r.lease = lease
	r.mu.Unlock()
	return nil
}

// loop refreshes the lease every ttl/3 and re-puts after updates or a lost
// lease.
func (r *RelayRegistration) loop(ctx context.Context) {
	defer close(r.done)
	tick := time.NewTicker(r.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.mu.Lock()
			lease := r.lease
			r.mu.Unlock()
			if lease != 0 {
				kctx, cancel := r.c.call(ctx)
				_, err := r.c.etcd.KeepAliveOnce(kctx, lease)
				cancel()
				if err == nil {
					continue
				}
				if isLeaseNotFound(err) {
					r.c.log.Info("registry: relay lease expired, registering again", "relay", r.relay.ID)
					r.mu.Lock()
					r.lease = 0
					r.mu.Unlock()
				} else {
					r.c.log.Debug("registry: relay keepalive failed", "relay", r.relay.ID, "err", err)
					continue
				}
			}
		case <-r.kick:
		}
		if err := r.put(ctx); err != nil && ctx.Err() == nil {
			r.c.log.Debug("registry: relay put failed", "relay", r.relay.ID, "err", err)
		}
	}
}

// Update applies fn to the record (load, draining) and writes it now.
func (r *RelayRegistration) Update(ctx context.Context, fn func(*Relay)) error {
	r.mu.Lock()
	id := r.relay.ID
	fn(&r.relay)
	r.relay.ID, r.relay.V = id, recordVersion
	r.mu.Unlock()
	err := r.put(ctx)
	if err != nil {
		// The loop retries on its next tick.
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

// Close stops the keepalive and revokes the lease, which deletes the key.
func (r *RelayRegistration) Close(ctx context.Context) error {
	r.cancel()
	<-r.done
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
func (c *Client) Relays(ctx context.Context) ([]Relay, error) {
	k := c.relays()
	if err := k.wait(ctx); err != nil {
		return nil, err
	}
	return k.snapshot(), nil
}

// PickRelay returns the least-loaded alive, non-draining relay, preferring
// zone, from the watch-fed cache: no etcd round trip once the cache is warm.
func (c *Client) PickRelay(ctx context.Context, zone string) (Relay, error) {
	k := c.relays()
	if err := k.wait(ctx); err != nil {
		return Relay{}, err
	}
	var best Relay
	found, bestLocal := false, false
	for _, r := range k.snapshot() {
		if r.Draining || r.MaxSessions > 0 && r.Sessions >= r.MaxSessions {
			continue
		}
		local := zone != "" && r.Zone == zone
		if !found || local && !bestLocal || local == bestLocal && r.Load() < best.Load() {
			best, found, bestLocal = r, true, local
		}
	}
	if !found {
		return Relay{}, ErrNoRelay
	}
	return best, nil
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
