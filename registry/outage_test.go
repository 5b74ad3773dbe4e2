package registry_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
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
	// Long enough for a healthy embedded etcd on a loaded machine to answer;
	// the outage phase checks calls give up within about this.
	const timeout = 2 * time.Second
	c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: "/outage/", RequestTimeout: timeout, DialTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()

	const relayTTL = 3 * time.Second
	reg, err := c.RegisterRelay(ctx, registry.Relay{ID: "r1", GRPCAddress: "127.0.0.1:1"}, relayTTL)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	before, err := c.Etcd().Get(ctx, "/outage/relays/r1")
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("relay key: %v %v", before, err)
	}
	eventually(t, 5*time.Second, "relay in cache", func() bool {
		_, err := c.PickRelay(ctx, "")
		return err == nil
	})
	o := origin("o1", "", 0)
	if _, _, err := c.RegisterOrigin(ctx, o); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "origin in cache", func() bool {
		os, err := c.Origins(ctx)
		return err == nil && len(os) == 1
	})

	srv.Stop()
	stopped := time.Now()
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
		{name: "relay update", call: func(ctx context.Context) error {
			return reg.Update(ctx, func(r *registry.Relay) { r.Sessions = 7 })
		}},
		{name: "update session", call: func(ctx context.Context) error {
			_, err := c.UpdateSession(ctx, "s1", func(*registry.Session) error { return nil })
			return err
		}},
		{name: "delete session", call: func(ctx context.Context) error { return c.DeleteSession(ctx, "s1") }},
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
			if d := time.Since(start); d > 2*timeout {
				t.Errorf("call took %s with a %s timeout", d, timeout)
			}
		})
	}
	// The caches keep serving what they last saw while etcd is away.
	if r, err := c.PickRelay(ctx, ""); err != nil || r.ID != "r1" {
		t.Errorf("PickRelay during the outage: %v %v, want r1 from the cache", r.ID, err)
	}
	// Stay down past the relay's TTL: its client-side keepalive gives the
	// lease up, and the registration must grant a new one by itself.
	for time.Since(stopped) < relayTTL+time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "calls work again", func() bool {
		_, err := c.ListRelays(ctx)
		return err == nil
	})
	eventually(t, 15*time.Second, "relay re-put under a new lease with the update made during the outage", func() bool {
		r, err := c.Etcd().Get(ctx, "/outage/relays/r1")
		if err != nil || len(r.Kvs) != 1 || r.Kvs[0].Lease == before.Kvs[0].Lease {
			return false
		}
		got, err := c.GetRelay(ctx, "r1")
		return err == nil && got.Sessions == 7
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
	// Origins register again, and the origin cache's watch sees it.
	if _, _, err := c.RegisterOrigin(ctx, origin("o2", "", 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "origin cache sees a post-restart registration", func() bool {
		os, err := c.Origins(ctx)
		for _, o := range os {
			if o.ID == "o2" {
				return err == nil
			}
		}
		return false
	})
}

// TestNewWhileEtcdDown shows that a service can start while etcd is down:
// New does not block, calls fail with ErrUnavailable, and the client works
// once etcd is up.
func TestNewWhileEtcdDown(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	srv.Stop()
	start := time.Now()
	c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: "/down/", DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("New blocked for %s while etcd was down", d)
	}
	ctx := t.Context()
	if _, err := c.GetSession(ctx, "s1"); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("GetSession: %v, want ErrUnavailable", err)
	}
	if _, err := c.PickRelay(ctx, ""); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("PickRelay on a cold cache: %v, want ErrUnavailable", err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "client works after etcd came up", func() bool {
		err := c.CreateSession(ctx, session("s1", "r1", "v/a/b", "ou", "cu"))
		return err == nil
	})
	reg, err := c.RegisterRelay(ctx, registry.Relay{ID: "r1"}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	eventually(t, 10*time.Second, "relay cache filled", func() bool {
		r, err := c.PickRelay(ctx, "")
		return err == nil && r.ID == "r1"
	})
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
	var reads atomic.Int64
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
					// Through the API: a username resolves to a session
					// that answers to it, or to nothing.
					for _, u := range []string{ufr("o", prev) + ":" + ufr("c", prev), ufr("o", next) + ":" + ufr("c", next)} {
						s, err := c.GetSessionByUfrag(ctx, u)
						if err == nil && s.UfragKey() != u {
							select {
							case violations <- "GetSessionByUfrag(" + u + ") returned a session keyed " + s.UfragKey():
							default:
							}
						}
					}
					tx, err := c.Etcd().Txn(ctx).Then(clientv3.OpGet(oldKey), clientv3.OpGet(newKey)).Commit()
					if err != nil {
						continue
					}
					reads.Add(1)
					n := len(tx.Responses[0].GetResponseRange().Kvs) + len(tx.Responses[1].GetResponseRange().Kvs)
					if n != 1 {
						select {
						case violations <- "saw " + string(rune('0'+n)) + " ufrag keys at one revision":
						default:
						}
					}
				}
			}()
			_, err := c.RekeySession(ctx, "s1", registry.ICEKeys{Client: registry.ICECredentials{Ufrag: ufr("c", next)}, Origin: registry.ICECredentials{Ufrag: ufr("o", next)}}, nil, "")
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
	if reads.Load() == 0 {
		t.Fatal("the reader never read during a rekey: the test proved nothing")
	}
	t.Logf("%d consistent reads during %d rekeys", reads.Load(), rounds)
}

func ufr(side string, i int) string { return side + string(rune('a'+i%26)) + string(rune('a'+i/26)) }
