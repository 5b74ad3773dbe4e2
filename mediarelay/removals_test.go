package mediarelay_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// recordKeys returns the registry keys of session id with ufrag pair
// username: the record and its three index keys while it is there.
func recordKeys(t *testing.T, reg *registry.Client, id, username string) []string {
	t.Helper()
	resp, err := reg.Etcd().Get(t.Context(), reg.Prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); strings.HasSuffix(k, "/"+id) || k == reg.Prefix()+"ufrags/"+username {
			out = append(out, k)
		}
	}
	return out
}

// keepAlive connects a client for session cr through the relay and keeps
// sending its checks (activity: the echo origin answers them) until the
// returned stop is called.
func keepAlive(t *testing.T, relay netip.AddrPort, cr creds) (stop func()) {
	t.Helper()
	c := clientSocket(t)
	connect(t, c, relay, cr)
	req := binding(t, cr.ou+":"+cr.cu, cr.op)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for range 3000 { // at most 5 min
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			_, _ = c.WriteToUDPAddrPort(req, relay)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); <-stopped }) }
	t.Cleanup(stop)
	return stop
}

// waitUntil polls cond every 50 ms until it holds, failing after d (generous:
// a busy machine is slow, never wrong).
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEtcd waits until the registry answers again after an outage.
func waitEtcd(t *testing.T, reg *registry.Client) {
	t.Helper()
	waitUntil(t, 30*time.Second, "etcd to answer again", func() bool {
		_, err := reg.GetSession(t.Context(), "probe")
		return errors.Is(err, registry.ErrNotFound)
	})
}

// released reports whether the relay no longer has session id.
func released(t *testing.T, r *testRelay, id string) bool {
	_, err := r.client.GetSession(t.Context(), &relayv1.GetSessionRequest{Id: id})
	return status.Code(err) == codes.NotFound
}

// TestRecordsOfSessionsReleasedDuringAnOutageRemovedAfter: sessions
// released while etcd is unreachable (by the admin API, for being idle)
// keep their records through the outage, counted as pending removals, and
// the relay removes them, every key, once etcd is back, with no further
// call. Before the fix the relay logged the failure and the records stayed
// for good (the reaper leaves a live relay's sessions alone).
func TestRecordsOfSessionsReleasedDuringAnOutageRemovedAfter(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	origin := startEcho(t)
	relay := startRelay(t, reg, "relay-a", "127.0.0.1:0", func(c *mediarelay.Config) { c.IdleTimeout = 2 * time.Second })
	ctx := t.Context()
	cases := []struct {
		name    string
		creds   creds
		release func(t *testing.T, id string) // during the outage
	}{
		{name: "released by the admin API", creds: newCreds("api"), release: func(t *testing.T, id string) {
			if _, err := relay.client.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: id}); err != nil {
				t.Fatalf("release during the outage: %v", err)
			}
		}},
		{name: "released for being idle", creds: newCreds("idle"), release: func(t *testing.T, id string) {
			waitUntil(t, 30*time.Second, "the idle session's release", func() bool { return released(t, relay, id) })
		}},
	}
	ids := make([]string, len(cases))
	stops := make([]func(), len(cases))
	for i, tc := range cases {
		resp, err := relay.client.AllocateSession(ctx, allocReq("v/live/outage", tc.creds, origin.addr))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = resp.Session.Id
		// Active until etcd is down, so none is released before.
		stops[i] = keepAlive(t, relay.public, tc.creds)
		if got := recordKeys(t, reg, ids[i], tc.creds.ou+":"+tc.creds.cu); len(got) != 4 {
			t.Fatalf("%s: keys before the outage %q, want 4", tc.name, got)
		}
	}
	etcd.Stop()
	for i, tc := range cases {
		stops[i]()
		tc.release(t, ids[i])
	}
	if n := metric(t, relay.relay.HTTPHandler(), "rtcedge_relay_pending_record_removals"); n != float64(len(cases)) {
		t.Fatalf("pending record removals during the outage: %v, want %d", n, len(cases))
	}
	if err := etcd.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			waitUntil(t, 90*time.Second, "the records' removal", func() bool {
				return len(recordKeys(t, reg, ids[i], tc.creds.ou+":"+tc.creds.cu)) == 0
			})
		})
	}
	waitUntil(t, 10*time.Second, "no pending removal", func() bool {
		return metric(t, relay.relay.HTTPHandler(), "rtcedge_relay_pending_record_removals") == 0
	})
}

// etcdLink is a loopback TCP proxy to etcd that a test can cut: it cuts
// one client (a relay) off etcd while the others still reach it, as a
// network partition does.
type etcdLink struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newEtcdLink(t *testing.T, target string) *etcdLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &etcdLink{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.wg.Add(1)
			go func() { defer l.wg.Done(); l.serve(c) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); l.setCut(true); l.wg.Wait() })
	return l
}

func (l *etcdLink) serve(c net.Conn) {
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		_ = c.Close()
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	l.conns[c], l.conns[up] = struct{}{}, struct{}{}
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, up)
	l.mu.Unlock()
}

// setCut cuts the link (closing every connection through it and each new
// one at once) or restores it.
func (l *etcdLink) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.conns {
			_ = c.Close()
		}
	}
}

func (l *etcdLink) endpoint() string { return l.ln.Addr().String() }

