package registry_test

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestReleaseIdlePins: a stream keeps its pin while it has a session or a
// setup in progress; an idle one loses it, and its origin's load drops, so
// an origin at capacity takes new streams again. A setup that picked the
// origin before the release fails in BeginSetup and picks again.
func TestReleaseIdlePins(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	if _, _, err := c.RegisterOrigin(ctx, origin("o1", "", 3)); err != nil {
		t.Fatal(err)
	}
	pick := func(stream string) int64 {
		t.Helper()
		o, rev, err := c.PickOriginPin(ctx, stream, "")
		if err != nil || o.ID != "o1" || rev <= 0 {
			t.Fatalf("pick %s: %s %d %v", stream, o.ID, rev, err)
		}
		return rev
	}
	// At capacity: three streams pinned.
	pick("v/live/busy")
	setupRev := pick("v/live/setup")
	pick("v/live/idle")
	if _, err := c.PickOrigin(ctx, "v/live/more", ""); !errors.Is(err, registry.ErrNoOrigin) {
		t.Fatalf("pick past capacity: %v, want ErrNoOrigin", err)
	}
	busy := session("s1", "r1", "v/live/busy", "ou1", "cu1")
	if err := c.CreateSession(ctx, busy); err != nil {
		t.Fatal(err)
	}
	st := registry.Setup{ID: "s2", Stream: "v/live/setup", Direction: registry.DirectionPublish, OriginID: "o1",
		Deadline: time.Now().Add(time.Minute), PinRev: setupRev}
	pending, err := c.BeginSetup(ctx, st)
	if err != nil {
		t.Fatal(err)
	}

	pins := func() map[string]bool {
		t.Helper()
		ps, err := c.ListPins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, p := range ps {
			out[p.Stream] = true
		}
		return out
	}
	// Pins younger than the cutoff stay.
	if n, err := c.ReleaseIdlePins(ctx, time.Now().Add(-time.Hour), 10); err != nil || n != 0 {
		t.Fatalf("release of young pins: %d %v", n, err)
	}
	if n, err := c.ReleaseIdlePins(ctx, time.Now().Add(time.Second), 10); err != nil || n != 1 {
		t.Fatalf("release: %d %v, want 1", n, err)
	}
	if got := pins(); len(got) != 2 || !got["v/live/busy"] || !got["v/live/setup"] {
		t.Fatalf("pins after release: %v", got)
	}
	// Below capacity again.
	staleRev := pick("v/live/more")

	// A setup that picked before the pin went away must pick again.
	if n, err := c.ReleaseIdlePins(ctx, time.Now().Add(time.Second), 10); err != nil || n != 1 {
		t.Fatalf("release of v/live/more: %d %v, want 1", n, err)
	}
	late := registry.Setup{ID: "s3", Stream: "v/live/more", Direction: registry.DirectionPlay, OriginID: "o1",
		Deadline: time.Now().Add(time.Minute), PinRev: staleRev}
	if _, err := c.BeginSetup(ctx, late); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("BeginSetup on a released pin: %v, want ErrConflict", err)
	}
	late.PinRev = pick("v/live/more")
	if _, err := c.BeginSetup(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSetup(ctx, "s3", 0); err != nil {
		t.Fatal(err)
	}

	// Ending the session and the setup makes every stream idle; limit
	// bounds one call.
	if err := c.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSetup(ctx, "s2", pending.Rev); err != nil {
		t.Fatal(err)
	}
	if n, err := c.ReleaseIdlePins(ctx, time.Now().Add(time.Second), 2); err != nil || n != 2 {
		t.Fatalf("release with limit 2: %d %v", n, err)
	}
	if n, err := c.ReleaseIdlePins(ctx, time.Now().Add(time.Second), 2); err != nil || n != 1 {
		t.Fatalf("release of the rest: %d %v", n, err)
	}
	if got := pins(); len(got) != 0 {
		t.Fatalf("pins left: %v", got)
	}
	for _, prefix := range []string{"pins/", "originpins/", "streamsetups/", "streamsessions/", "setups/"} {
		resp, err := c.Etcd().Get(ctx, registry.DefaultPrefix+prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 0 {
			t.Errorf("%s: %v keys left, %v", prefix, resp, err)
		}
	}
	if _, err := c.ReleaseIdlePins(ctx, time.Now(), 0); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("limit 0: %v, want ErrInvalid", err)
	}
}

// TestNestedStreamKeepsPin: "a/b" has no session of its own but "a/b/c"
// has: the release is conservative and keeps both.
func TestNestedStreamKeepsPin(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	if _, _, err := c.RegisterOrigin(ctx, origin("o1", "", 0)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"v/live/a", "v/live/a/c"} {
		if _, err := c.PickOrigin(ctx, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CreateSession(ctx, session("s1", "r1", "v/live/a/c", "ou1", "cu1")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.ReleaseIdlePins(ctx, time.Now().Add(time.Second), 10); err != nil || n != 0 {
		t.Fatalf("release: %d %v, want 0", n, err)
	}
}
