package mediarelay_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestTakenOverRelayKeepsSessionRecords: once a successor of the same relay
// id has taken the registration over (a relay started with -takeover), the
// old process releasing a session (an idle one: the kernel may send its
// packets to the successor alone; or a DELETE that reached the old
// process) keeps the session's record, which is the successor's now, and
// so does its Close. Before, it removed the record the successor serves
// the session from. It also stops taking new sessions as soon as it sees
// the takeover.
func TestTakenOverRelayKeepsSessionRecords(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	origin := startEcho(t)
	old := startRelay(t, reg, "relay-a", "127.0.0.1:0")
	ctx := t.Context()
	waitUntil(t, 10*time.Second, "the relay registered", func() bool {
		alive, _ := reg.RelayAlive(ctx, "relay-a")
		return alive
	})
	cases := []struct {
		name  string
		creds creds
	}{
		{name: "released by the admin API", creds: newCreds("tk1")},
		{name: "released at Close", creds: newCreds("tk2")},
	}
	ids := make([]string, len(cases))
	for i, tc := range cases {
		resp, err := old.client.AllocateSession(ctx, allocReq("v/live/takeover", tc.creds, origin.addr))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = resp.Session.Id
	}

	// The successor's registration: another process, same id, same prefix.
	succReg, err := registry.New(registry.Config{Endpoints: etcd.Endpoints(), Prefix: reg.Prefix(),
		DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = succReg.Close() })
	succ, err := succReg.RegisterRelay(ctx, registry.Relay{ID: "relay-a", GRPCAddress: "successor:9090"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = succ.Close(ctx) })

	// The old process sees the takeover (a watch on its key) and takes no
	// new session: signaling's setups go elsewhere.
	waitUntil(t, 10*time.Second, "the old process refusing new sessions", func() bool {
		_, err := old.client.AllocateSession(ctx, allocReq("v/live/takeover", newCreds("tk3"), origin.addr))
		return status.Code(err) == codes.Unavailable
	})
	if _, err := old.client.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: ids[0]}); err != nil {
		t.Fatalf("release on the old process: %v", err)
	}
	old.stop()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := recordKeys(t, reg, ids[i], tc.creds.ou+":"+tc.creds.cu); len(got) != 4 {
				t.Fatalf("keys of the session after the old process released it: %q, want its 4", got)
			}
		})
	}
	rec, err := reg.GetRelay(ctx, "relay-a")
	if err != nil || rec.GRPCAddress != "successor:9090" {
		t.Fatalf("registration after the old process stopped: %+v %v; want the successor's", rec, err)
	}
}
