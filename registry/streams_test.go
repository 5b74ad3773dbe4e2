package registry_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestPickOriginForDiscovery: which origin a stream goes to, given what
// the origins' inventories say, suspect marks and origins to avoid. Three
// origins: a and b with inventories, w without (a plain WHIP server).
func TestPickOriginForDiscovery(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	for _, id := range []string{"a", "b", "w"} {
		if _, _, err := c.RegisterOrigin(ctx, origin(id, "", 0)); err != nil {
			t.Fatal(err)
		}
	}
	writers := map[string]*registry.InventoryWriter{}
	for _, id := range []string{"a", "b"} {
		w, err := c.NewInventoryWriter(id, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		writers[id] = w
	}
	inventory := func(id string, streams ...string) {
		t.Helper()
		if err := writers[id].Write(ctx, streams, false); err != nil {
			t.Fatal(err)
		}
	}
	inventory("a", "v/live/on-a")
	inventory("b", "v/live/on-b", "v/live/on-both")
	if err := writers["a"].Write(ctx, []string{"v/live/on-a", "v/live/on-both"}, false); err != nil {
		t.Fatal(err)
	}
	pin := func(stream, id string) {
		t.Helper()
		if ok, err := c.PinStreamTo(ctx, stream, id); err != nil || !ok {
			t.Fatalf("pin %s to %s: %v %v", stream, id, ok, err)
		}
	}
	// Pins made before the inventories below were written.
	pin("v/live/pinned-a-on-b", "a")
	pin("v/live/pinned-a-nowhere", "a")
	pin("v/live/pinned-w", "w")
	inventory("b", "v/live/on-b", "v/live/on-both", "v/live/pinned-a-on-b")
	if err := writers["a"].Write(ctx, []string{"v/live/on-a", "v/live/on-both"}, false); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		stream  string
		opt     registry.PickOptions
		want    string   // origin id
		oneOf   []string // or any of these
		wantErr error
	}{
		{name: "unpinned play goes where it is live", stream: "v/live/on-b", opt: registry.PickOptions{Play: true}, want: "b"},
		{name: "unpinned play live on a", stream: "v/live/on-a", opt: registry.PickOptions{Play: true}, want: "a"},
		{name: "live on two: one of them", stream: "v/live/on-both", opt: registry.PickOptions{Play: true}, oneOf: []string{"a", "b"}},
		{name: "play live nowhere: only the origin without inventory", stream: "v/live/nowhere", opt: registry.PickOptions{Play: true}, want: "w"},
		{name: "publish of a stream live on b goes to b", stream: "v/live/on-b", opt: registry.PickOptions{}, want: "b"},
		{name: "pinned origin lacks it, b has it: moved", stream: "v/live/pinned-a-on-b", opt: registry.PickOptions{Play: true}, want: "b"},
		{name: "pinned origin's inventory lacks it, nobody has it", stream: "v/live/pinned-a-nowhere", opt: registry.PickOptions{Play: true}, wantErr: registry.ErrNotLive},
		{name: "publish keeps its pin", stream: "v/live/pinned-a-nowhere", opt: registry.PickOptions{}, want: "a"},
		{name: "pinned to an origin without inventory", stream: "v/live/pinned-w", opt: registry.PickOptions{Play: true}, want: "w"},
		{name: "only live, none", stream: "v/live/nowhere-2", opt: registry.PickOptions{Play: true, OnlyLive: true}, wantErr: registry.ErrNotLive},
		{name: "avoid the only live one", stream: "v/live/on-a", opt: registry.PickOptions{Play: true, OnlyLive: true, Avoid: []string{"a"}}, wantErr: registry.ErrNotLive},
		{name: "avoided pin is replaced", stream: "v/live/pinned-w", opt: registry.PickOptions{Avoid: []string{"w"}}, oneOf: []string{"a", "b"}},
		{name: "play with every origin avoided", stream: "v/live/nowhere-3", opt: registry.PickOptions{Play: true, Avoid: []string{"a", "b", "w"}}, wantErr: registry.ErrNoOrigin},
		{name: "play, only inventoried origins usable", stream: "v/live/nowhere-4", opt: registry.PickOptions{Play: true, Avoid: []string{"w"}}, wantErr: registry.ErrNotLive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, rev, err := c.PickOriginFor(ctx, tc.stream, tc.opt)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %s %v, want %v", o.ID, err, tc.wantErr)
				}
				return
			}
			if err != nil || rev <= 0 {
				t.Fatalf("%s %d %v", o.ID, rev, err)
			}
			if tc.want != "" && o.ID != tc.want {
				t.Fatalf("picked %s, want %s", o.ID, tc.want)
			}
			if len(tc.oneOf) > 0 && o.ID != tc.oneOf[0] && o.ID != tc.oneOf[1] {
				t.Fatalf("picked %s, want one of %v", o.ID, tc.oneOf)
			}
		})
	}

	t.Run("suspect origin gets no pins and loses its own", func(t *testing.T) {
		pin("v/live/s1", "a")
		if err := c.MarkOriginSuspect(ctx, "a", "connection refused", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			o, _, err := c.PickOriginFor(ctx, fmt.Sprintf("v/live/new-%d", i), registry.PickOptions{})
			if err != nil || o.ID == "a" {
				t.Fatalf("new stream: %s %v", o.ID, err)
			}
		}
		o, _, err := c.PickOriginFor(ctx, "v/live/s1", registry.PickOptions{})
		if err != nil || o.ID == "a" {
			t.Fatalf("stream pinned to the suspect: %s %v", o.ID, err)
		}
		if cleared, err := c.ClearOriginSuspect(ctx, "a"); err != nil || !cleared {
			t.Fatalf("clear: %v %v", cleared, err)
		}
		pin("v/live/s2", "a")
		if o, _, err := c.PickOriginFor(ctx, "v/live/s2", registry.PickOptions{}); err != nil || o.ID != "a" {
			t.Fatalf("after clearing: %s %v", o.ID, err)
		}
	})
}

