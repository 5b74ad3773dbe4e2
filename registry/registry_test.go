package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// eventually polls cond every 50ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func origin(id, zone string, capacity uint32) registry.Origin {
	return registry.Origin{ID: id, Kind: registry.OriginKindWHIP, Zone: zone, Capacity: capacity,
		WHIPURLTemplate: "http://127.0.0.1:1/{stream}/whip", TTL: 5 * time.Second,
		MediaAddresses: []string{"127.0.0.1:8189"}}
}

func TestOriginRegistrationLifecycle(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()

	o := origin("srs-1", "eu", 0)
	stored, created, err := c.RegisterOrigin(ctx, o)
	if err != nil || !created {
		t.Fatalf("first register: created=%v err=%v", created, err)
	}
	_, created, err = c.RegisterOrigin(ctx, o)
	if err != nil || created {
		t.Fatalf("refresh: created=%v err=%v", created, err)
	}
	got, err := c.GetOrigin(ctx, "srs-1")
	if err != nil || !got.RegisterTime.Equal(stored.RegisterTime) {
		t.Fatalf("get: %+v %v (register time must survive a refresh)", got, err)
	}
	// The cache sees it, and an update of it.
	eventually(t, 5*time.Second, "origin in cache", func() bool {
		os, err := c.Origins(ctx)
		return err == nil && len(os) == 1
	})
	moved := o
	moved.Zone = "us"
	if _, created, err := c.RegisterOrigin(ctx, moved); err != nil || created {
		t.Fatalf("update: created=%v err=%v", created, err)
	}
	eventually(t, 5*time.Second, "origin update in cache", func() bool {
		os, err := c.Origins(ctx)
		return err == nil && len(os) == 1 && os[0].Zone == "us"
	})

	// Without heartbeats it disappears within TTL + 1s.
	start := time.Now()
	eventually(t, o.TTL+3*time.Second, "origin lease expiry", func() bool {
		_, err := c.GetOrigin(ctx, "srs-1")
		return errors.Is(err, registry.ErrNotFound)
	})
	d := time.Since(start)
	t.Logf("origin with a %s TTL gone %s after its last heartbeat", o.TTL, d)
	if d > o.TTL+time.Second {
		t.Errorf("origin expired after %s, want within TTL+1s = %s", d, o.TTL+time.Second)
	}
	eventually(t, 5*time.Second, "origin removed from cache", func() bool {
		os, _ := c.Origins(ctx)
		return len(os) == 0
	})

	// Deregister.
	if _, _, err := c.RegisterOrigin(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := c.DeregisterOrigin(ctx, "srs-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeregisterOrigin(ctx, "srs-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second deregister: %v, want ErrNotFound", err)
	}
}

func TestRegisterOriginValidation(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	tests := []struct {
		name string
		mod  func(*registry.Origin)
	}{
		{name: "empty id", mod: func(o *registry.Origin) { o.ID = "" }},
		{name: "slash in id", mod: func(o *registry.Origin) { o.ID = "a/b" }},
		{name: "unknown kind", mod: func(o *registry.Origin) { o.Kind = "janus" }},
		{name: "ttl too short", mod: func(o *registry.Origin) { o.TTL = time.Second }},
		{name: "ttl too long", mod: func(o *registry.Origin) { o.TTL = time.Hour }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := origin("o1", "", 0)
			tc.mod(&o)
			if _, _, err := c.RegisterOrigin(t.Context(), o); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPickOriginRace(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	// 100 callers racing on one pin retry their transactions: on a busy
	// machine under the race detector that takes longer than the test
	// client's default 2 s per call.
	c := embedetcd.NewClientForTest(t, srv, func(cfg *registry.Config) { cfg.RequestTimeout = 30 * time.Second })
	ctx := t.Context()
	for _, id := range []string{"o1", "o2", "o3"} {
		o := origin(id, "", 0)
		o.TTL = 30 * time.Second
		if _, _, err := c.RegisterOrigin(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	const callers = 100
	var wg sync.WaitGroup
	got := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := c.PickOrigin(ctx, "__defaultVhost__/live/race", "")
			got[i], errs[i] = o.ID, err
		}()
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("caller %d got %s, caller 0 got %s", i, got[i], got[0])
		}
	}
	pins, err := c.ListPins(ctx)
	if err != nil || len(pins) != 1 || pins[0].OriginID != got[0] {
		t.Fatalf("pins = %+v, %v; want exactly one pin to %s", pins, err, got[0])
	}
}

func TestPickOriginPolicy(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	ctx := t.Context()
	tests := []struct {
		name    string
		origins []registry.Origin
		pins    []string // streams pinned first, in order
		zone    string
		want    string
		wantErr error
	}{
		{name: "no origin", want: "", wantErr: registry.ErrNoOrigin},
		{name: "least loaded", origins: []registry.Origin{origin("a", "", 0), origin("b", "", 0)}, pins: []string{"x/y/1"}, want: "b"},
		{name: "zone preferred over load", origins: []registry.Origin{origin("a", "eu", 0), origin("b", "us", 0)}, pins: []string{"x/y/1"}, zone: "eu", want: "a"},
		{name: "capacity full", origins: []registry.Origin{origin("a", "", 1)}, pins: []string{"x/y/1"}, wantErr: registry.ErrNoOrigin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := embedetcd.NewClientForTest(t, srv)
			for _, o := range tc.origins {
				o.TTL = 30 * time.Second
				if _, _, err := c.RegisterOrigin(ctx, o); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range tc.pins {
				// Pin to "a" by making it the only choice.
				if _, err := c.PickOrigin(ctx, s, tc.zone); err != nil {
					t.Fatal(err)
				}
			}
			o, err := c.PickOrigin(ctx, "x/y/new", tc.zone)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || o.ID != tc.want {
				t.Fatalf("picked %q (%v), want %q", o.ID, err, tc.want)
			}
		})
	}
}

func TestDeadOriginPinReplaced(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	first := origin("first", "", 0)
	if _, _, err := c.RegisterOrigin(ctx, first); err != nil {
		t.Fatal(err)
	}
	if o, err := c.PickOrigin(ctx, "v/app/s", ""); err != nil || o.ID != "first" {
		t.Fatalf("pick = %v %v", o.ID, err)
	}
	second := origin("second", "", 0)
	second.TTL = 30 * time.Second
	if _, _, err := c.RegisterOrigin(ctx, second); err != nil {
		t.Fatal(err)
	}
	// Still pinned to the live first origin.
	if o, _ := c.PickOrigin(ctx, "v/app/s", ""); o.ID != "first" {
		t.Fatalf("pin moved while its origin lives: %s", o.ID)
	}
	if err := c.DeregisterOrigin(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	o, err := c.PickOrigin(ctx, "v/app/s", "")
	if err != nil || o.ID != "second" {
		t.Fatalf("after the pinned origin died: %s %v, want second", o.ID, err)
	}
	pins, _ := c.ListPins(ctx)
	if len(pins) != 1 || pins[0].OriginID != "second" {
		t.Fatalf("pins = %+v", pins)
	}
	// The per-origin pin index moved with the pin.
	indexed := func() []string {
		resp, err := c.Etcd().Get(ctx, "/", withPrefixKeysOnly()...)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range resp.Kvs {
			if k := string(kv.Key); strings.Contains(k, "/originpins/") {
				out = append(out, k[strings.Index(k, "/originpins/")+len("/originpins/"):])
			}
		}
		return out
	}
	if got := indexed(); len(got) != 1 || got[0] != "second/v/app/s" {
		t.Errorf("pin index = %q, want [second/v/app/s]", got)
	}
	if err := c.Unpin(ctx, "v/app/s"); err != nil {
		t.Fatal(err)
	}
	if err := c.Unpin(ctx, "v/app/s"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second unpin: %v, want ErrNotFound", err)
	}
	if pins, err := c.ListPins(ctx); err != nil || len(pins) != 0 {
		t.Errorf("pins after unpin: %+v %v", pins, err)
	}
	if got := indexed(); len(got) != 0 {
		t.Errorf("pin index after unpin: %q", got)
	}
}

func TestRelayRegistrationAndPick(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()

	if _, err := c.PickRelay(ctx, ""); !errors.Is(err, registry.ErrNoRelay) {
		t.Fatalf("empty: %v, want ErrNoRelay", err)
	}
	r1, err := c.RegisterRelay(ctx, registry.Relay{ID: "r1", Zone: "eu", GRPCAddress: "127.0.0.1:1", Sessions: 5}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close(context.Background())
	r2, err := c.RegisterRelay(ctx, registry.Relay{ID: "r2", Zone: "us", GRPCAddress: "127.0.0.1:2", Sessions: 1}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(context.Background())

	pick := func(zone string) string {
		r, err := c.PickRelay(ctx, zone)
		if err != nil {
			return err.Error()
		}
		return r.ID
	}
	eventually(t, 5*time.Second, "least loaded relay r2", func() bool { return pick("") == "r2" })
	if got := pick("eu"); got != "r1" {
		t.Errorf("zone eu picked %s, want r1", got)
	}
	// Draining takes r2 out; an update is seen by the cache.
	if err := r2.Update(ctx, func(r *registry.Relay) { r.Draining = true }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "draining relay skipped", func() bool { return pick("us") == "r1" })

	// The registration survives several TTLs through keepalive.
	time.Sleep(4 * time.Second)
	if alive, err := c.RelayAlive(ctx, "r1"); err != nil || !alive {
		t.Fatalf("r1 alive=%v err=%v after 4s with keepalive", alive, err)
	}
	// Close revokes the lease: the key goes at once.
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRelay(ctx, "r1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("after close: %v", err)
	}
	eventually(t, 5*time.Second, "cache removal", func() bool {
		alive, _ := c.RelayAlive(ctx, "r1")
		return !alive
	})
}

// TestRelayLeaseExpiry shows that a relay whose process dies (no keepalive,
// no revoke) vanishes within its TTL + 1s. The "process" is a second client
// closed without closing the registration.
func TestRelayLeaseExpiry(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	prefix := "/rtcedge-shared/" + t.Name() + "/"
	observer, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	dying, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	if _, err := dying.RegisterRelay(t.Context(), registry.Relay{ID: "r-dies"}, ttl); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "relay visible", func() bool {
		alive, _ := observer.RelayAlive(t.Context(), "r-dies")
		return alive
	})
	_ = dying.Close() // the process dies: nothing revokes the lease
	start := time.Now()
	eventually(t, ttl+3*time.Second, "relay expiry", func() bool {
		_, err := observer.GetRelay(t.Context(), "r-dies")
		return errors.Is(err, registry.ErrNotFound)
	})
	d := time.Since(start)
	t.Logf("relay with a %s TTL gone %s after its process died", ttl, d)
	if d > ttl+time.Second {
		t.Errorf("relay expired after %s, want within %s", d, ttl+time.Second)
	}
	eventually(t, 5*time.Second, "cache sees the removal", func() bool {
		alive, _ := observer.RelayAlive(t.Context(), "r-dies")
		return !alive
	})
}

func session(id, relay, stream, ou, cu string) registry.Session {
	return registry.Session{ID: id, Stream: stream, Direction: registry.DirectionPublish, RelayID: relay,
		ClientICE:       registry.ICECredentials{Ufrag: cu, Pwd: "cpwdcpwdcpwdcpwdcpwdcpwd"},
		OriginICE:       registry.ICECredentials{Ufrag: ou, Pwd: "opwdopwdopwdopwdopwdopwd"},
		OriginAddresses: []string{"127.0.0.1:8189"}}
}

func TestSessions(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()

	s1 := session("s1", "r1", "v/live/a", "orig1", "cli1")
	if err := c.CreateSession(ctx, s1); err != nil {
		t.Fatal(err)
	}
	conflicts := []struct {
		name string
		s    registry.Session
	}{
		{name: "same id", s: session("s1", "r1", "v/live/a", "other", "other")},
		{name: "same ufrag pair", s: session("s2", "r1", "v/live/a", "orig1", "cli1")},
	}
	for _, tc := range conflicts {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.CreateSession(ctx, tc.s); !errors.Is(err, registry.ErrConflict) {
				t.Errorf("err = %v, want ErrConflict", err)
			}
		})
	}
	for _, s := range []registry.Session{session("s2", "r1", "v/live/b", "orig2", "cli2"), session("s3", "r2", "v/live/ab", "orig3", "cli3"),
		session("s4", "r3", "v/live/a/nested", "orig4", "cli4")} {
		if err := c.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	if s, err := c.GetSessionByUfrag(ctx, "orig1:cli1"); err != nil || s.ID != "s1" {
		t.Fatalf("by ufrag: %+v %v", s, err)
	}
	ids := func(ss []registry.Session, err error) string {
		if err != nil {
			return err.Error()
		}
		out := ""
		for _, s := range ss {
			out += s.ID + " "
		}
		return out
	}
	if got := ids(c.ListSessionsByRelay(ctx, "r1")); got != "s1 s2 " {
		t.Errorf("by relay r1: %q", got)
	}
	if got := ids(c.ListSessionsByStream(ctx, "v/live/a")); got != "s1 " {
		t.Errorf("by stream v/live/a: %q (neither v/live/ab nor the nested v/live/a/nested may match)", got)
	}
	if got := ids(c.ListSessionsByStream(ctx, "v/live/a/nested")); got != "s4 " {
		t.Errorf("by stream v/live/a/nested: %q", got)
	}
	if got := ids(c.ListSessions(ctx)); got != "s1 s2 s3 s4 " {
		t.Errorf("all: %q", got)
	}

	// UpdateSession sets signaling's fields and refuses identity changes.
	u, err := c.UpdateSession(ctx, "s1", func(s *registry.Session) error {
		s.OriginResource, s.ETag = "http://origin/x", `"e1"`
		return nil
	})
	if err != nil || u.ETag != `"e1"` {
		t.Fatalf("update: %+v %v", u, err)
	}
	if _, err := c.UpdateSession(ctx, "s1", func(s *registry.Session) error { s.RelayID = "r9"; return nil }); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("identity change: %v, want ErrInvalid", err)
	}

	// The relay notes its socket toward the origin; only that relay may,
	// signaling may not change it, and a bad address is refused.
	if err := c.NoteRelayOrigin(ctx, "s1", "r1", "127.0.0.1:40000"); err != nil {
		t.Fatal(err)
	}
	if err := c.NoteRelayOrigin(ctx, "s1", "r7", "127.0.0.1:40001"); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("note by another relay: %v, want ErrConflict", err)
	}
	if err := c.NoteRelayOrigin(ctx, "s1", "r1", "127.0.0.1"); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("note without a port: %v, want ErrInvalid", err)
	}
	if _, err := c.UpdateSession(ctx, "s1", func(s *registry.Session) error { s.RelayOriginAddress = ""; return nil }); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("update of the relay socket: %v, want ErrInvalid", err)
	}
	// A rekey on the same relay and origin keeps it.
	r, err := c.RekeySession(ctx, "s1", registry.ICEKeys{Client: registry.ICECredentials{Ufrag: "cli1a", Pwd: "x"}, Origin: registry.ICECredentials{Ufrag: "orig1a", Pwd: "y"}}, slices.Clone(s1.OriginAddresses), "r1")
	if err != nil || r.RelayOriginAddress != "127.0.0.1:40000" || r.Moves != 0 {
		t.Fatalf("rekey on the same relay: %+v %v", r, err)
	}

	// Rekey moves the ufrag index and the relay index, and forgets the old
	// relay's socket.
	r, err = c.RekeySession(ctx, "s1", registry.ICEKeys{Client: registry.ICECredentials{Ufrag: "cli1b", Pwd: "x"}, Origin: registry.ICECredentials{Ufrag: "orig1b", Pwd: "y"}}, nil, "r2")
	if err != nil || r.RelayID != "r2" || r.ETag != `"e1"` || r.RelayOriginAddress != "" || r.Moves != 1 {
		t.Fatalf("rekey: %+v %v", r, err)
	}
	if got, err := c.GetSession(ctx, "s1"); err != nil || got.RelayOriginAddress != "" || got.Moves != 1 {
		t.Fatalf("after the move: %+v %v", got, err)
	}
	if _, err := c.UpdateSession(ctx, "s1", func(s *registry.Session) error { s.Moves = 0; return nil }); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("update of the moves: %v, want ErrInvalid", err)
	}
	if _, err := c.GetSessionByUfrag(ctx, "orig1:cli1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("old ufrag: %v", err)
	}
	if s, err := c.GetSessionByUfrag(ctx, "orig1b:cli1b"); err != nil || s.ID != "s1" {
		t.Errorf("new ufrag: %+v %v", s, err)
	}
	if got := ids(c.ListSessionsByRelay(ctx, "r2")); got != "s1 s3 " {
		t.Errorf("by relay r2 after rekey: %q", got)
	}
	if _, err := c.RekeySession(ctx, "s1", registry.ICEKeys{Client: registry.ICECredentials{Ufrag: "cli2"}, Origin: registry.ICECredentials{Ufrag: "orig2"}}, nil, ""); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("rekey onto a taken pair: %v, want ErrConflict", err)
	}

	// Delete removes the record and every index.
	if err := c.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSession(ctx, "s1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := c.GetSessionByUfrag(ctx, "orig1b:cli1b"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("ufrag after delete: %v", err)
	}
	if got := ids(c.ListSessionsByRelay(ctx, "r2")); got != "s3 " {
		t.Errorf("relay index after delete: %q", got)
	}
	resp, err := c.Etcd().Get(ctx, "/", withPrefixKeysOnly()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if containsID(string(kv.Key), "s1") {
			t.Errorf("key left behind: %s", kv.Key)
		}
	}
}