// TestRetriedRemovalKeepsARecreatedSession: a relay cut off etcd releases
// sessions; meanwhile their old records are removed by someone else (a
// client's DELETE through signaling, the reaper) and new sessions take
// their ids. When the relay reaches etcd again, its retries leave the new
// records alone: it removes only the record of the session it released
// (same relay, same creation), never one moved to another relay or created
// after the release under the same id.
func TestRetriedRemovalKeepsARecreatedSession(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	link := newEtcdLink(t, etcd.Endpoints()[0])
	// The relay's own client, through the link, with the same key prefix.
	relayReg, err := registry.New(registry.Config{Endpoints: []string{link.endpoint()}, Prefix: reg.Prefix(),
		DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relayReg.Close() })
	origin := startEcho(t)
	relay := startRelay(t, relayReg, "relay-a", "127.0.0.1:0")
	other := startRelay(t, reg, "relay-b", "127.0.0.1:0")
	ctx := t.Context()
	cases := []struct {
		name     string
		id       string
		old, new creds
		// recreate makes the new session under id once the old record is
		// gone; it returns the relay its record names.
		recreate func(t *testing.T, id string, cr creds) string
	}{
		{name: "re-created on another relay", id: "other-relay", old: newCreds("o1"), new: newCreds("o2"),
			recreate: func(t *testing.T, id string, cr creds) string {
				req := allocReq("v/live/again", cr, origin.addr)
				req.SessionId = id
				if _, err := other.client.AllocateSession(ctx, req); err != nil {
					t.Fatal(err)
				}
				return "relay-b"
			}},
		{name: "a record naming the relay, created after the release, that it does not hold", id: "not-held",
			old: newCreds("n1"), new: newCreds("n2"),
			recreate: func(t *testing.T, id string, cr creds) string {
				if err := reg.CreateSession(ctx, registry.Session{ID: id, Stream: "v/live/again", Direction: registry.DirectionPublish,
					RelayID: "relay-a", ClientICE: registry.ICECredentials{Ufrag: cr.cu, Pwd: cr.cp},
					OriginICE:       registry.ICECredentials{Ufrag: cr.ou, Pwd: cr.op},
					OriginAddresses: []string{origin.addr.String()}}); err != nil {
					t.Fatal(err)
				}
				return "relay-a"
			}},
	}
	for _, tc := range cases {
		req := allocReq("v/live/first", tc.old, origin.addr)
		req.SessionId = tc.id
		if _, err := relay.client.AllocateSession(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	link.setCut(true)
	for _, tc := range cases {
		if _, err := relay.client.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: tc.id}); err != nil {
			t.Fatalf("release while cut off etcd: %v", err)
		}
	}
	if n := metric(t, relay.relay.HTTPHandler(), "rtcedge_relay_pending_record_removals"); n != float64(len(cases)) {
		t.Fatalf("pending record removals while cut off: %v, want %d", n, len(cases))
	}
	wantRelay := map[string]string{}
	for _, tc := range cases {
		if err := reg.DeleteSession(ctx, tc.id); err != nil {
			t.Fatal(err)
		}
		wantRelay[tc.id] = tc.recreate(t, tc.id, tc.new)
	}
	link.setCut(false)
	waitUntil(t, 90*time.Second, "the relay's retries", func() bool {
		return metric(t, relay.relay.HTTPHandler(), "rtcedge_relay_pending_record_removals") == 0
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := reg.GetSession(ctx, tc.id)
			if err != nil {
				t.Fatalf("the new session's record: %v", err)
			}
			if rs.RelayID != wantRelay[tc.id] || rs.ClientICE.Ufrag != tc.new.cu {
				t.Errorf("record %+v, want the new session's on %s", rs, wantRelay[tc.id])
			}
			if got := recordKeys(t, reg, tc.id, tc.new.ou+":"+tc.new.cu); len(got) != 4 {
				t.Errorf("the new session's keys %q, want 4", got)
			}
		})
	}
}

// TestRestartedRelayRemovesRecordsLeftByAnOutage: a relay that closes while
// etcd is still away leaves the records of the sessions it released during
// the outage (Close's last attempt fails too). Started again with the same
// id once etcd is back, it resumes them from the registry, as every
// session assigned to it, and releases them when idle, which removes them.
func TestRestartedRelayRemovesRecordsLeftByAnOutage(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	origin := startEcho(t)
	relay := startRelay(t, reg, "relay-a", "127.0.0.1:0")
	ctx := t.Context()
	cr := newCreds("restart")
	resp, err := relay.client.AllocateSession(ctx, allocReq("v/live/restart", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Session.Id
	etcd.Stop()
	if _, err := relay.client.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: id}); err != nil {
		t.Fatalf("release during the outage: %v", err)
	}
	relay.stop()
	if err := etcd.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitEtcd(t, reg)
	if got := recordKeys(t, reg, id, cr.ou+":"+cr.cu); len(got) != 4 {
		t.Fatalf("keys after the relay closed %q, want the 4 left by the outage", got)
	}
	again := startRelay(t, reg, "relay-a", "127.0.0.1:0", func(c *mediarelay.Config) { c.IdleTimeout = 2 * time.Second })
	waitUntil(t, 30*time.Second, "the session resumed from its record", func() bool { return !released(t, again, id) })
	waitUntil(t, 30*time.Second, "the resumed session's idle release and its records' removal", func() bool {
		return released(t, again, id) && len(recordKeys(t, reg, id, cr.ou+":"+cr.cu)) == 0
	})
}
