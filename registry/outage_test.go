package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestEtcdOutage stops etcd mid-test: calls fail with ErrUnavailable within
// their timeout, then everything recovers with no manual action.
func TestEtcdOutage(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	const timeout = time.Second
	c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: "/outage/", RequestTimeout: timeout, DialTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()

	reg, err := c.RegisterRelay(ctx, registry.Relay{ID: "r1", GRPCAddress: "127.0.0.1:1"}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	if _, err := c.PickRelay(ctx, ""); err != nil {
		t.Fatal(err)
	}
	o := origin("o1", "", 0)
	if _, _, err := c.RegisterOrigin(ctx, o); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{name: "get session", call: func(ctx context.Context) error { _, err := c.GetSession(ctx, "s1"); return err }},
		{name: "by ufrag", call: func(ctx context.Context) error { _, err := c.GetSessionByUfrag(ctx, "a:b"); return err }},
		{name: "create session", call: func(ctx context.Context) error {
			return c.CreateSession(ctx, session("s1", "r1", "v/a/b", "ou", "cu"))
		}},
		{name: "register origin", call: func(ctx context.Context) error { _, _, err := c.RegisterOrigin(ctx, o); return err }},
		{name: "pick origin", call: func(ctx context.Context) error { _, err := c.PickOrigin(ctx, "v/a/b", ""); return err }},
		{name: "list relays", call: func(ctx context.Context) error { _, err := c.ListRelays(ctx); return err }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call(ctx)
			if !errors.Is(err, registry.ErrUnavailable) {
				t.Errorf("err = %v, want ErrUnavailable", err)
			}
			// Bounded by the request timeout (a few retries inside one call
			// may each take it).
			if d := time.Since(start); d > 6*timeout {
				t.Errorf("call took %s with a %s timeout", d, timeout)
			}
		})
	}
	// etcd restores leases on restart with a fresh TTL; revoking the
	// relay's lease afterwards proves re-granting too.
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "calls work again", func() bool {
		_, err := c.ListRelays(ctx)
		return err == nil
	})
	// Revoke the relay's lease behind its back: the registration notices and
	// puts itself again under a new lease.
	var resp *clientv3.GetResponse
	eventually(t, 15*time.Second, "relay key present after restart", func() bool {
		resp, err = c.Etcd().Get(ctx, "/outage/relays/r1")
		return err == nil && len(resp.Kvs) == 1
	})
	if _, err := c.Etcd().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "relay registered again under a new lease", func() bool {
		r, err := c.Etcd().Get(ctx, "/outage/relays/r1")
		return err == nil && len(r.Kvs) == 1 && r.Kvs[0].Lease != resp.Kvs[0].Lease
	})
	// The cache's watch resumed: a change made after the restart is seen.
	if err := reg.Update(ctx, func(r *registry.Relay) { r.Sessions = 42 }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "cache sees post-restart update", func() bool {
		rs, err := c.Relays(ctx)
		return err == nil && len(rs) == 1 && rs[0].Sessions == 42
	})
	// Origins register again.
	if _, _, err := c.RegisterOrigin(ctx, o); err != nil {
		t.Fatal(err)
	}
}

// TestRekeyAtomic checks that a reader never sees both or neither ufrag of a
// session while it is rekeyed: each read gets both index keys at one
// revision.
func TestRekeyAtomic(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	if err := c.CreateSession(ctx, session("s1", "r1", "v/a/b", ufr("o", 0), ufr("c", 0))); err != nil {
		t.Fatal(err)
	}
	// The test client's prefix is private; find the ufrag keys through it.
	prefix := ""
	resp, err := c.Etcd().Get(ctx, "/", withPrefixKeysOnly()...)
	if err != nil {
		t.Fatal(err)
	}
	first := ufr("o", 0) + ":" + ufr("c", 0)
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); strings.HasSuffix(k, "ufrags/"+first) {
			prefix = strings.TrimSuffix(k, first)
		}
	}
	if prefix == "" {
		t.Fatal("ufrag key not found")
	}

	const rounds = 30
	done := make(chan struct{})
	violations := make(chan string, 1)
	go func() {
		defer close(done)
		for i := 1; i <= rounds; i++ {
			prev, next := i-1, i
			oldKey, newKey := prefix+ufr("o", prev)+":"+ufr("c", prev), prefix+ufr("o", next)+":"+ufr("c", next)
			stop := make(chan struct{})
			readerDone := make(chan struct{})
			go func() {
				defer close(readerDone)
				for {
					select {
					case <-stop:
						return
					default:
					}
					tx, err := c.Etcd().Txn(ctx).Then(clientv3.OpGet(oldKey), clientv3.OpGet(newKey)).Commit()
					if err != nil {
						continue
					}
					n := len(tx.Responses[0].GetResponseRange().Kvs) + len(tx.Responses[1].GetResponseRange().Kvs)
					if n != 1 {
						select {
						case violations <- "saw " + string(rune('0'+n)) + " ufrag keys at one revision":
						default:
						}
					}
				}
			}()
			_, err := c.RekeySession(ctx, "s1", registry.ICECredentials{Ufrag: ufr("c", next)}, registry.ICECredentials{Ufrag: ufr("o", next)}, nil, "")
			close(stop)
			<-readerDone
			if err != nil {
				violations <- err.Error()
				return
			}
		}
	}()
	<-done
	select {
	case v := <-violations:
		t.Fatal(v)
	default:
	}
}

func ufr(side string, i int) string { return side + string(rune('a'+i%26)) + string(rune('a'+i/26)) }
