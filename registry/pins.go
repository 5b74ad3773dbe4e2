package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ReleaseIdlePins removes the pins of streams that have no session and no
// setup in progress, pinned before pinnedBefore, at most limit of them, and
// returns how many it removed. A stream's next setup pins it again, by the
// origin policy. Without this, every stream ever played would stay pinned
// and count toward its origin's load (Origin.Capacity) while the origin
// lives.
//
// One read at one revision lists the pins and the stream indexes of
// sessions and setups; each idle pin is then deleted, with its originpins/
// index key, by a transaction that holds only if the pin is unchanged and
// the stream still has no session and no setup key. A setup that picked the
// origin before the pin went away fails in BeginSetup (Setup.PinRev) and
// picks again, so a stream never has sessions on two origins because of a
// release. A stream that is a prefix of a live one ("a/b" of "a/b/c") keeps
// its pin until the longer one is idle too.
func (c *Client) ReleaseIdlePins(ctx context.Context, pinnedBefore time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: ReleaseIdlePins needs a positive limit", ErrInvalid)
	}
	ctx, cancel := c.call(ctx) // bounds the deletions too
	defer cancel()
	rctx, rcancel := c.call(ctx)
	tx, err := c.etcd.Txn(rctx).Then(
		clientv3.OpGet(c.keys.pins(), clientv3.WithPrefix()),
		clientv3.OpGet(c.keys.streamSessionsRoot(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(c.keys.streamSetupsRoot(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	rcancel()
	if err != nil {
		return 0, mapErr(err)
	}
	busy := map[string]bool{}
	for i, prefix := range []string{c.keys.streamSessionsRoot(), c.keys.streamSetupsRoot()} {
		for _, kv := range tx.Responses[i+1].GetResponseRange().Kvs {
			// <prefix><stream>/<id>; ids contain no "/".
			k := strings.TrimPrefix(string(kv.Key), prefix)
			if j := strings.LastIndexByte(k, '/'); j > 0 {
				busy[k[:j]] = true
			}
		}
	}
	released := 0
	for _, kv := range tx.Responses[0].GetResponseRange().Kvs {
		if released == limit || ctx.Err() != nil {
			break
		}
		var p Pin
		if err := decode(string(kv.Key), kv.Value, &p); err != nil || busy[p.Stream] || !p.PinTime.Before(pinnedBefore) ||
			c.keys.pin(p.Stream) != string(kv.Key) {
			continue
		}
		ops := []clientv3.Op{clientv3.OpDelete(string(kv.Key))}
		if checkOriginID(p.OriginID) == nil {
			ops = append(ops, clientv3.OpDelete(c.keys.originPin(p.OriginID, p.Stream)))
		}
		dctx, dcancel := c.call(ctx)
		del, err := c.etcd.Txn(dctx).If(
			clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision),
			clientv3.Compare(clientv3.CreateRevision(c.keys.streamSessions(p.Stream)), "=", 0).WithPrefix(),
			clientv3.Compare(clientv3.CreateRevision(c.keys.streamSetups(p.Stream)), "=", 0).WithPrefix(),
		).Then(ops...).Commit()
		dcancel()
		if err != nil {
			return released, mapErr(err)
		}
		if del.Succeeded {
			released++
		}
	}
	return released, nil
}
