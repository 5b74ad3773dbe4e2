package registry_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func setupRecord(id string, deadline time.Time) registry.Setup {
	return registry.Setup{ID: id, Stream: "v/live/a", Direction: registry.DirectionPublish, OriginID: "origin-1", Deadline: deadline}
}

// TestSetupLifecycle: begin, note the origin, finish in one transaction with
// the session record; the pending key is gone and the session complete.
func TestSetupLifecycle(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()

	p, err := c.BeginSetup(ctx, setupRecord("s1", time.Now().Add(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Rev == 0 || p.CreateTime.IsZero() {
		t.Fatalf("BeginSetup returned %+v", p)
	}
	if _, err := c.BeginSetup(ctx, setupRecord("s1", time.Now().Add(time.Minute))); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("second BeginSetup: %v, want ErrConflict", err)
	}
	noted, err := c.NoteSetupOrigin(ctx, p, "http://127.0.0.1:1/res/1", `"e1"`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetSetup(ctx, "s1")
	if err != nil || got.OriginResource != "http://127.0.0.1:1/res/1" || got.OriginETag != `"e1"` || got.Rev != noted.Rev {
		t.Fatalf("GetSetup: %+v %v", got, err)
	}
	// A note on a stale revision loses.
	if _, err := c.NoteSetupOrigin(ctx, p, "http://x/", ""); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("stale NoteSetupOrigin: %v, want ErrConflict", err)
	}
	if stale, err := c.ListStaleSetups(ctx, time.Now()); err != nil || len(stale) != 0 {
		t.Fatalf("stale setups before the deadline: %v %v", stale, err)
	}
	if stale, err := c.ListStaleSetups(ctx, time.Now().Add(2*time.Minute)); err != nil || len(stale) != 1 || stale[0].Rev != noted.Rev {
		t.Fatalf("stale setups after the deadline: %v %v", stale, err)
	}

	// FinishSetup needs the relay's record.
	if _, err := c.FinishSetup(ctx, noted, func(*registry.Session) error { return nil }); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("FinishSetup without a session: %v, want ErrNotFound", err)
	}
	if err := c.CreateSession(ctx, session("s1", "r1", "v/live/a", "orig1", "cli1")); err != nil {
		t.Fatal(err)
	}
	// It may not change the session's identity.
	if _, err := c.FinishSetup(ctx, noted, func(s *registry.Session) error { s.RelayID = "r2"; return nil }); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("FinishSetup changing the relay: %v, want ErrInvalid", err)
	}
	// A stale revision of the setup (a reaper's claim) makes it fail, and
	// leaves the session as it was.
	if _, err := c.FinishSetup(ctx, p, func(s *registry.Session) error { s.OriginResource = "x"; return nil }); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("FinishSetup on a stale setup revision: %v, want ErrConflict", err)
	}
	if s, _ := c.GetSession(ctx, "s1"); s.OriginResource != "" {
		t.Fatal("a failed FinishSetup changed the session")
	}
	s, err := c.FinishSetup(ctx, noted, func(s *registry.Session) error { s.OriginResource = noted.OriginResource; return nil })
	if err != nil || s.OriginResource != noted.OriginResource {
		t.Fatalf("FinishSetup: %+v %v", s, err)
	}
	if _, err := c.GetSetup(ctx, "s1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("pending setup after FinishSetup: %v, want ErrNotFound", err)
	}
	if s, err := c.GetSession(ctx, "s1"); err != nil || s.OriginResource != noted.OriginResource {
		t.Fatalf("session after FinishSetup: %+v %v", s, err)
	}
	if all, err := c.ListSetups(ctx); err != nil || len(all) != 0 {
		t.Fatalf("setups left: %v %v", all, err)
	}
}

