package registry

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// cache mirrors every record under one key prefix: it lists, then watches
// from the list's revision+1, and lists again after a compaction or a broken
// watch. Reads never touch etcd.
type cache[T any] struct {
	prefix string
	cli    *Client

	ready     chan struct{} // closed after the first successful list
	readyOnce sync.Once

	mu    sync.RWMutex  // guards the following
	items map[string]*T // by key suffix (the record id); values are never modified, only replaced
	rev   int64         // revision the map reflects
}

// newCache starts a cache under prefix; it runs until c.ctx ends. The
// caller holds c.mu.
func newCache[T any](c *Client, prefix string) *cache[T] {
	k := &cache[T]{prefix: prefix, cli: c, ready: make(chan struct{}), items: map[string]*T{}}
	if c.closed { // the caller holds c.mu; wait reports ErrClosed
		return k
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		k.run(c.ctx)
	}()
	return k
}

func (k *cache[T]) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := k.list(ctx)
		if err != nil {
			k.cli.log.Debug("registry cache: list failed", "prefix", k.prefix, "err", err)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		k.readyOnce.Do(func() { close(k.ready) })
		start := time.Now()
		k.watch(ctx, rev)
		if time.Since(start) > 5*time.Second {
			backoff = 100 * time.Millisecond
			continue
		}
		// A watch that breaks at once (no leader yet, say) must not turn
		// into a busy loop of lists.
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// list replaces the map with etcd's current content.
func (k *cache[T]) list(ctx context.Context) (int64, error) {
	cctx, cancel := k.cli.call(ctx)
	defer cancel()
	resp, err := k.cli.etcd.Get(cctx, k.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, mapErr(err)
	}
	items := make(map[string]*T, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := decode(string(kv.Key), kv.Value, &v); err != nil {
			k.cli.log.Warn("registry cache: skipping record", "err", err)
			continue
		}
		items[lastSegment(string(kv.Key))] = &v
	}
	k.mu.Lock()
	k.items, k.rev = items, resp.Header.Revision
	k.mu.Unlock()
	return resp.Header.Revision, nil
}

// watch applies events from rev+1 until the watch breaks or ctx ends.
func (k *cache[T]) watch(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := k.cli.etcd.Watch(wctx, k.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			k.cli.log.Debug("registry cache: watch broke, listing again", "prefix", k.prefix, "err", err)
			return
		}
		k.mu.Lock()
		for _, ev := range resp.Events {
			id := lastSegment(string(ev.Kv.Key))
			if ev.Type == clientv3.EventTypeDelete {
				delete(k.items, id)
				continue
			}
			var v T
			if err := decode(string(ev.Kv.Key), ev.Kv.Value, &v); err != nil {
				k.cli.log.Warn("registry cache: skipping record", "err", err)
				continue
			}
			k.items[id] = &v
		}
		k.rev = resp.Header.Revision
		k.mu.Unlock()
	}
}

// wait blocks until the first list succeeded, ctx ends or the bound passes.
func (k *cache[T]) wait(ctx context.Context) error {
	select {
	case <-k.ready:
		return nil
	default:
	}
	ctx, cancel := k.cli.call(ctx)
	defer cancel()
	select {
	case <-k.ready:
		return nil
	case <-k.cli.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("registry: cache of %s not filled yet: %w", k.prefix, mapErr(ctx.Err()))
	}
}

// get returns one record.
func (k *cache[T]) get(id string) (T, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	v, ok := k.items[id]
	if !ok {
		var zero T
		return zero, false
	}
	return *v, true
}

// scan calls fn for every record, in no particular order, under the read
// lock: fn must not call back into the cache nor modify or keep v.
// len returns the number of records.
func (k *cache[T]) len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.items)
}

func (k *cache[T]) scan(fn func(id string, v *T)) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for id, v := range k.items {
		fn(id, v)
	}
}

// snapshot returns every record, ordered by id. The records share their
// slices and maps with the cache: callers treat them as read-only.
func (k *cache[T]) snapshot() []T {
	k.mu.RLock()
	defer k.mu.RUnlock()
	ids := slices.Sorted(maps.Keys(k.items))
	out := make([]T, 0, len(ids))
	for _, id := range ids {
		out = append(out, *k.items[id])
	}
	return out
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