// TestInventoryWriter: a write replaces the origin's list, Drop removes it,
// and records go when the writer stops refreshing.
func TestInventoryWriter(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	w, err := c.NewInventoryWriter("o1", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	live := func() []string {
		t.Helper()
		ls, err := c.ListLiveStreams(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls {
			out = append(out, l.OriginID+":"+l.Stream)
		}
		return out
	}
	steps := []struct {
		name    string
		streams []string
		want    string
	}{
		{name: "first", streams: []string{"v/live/b", "v/live/a", "bad//key"}, want: "[o1:v/live/a o1:v/live/b]"},
		{name: "one gone, one new", streams: []string{"v/live/b", "v/live/c"}, want: "[o1:v/live/b o1:v/live/c]"},
		{name: "unchanged", streams: []string{"v/live/c", "v/live/b"}, want: "[o1:v/live/b o1:v/live/c]"},
		{name: "empty", streams: nil, want: "[]"},
	}
	for _, st := range steps {
		if err := w.Write(ctx, st.streams, false); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := fmt.Sprint(live()); got != st.want {
			t.Fatalf("%s: %s, want %s", st.name, got, st.want)
		}
	}
	invs, err := c.ListInventories(ctx)
	if err != nil || len(invs) != 1 || invs[0].OriginID != "o1" || invs[0].Streams != 0 {
		t.Fatalf("inventories %+v %v", invs, err)
	}
	// Many streams: more than one transaction.
	var many []string
	for i := range 230 {
		many = append(many, fmt.Sprintf("v/live/s%03d", i))
	}
	if err := w.Write(ctx, many, false); err != nil {
		t.Fatal(err)
	}
	if n := len(live()); n != 230 {
		t.Fatalf("%d records, want 230", n)
	}
	if err := w.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(live()); n != 0 {
		t.Fatalf("%d records after Drop", n)
	}
	// Records expire with the lease when nobody writes.
	if err := w.Write(ctx, []string{"v/live/x"}, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(live()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("records outlived their lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStreamHooks: on_publish pins the stream to its origin unless
// sessions hold another pin; on_unpublish unpins an idle stream.
func TestStreamHooks(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if _, _, err := c.RegisterOrigin(ctx, origin(id, "", 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.MarkStreamLive(ctx, "v/live/x", "b", registry.StreamSourceHook, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ls, err := c.LiveOrigins(ctx, "v/live/x"); err != nil || len(ls) != 1 || ls[0].OriginID != "b" || ls[0].Source != registry.StreamSourceHook {
		t.Fatalf("%+v %v", ls, err)
	}
	if ok, err := c.PinStreamTo(ctx, "v/live/x", "a"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, err := c.PinStreamTo(ctx, "v/live/x", "b"); err != nil || !ok {
		t.Fatalf("idle stream re-pinned: %v %v", ok, err)
	}
	// A session holds the pin on b: a hook for a cannot take it.
	if err := c.CreateSession(ctx, session("s1", "r1", "v/live/x", "ou1", "cu1")); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.PinStreamTo(ctx, "v/live/x", "a"); err != nil || ok {
		t.Fatalf("busy stream: %v %v", ok, err)
	}
	if ok, err := c.UnpinIdleFrom(ctx, "v/live/x", "b"); err != nil || ok {
		t.Fatalf("busy unpin: %v %v", ok, err)
	}
	if err := c.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.UnpinIdleFrom(ctx, "v/live/x", "a"); err != nil || ok {
		t.Fatalf("unpin from another origin: %v %v", ok, err)
	}
	if ok, err := c.UnpinIdleFrom(ctx, "v/live/x", "b"); err != nil || !ok {
		t.Fatalf("unpin: %v %v", ok, err)
	}
	if err := c.MarkStreamGone(ctx, "v/live/x", "b"); err != nil {
		t.Fatal(err)
	}
	if ls, err := c.LiveOrigins(ctx, "v/live/x"); err != nil || len(ls) != 0 {
		t.Fatalf("%+v %v", ls, err)
	}
	if _, err := c.PinStreamTo(ctx, "v/live/y", "gone"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("pin to an unregistered origin: %v", err)
	}
}