// TestSetupFinishRetriesOnSessionChange: a concurrent change of the
// session record (not of the setup) is retried, not reported.
func TestSetupFinishRetriesOnSessionChange(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	p, err := c.BeginSetup(ctx, setupRecord("s1", time.Now().Add(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSession(ctx, session("s1", "r1", "v/live/a", "orig1", "cli1")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err = c.FinishSetup(ctx, p, func(s *registry.Session) error {
		calls++
		if calls == 1 {
			// Someone else changes the session between the read and the
			// transaction.
			if _, err := c.UpdateSession(ctx, "s1", func(s *registry.Session) error { s.Labels = map[string]string{"k": "v"}; return nil }); err != nil {
				t.Error(err)
			}
		}
		s.ETag = `"x"`
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("FinishSetup: calls=%d err=%v", calls, err)
	}
	if s, _ := c.GetSession(ctx, "s1"); s.ETag != `"x"` || s.Labels["k"] != "v" {
		t.Fatalf("session: %+v", s)
	}
}

// TestSetupClaimRace: several reapers claim the same stale setup; exactly
// one wins, a setup that was claimed cannot finish, and the winner's
// compare-and-delete removes it.
func TestSetupClaimRace(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	p, err := c.BeginSetup(ctx, setupRecord("s1", time.Now().Add(-time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	stale, err := c.ListStaleSetups(ctx, time.Now())
	if err != nil || len(stale) != 1 {
		t.Fatalf("stale: %v %v", stale, err)
	}
	var wins atomic.Int32
	var winner registry.PendingSetup
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			claimed, err := c.ClaimSetup(ctx, stale[0], "reaper-"+string(rune('a'+i)), time.Now().Add(time.Minute))
			switch {
			case err == nil:
				wins.Add(1)
				mu.Lock()
				winner = claimed
				mu.Unlock()
			case !errors.Is(err, registry.ErrConflict):
				t.Errorf("claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claims won, want 1", wins.Load())
	}
	if winner.ClaimedBy == "" || winner.ClaimTime.IsZero() || !winner.Deadline.After(time.Now()) {
		t.Fatalf("claimed record: %+v", winner)
	}
	// Claimed: no longer stale until the claim expires.
	if stale, _ := c.ListStaleSetups(ctx, time.Now()); len(stale) != 0 {
		t.Fatalf("a claimed setup is listed as stale: %v", stale)
	}
	if stale, _ := c.ListStaleSetups(ctx, time.Now().Add(2*time.Minute)); len(stale) != 1 || stale[0].ClaimedBy != winner.ClaimedBy {
		t.Fatalf("an expired claim is not listed as stale: %v", stale)
	}
	// The setup itself lost.
	if err := c.CreateSession(ctx, session("s1", "r1", "v/live/a", "orig1", "cli1")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FinishSetup(ctx, p, func(*registry.Session) error { return nil }); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("FinishSetup of a claimed setup: %v, want ErrConflict", err)
	}
	if err := c.DeleteSetup(ctx, "s1", p.Rev); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("DeleteSetup on the setup's own revision after a claim: %v, want ErrConflict", err)
	}
	if err := c.DeleteSetup(ctx, "s1", winner.Rev); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSetup(ctx, "s1", winner.Rev); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second DeleteSetup: %v, want ErrNotFound", err)
	}
	if _, err := c.ClaimSetup(ctx, winner, "late", time.Now()); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("claim of a deleted setup: %v, want ErrNotFound", err)
	}
}

func TestSetupValidationAndUnconditionalDelete(t *testing.T) {
	srv := embedetcd.StartForTest(t)
	c := embedetcd.NewClientForTest(t, srv)
	ctx := t.Context()
	future := time.Now().Add(time.Minute)
	bad := []registry.Setup{
		{ID: "a/b", Stream: "v/l/a", Direction: registry.DirectionPlay, OriginID: "o", Deadline: future},
		{ID: "a", Stream: "", Direction: registry.DirectionPlay, OriginID: "o", Deadline: future},
		{ID: "a", Stream: "v/l/a", Direction: "x", OriginID: "o", Deadline: future},
		{ID: "a", Stream: "v/l/a", Direction: registry.DirectionPlay, OriginID: "o/x", Deadline: future},
		{ID: "a", Stream: "v/l/a", Direction: registry.DirectionPlay, OriginID: "o"},
		{ID: "a", Stream: "v/l/a", Direction: registry.DirectionPlay, OriginID: "o", RelayID: "r:1", Deadline: future},
	}
	for _, st := range bad {
		if _, err := c.BeginSetup(ctx, st); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("BeginSetup(%+v): %v, want ErrInvalid", st, err)
		}
	}
	if err := c.DeleteSetup(ctx, "a/b", 0); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("DeleteSetup of a bad id: %v", err)
	}
	if _, err := c.ListStaleSetups(ctx, time.Time{}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("ListStaleSetups without a time: %v", err)
	}
	if _, err := c.BeginSetup(ctx, setupRecord("s2", future)); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSetup(ctx, "s2", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSetup(ctx, "s2", 0); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("DeleteSetup of a missing setup: %v", err)
	}
}