func TestSessionValidation(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	tests := []struct {
		name string
		mod  func(*registry.Session)
	}{
		{name: "bad id", mod: func(s *registry.Session) { s.ID = "a/b" }},
		{name: "empty stream", mod: func(s *registry.Session) { s.Stream = "" }},
		{name: "stream with empty segment", mod: func(s *registry.Session) { s.Stream = "a//b" }},
		{name: "bad direction", mod: func(s *registry.Session) { s.Direction = "both" }},
		{name: "no relay", mod: func(s *registry.Session) { s.RelayID = "" }},
		{name: "colon in ufrag", mod: func(s *registry.Session) { s.ClientICE.Ufrag = "a:b" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := session("ok", "r1", "v/a/b", "ou", "cu")
			tc.mod(&s)
			if err := c.CreateSession(t.Context(), s); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestGetSessionByUfragValidation(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	tests := []struct {
		name     string
		username string
		want     error
	}{
		{name: "empty", username: "", want: registry.ErrInvalid},
		{name: "no colon", username: "abcd", want: registry.ErrInvalid},
		{name: "empty origin ufrag", username: ":abcd", want: registry.ErrInvalid},
		{name: "empty client ufrag", username: "abcd:", want: registry.ErrInvalid},
		{name: "two colons", username: "a:b:c", want: registry.ErrInvalid},
		{name: "too long", username: strings.Repeat("a", 300) + ":b", want: registry.ErrInvalid},
		{name: "NUL", username: "a\x00:b", want: registry.ErrInvalid},
		{name: "unknown", username: "abcd:efgh", want: registry.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.GetSessionByUfrag(t.Context(), tc.username); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestOriginRefreshFromAnotherInstance shows that any signaling instance can
// take an origin's next heartbeat: it keeps the stored key's lease alive
// and the registration time.
func TestOriginRefreshFromAnotherInstance(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	prefix := "/rtcedge-shared/" + t.Name() + "/"
	newClient := func() *registry.Client {
		c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := newClient(), newClient()
	ctx := t.Context()
	key := prefix + "origins/srs-1"
	lease := func() clientv3.LeaseID {
		t.Helper()
		r, err := a.Etcd().Get(ctx, key)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("origin key: %v %v", r, err)
		}
		return clientv3.LeaseID(r.Kvs[0].Lease)
	}

	o := origin("srs-1", "eu", 0)
	first, created, err := a.RegisterOrigin(ctx, o)
	if err != nil || !created {
		t.Fatalf("register on a: created=%v err=%v", created, err)
	}
	l1 := lease()
	refreshed, created, err := b.RegisterOrigin(ctx, o)
	if err != nil || created {
		t.Fatalf("refresh on b: created=%v err=%v", created, err)
	}
	if !refreshed.RegisterTime.Equal(first.RegisterTime) || refreshed.HeartbeatTime.Before(first.HeartbeatTime) {
		t.Errorf("refresh: register %v heartbeat %v; first register %v heartbeat %v", refreshed.RegisterTime,
			refreshed.HeartbeatTime, first.RegisterTime, first.HeartbeatTime)
	}
	if l := lease(); l != l1 {
		t.Errorf("refresh changed the lease %x -> %x; it must keep the stored key's lease alive", l1, l)
	}

	// A TTL change moves the key to a new lease and revokes the old one.
	o.TTL = 7 * time.Second
	if _, created, err := b.RegisterOrigin(ctx, o); err != nil || created {
		t.Fatalf("ttl change: created=%v err=%v", created, err)
	}
	l2 := lease()
	if l2 == l1 {
		t.Fatal("ttl change kept the old lease")
	}
	if ttl, err := a.Etcd().TimeToLive(ctx, l1); err != nil || ttl.TTL != -1 {
		t.Errorf("old lease after a ttl change: %+v %v, want revoked (TTL -1)", ttl, err)
	}
	if ttl, err := a.Etcd().TimeToLive(ctx, l2); err != nil || ttl.GrantedTTL != 7 {
		t.Errorf("new lease: %+v %v, want a granted TTL of 7s", ttl, err)
	}

	// The lease is gone (as after an expiry): the next heartbeat registers
	// afresh under a new lease.
	if _, err := a.Etcd().Revoke(ctx, l2); err != nil {
		t.Fatal(err)
	}
	if _, created, err := a.RegisterOrigin(ctx, o); err != nil || !created {
		t.Fatalf("heartbeat after expiry: created=%v err=%v, want created", created, err)
	}
	if l := lease(); l == l2 || l == 0 {
		t.Errorf("lease after re-registration %x", l)
	}
}

// TestNewerRecordVersionRejected shows that a reader refuses a record
// written by a newer encoding rather than misreading it.
func TestNewerRecordVersionRejected(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	prefix := "/rtcedge-shared/" + t.Name() + "/"
	c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if _, err := c.Etcd().Put(ctx, prefix+"origins/future", `{"v":2,"id":"future","kind":"whip"}`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RegisterOrigin(ctx, origin("current", "", 0)); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetOrigin(ctx, "future")
	if err == nil || errors.Is(err, registry.ErrNotFound) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("GetOrigin of a v2 record: %v, want a version error", err)
	}
	os, err := c.ListOrigins(ctx)
	if err != nil || len(os) != 1 || os[0].ID != "current" {
		t.Errorf("ListOrigins: %+v %v, want only the readable record", os, err)
	}
}

func TestPickRelayPolicy(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	relay := func(id, zone string, sessions, max int, draining bool) registry.Relay {
		return registry.Relay{ID: id, Zone: zone, Sessions: sessions, MaxSessions: max, Draining: draining,
			GRPCAddress: "127.0.0.1:1", PublicAddresses: []string{"127.0.0.1:3478"}}
	}
	tests := []struct {
		name    string
		relays  []registry.Relay
		zone    string
		want    string
		wantErr error
	}{
		{name: "none", wantErr: registry.ErrNoRelay},
		{name: "least sessions", relays: []registry.Relay{relay("a", "", 5, 0, false), relay("b", "", 2, 0, false)}, want: "b"},
		{name: "load is relative to capacity", relays: []registry.Relay{relay("a", "", 50, 100, false), relay("b", "", 20, 25, false)}, want: "a"},
		{name: "zone preferred over load", relays: []registry.Relay{relay("a", "eu", 9, 0, false), relay("b", "us", 1, 0, false)}, zone: "eu", want: "a"},
		{name: "other zone when the local one is draining", relays: []registry.Relay{relay("a", "eu", 0, 0, true), relay("b", "us", 1, 0, false)}, zone: "eu", want: "b"},
		{name: "full relay skipped", relays: []registry.Relay{relay("a", "", 10, 10, false), relay("b", "", 30, 0, false)}, want: "b"},
		{name: "only draining", relays: []registry.Relay{relay("a", "", 0, 0, true)}, wantErr: registry.ErrNoRelay},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := embedetcd.NewClientForTest(t, srv)
			ctx := t.Context()
			for _, r := range tc.relays {
				reg, err := c.RegisterRelay(ctx, r, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = reg.Close(context.Background()) })
			}
			eventually(t, 5*time.Second, "cache filled", func() bool {
				rs, err := c.Relays(ctx)
				return err == nil && len(rs) == len(tc.relays)
			})
			r, err := c.PickRelay(ctx, tc.zone)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || r.ID != tc.want {
				t.Fatalf("picked %q (%v), want %q", r.ID, err, tc.want)
			}
		})
	}
}

// TestPickRelaySpreadsBursts: between registration updates the records show
// stale session counts; a burst of picks is spread by counting this
// client's own picks, and the count starts over when a record changes.
func TestPickRelaySpreadsBursts(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	regs := map[string]*registry.RelayRegistration{}
	for _, r := range []registry.Relay{
		{ID: "a", Sessions: 0, GRPCAddress: "127.0.0.1:1", PublicAddresses: []string{"127.0.0.1:3478"}},
		{ID: "b", Sessions: 2, GRPCAddress: "127.0.0.1:2", PublicAddresses: []string{"127.0.0.1:3479"}},
	} {
		reg, err := c.RegisterRelay(ctx, r, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reg.Close(context.Background()) })
		regs[r.ID] = reg
	}
	eventually(t, 5*time.Second, "cache filled", func() bool {
		rs, err := c.Relays(ctx)
		return err == nil && len(rs) == 2
	})
	picks := func(n int) string {
		var out strings.Builder
		for range n {
			r, err := c.PickRelay(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			out.WriteString(r.ID)
		}
		return out.String()
	}
	// a has 0, b 2: a twice, then they alternate (ties go to the smaller id).
	if got := picks(6); got != "aaabab" {
		t.Fatalf("picks %q, want aaabab", got)
	}
	// a's record changes (it now reports the sessions it got): its count
	// starts over from the record.
	if err := regs["a"].Update(ctx, func(r *registry.Relay) { r.Sessions = 4 }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "cache updated", func() bool {
		rs, err := c.Relays(ctx)
		return err == nil && len(rs) == 2 && rs[0].ID == "a" && rs[0].Sessions == 4
	})
	// a: 4 from its record; b: 2 + 2 picks.
	if got := picks(3); got != "aba" {
		t.Fatalf("picks after the update %q, want aba", got)
	}
}

// TestConcurrentFirstHeartbeats: an origin's first heartbeats reaching
// several signaling instances at once create exactly one registration, and
// the losers' leases do not linger.
func TestConcurrentFirstHeartbeats(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	prefix := "/rtcedge-shared/" + t.Name() + "/"
	var clients []*registry.Client
	for range 2 {
		c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, c)
	}
	ctx := t.Context()
	const callers = 20
	var wg sync.WaitGroup
	created := make([]bool, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, created[i], errs[i] = clients[i%2].RegisterOrigin(ctx, origin("srs-1", "", 0))
		}()
	}
	wg.Wait()
	n := 0
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d callers saw created=true, want exactly 1", n)
	}
	leases, err := clients[0].Etcd().Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 1 {
		t.Errorf("%d leases left, want the registration's only", len(leases.Leases))
	}
}

// TestDeleteSessionIf: a conditional delete removes the record with all its
// index keys only when the stored record is the one the caller means; a
// record changed between the read and the delete (here: moved to another
// relay by a rekey made from inside match, after the first read) is read
// and judged again, not deleted unseen.
func TestDeleteSessionIf(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	onRelay := func(id string) func(registry.Session) bool {
		return func(s registry.Session) bool { return s.RelayID == id }
	}
	cases := []struct {
		name string
		// match is given the client and the session's id, for the cases
		// that change the record from inside it.
		match       func(c *registry.Client, id string) func(registry.Session) bool
		create      bool
		wantErr     error
		wantRemoved bool
	}{
		{name: "matching record", create: true, wantRemoved: true,
			match: func(*registry.Client, string) func(registry.Session) bool { return onRelay("r1") }},
		{name: "nil match removes any record", create: true, wantRemoved: true,
			match: func(*registry.Client, string) func(registry.Session) bool { return nil }},
		{name: "record of another relay kept", create: true, wantErr: registry.ErrConflict,
			match: func(*registry.Client, string) func(registry.Session) bool { return onRelay("r2") }},
		{name: "no record", wantErr: registry.ErrNotFound,
			match: func(*registry.Client, string) func(registry.Session) bool { return onRelay("r1") }},
		{name: "moved between the read and the delete", create: true, wantErr: registry.ErrConflict,
			match: func(c *registry.Client, id string) func(registry.Session) bool {
				calls := 0
				return func(s registry.Session) bool {
					calls++
					if calls == 1 {
						keys := registry.ICEKeys{Client: s.ClientICE, Origin: s.OriginICE}
						if _, err := c.RekeySession(ctx, id, keys, nil, "r2"); err != nil {
							t.Errorf("rekey: %v", err)
						}
					}
					return s.RelayID == "r1"
				}
			}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("del%d", i)
			if tc.create {
				if err := c.CreateSession(ctx, session(id, "r1", "v/del/s", "ou"+id, "cu"+id)); err != nil {
					t.Fatal(err)
				}
			}
			err := c.DeleteSessionIf(ctx, id, tc.match(c, id))
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("DeleteSessionIf: %v, want %v", err, tc.wantErr)
			}
			resp, err := c.Etcd().Get(ctx, "/", withPrefixKeysOnly()...)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, kv := range resp.Kvs {
				if containsID(string(kv.Key), id) || strings.HasSuffix(string(kv.Key), ":cu"+id) {
					left = append(left, string(kv.Key))
				}
			}
			if removed := len(left) == 0; tc.create && removed != tc.wantRemoved {
				t.Errorf("keys left %q, want removed %v", left, tc.wantRemoved)
			}
			if tc.create && !tc.wantRemoved && len(left) != 4 {
				t.Errorf("keys left %q, want the record's 4", left)
			}
		})
	}
}

// TestRelayTakeover: a second process registering the same relay id (a
// relay started with takeover beside the running one) takes the key over;
// the first one's later writes fail with ErrSuperseded instead of taking
// it back, and its Close (lease revoked) leaves the successor's key.
func TestRelayTakeover(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	prefix := "/rtcedge-shared/" + t.Name() + "/"
	open := func() *registry.Client {
		c, err := registry.New(registry.Config{Endpoints: srv.Endpoints(), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	oldProc, newProc, observer := open(), open(), open()
	ctx := t.Context()
	old, err := oldProc.RegisterRelay(ctx, registry.Relay{ID: "r1", GRPCAddress: "old:9090"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Update(ctx, func(r *registry.Relay) { r.Draining = true }); err != nil {
		t.Fatalf("update before the takeover: %v", err)
	}
	if old.Superseded() {
		t.Fatal("superseded before the takeover")
	}
	succ, err := newProc.RegisterRelay(ctx, registry.Relay{ID: "r1", GRPCAddress: "new:9090"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer succ.Close(ctx)

	cases := []struct {
		name string
		call func() error
	}{
		{name: "seen by the watch, before any write", call: func() error {
			select {
			case <-old.Taken():
				return registry.ErrSuperseded
			case <-time.After(10 * time.Second):
				return errors.New("Taken() did not close within 10 s")
			}
		}},
		{name: "a later write", call: func() error { return old.Update(ctx, func(r *registry.Relay) { r.Sessions = 7 }) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, registry.ErrSuperseded) {
				t.Fatalf("old process %s after the takeover: %v, want ErrSuperseded", tc.name, err)
			}
			if !old.Superseded() {
				t.Fatal("Superseded() = false")
			}
		})
	}
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := observer.GetRelay(ctx, "r1")
	if err != nil {
		t.Fatalf("the successor's key after the old process closed: %v", err)
	}
	if got.GRPCAddress != "new:9090" || got.Draining || got.Sessions != 0 {
		t.Fatalf("record after the takeover = %+v, want the successor's (new:9090, not draining)", got)
	}
	if err := succ.Update(ctx, func(r *registry.Relay) { r.Sessions = 2 }); err != nil {
		t.Fatalf("successor's update: %v", err)
	}
	if succ.Superseded() {
		t.Fatal("the successor counts itself superseded")
	}
}

// TestRelayRegistersAgainOnItsOwnKey: a registration whose lease ran out
// (the key is gone) writes it again under a new lease; that is not a
// takeover.
func TestRelayRegistersAgainOnItsOwnKey(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	reg, err := c.RegisterRelay(ctx, registry.Relay{ID: "r2"}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)
	// Revoke every lease behind the registration's back: the key goes,
	// the keepalive channel closes, and the registration puts it again.
	raw := c.Etcd()
	leases, err := raw.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Leases {
		if _, err := raw.Revoke(ctx, l.ID); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "registered again", func() bool {
		alive, _ := c.RelayAlive(ctx, "r2")
		return alive
	})
	if err := reg.Update(ctx, func(r *registry.Relay) { r.Sessions = 1 }); err != nil {
		t.Fatalf("update after registering again: %v", err)
	}
	if reg.Superseded() {
		t.Fatal("a registration that wrote its own key again counts itself superseded")
	}
}

// TestRelayOwnRecordUnderAnotherLease: a write the registration gave up on
// (etcd timed out) may still have been applied, leaving its own record
// under a lease it no longer uses. That is not a takeover: when the lease
// it keeps alive goes, it writes the key again. (Ownership by lease took
// it for a successor, stopped writing, and the relay's registration
// expired for good: a chaos run's fault 5 after fault 2.)
func TestRelayOwnRecordUnderAnotherLease(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	reg, err := c.RegisterRelay(ctx, registry.Relay{ID: "r3"}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)
	raw := c.Etcd()
	key := c.Prefix() + "relays/r3"
	got, err := raw.Get(ctx, key)
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("the registration's key %s: %v %v", key, got, err)
	}
	kept := clientv3.LeaseID(got.Kvs[0].Lease)
	// The record as the registration wrote it, under a lease it never
	// learnt about (the applied write of a timed-out call).
	stray, err := raw.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, key, string(got.Kvs[0].Value), clientv3.WithLease(stray.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Revoke(ctx, kept); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the key written again under the registration's new lease", func() bool {
		kv, err := raw.Get(ctx, key)
		return err == nil && len(kv.Kvs) == 1 && clientv3.LeaseID(kv.Kvs[0].Lease) != stray.ID
	})
	if reg.Superseded() {
		t.Fatal("its own record under another lease counted as a takeover")
	}
	if err := reg.Update(ctx, func(r *registry.Relay) { r.Sessions = 3 }); err != nil {
		t.Fatalf("update: %v", err)
	}
}
