package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// setupStats counts WHIP/WHEP setups and DELETEs.
type setupStats struct {
	Attempted int            `json:"attempted"`
	Succeeded int            `json:"succeeded"`
	Failed    map[string]int `json:"failed_by_status"` // "503", "500", "conn" (no connection), "timeout"
	// NoRetryAfter counts 503 answers without Retry-After.
	NoRetryAfter int            `json:"503_without_retry_after"`
	Deletes      map[string]int `json:"deletes_by_status"`
	// FirstFailure and LastFailure are seconds after the injection;
	// RecoveredAfter is the first success after the last failure, seconds
	// after the injection (nil: no failure).
	FirstFailure   *float64 `json:"first_failure_s,omitempty"`
	LastFailure    *float64 `json:"last_failure_s,omitempty"`
	RecoveredAfter *float64 `json:"first_success_after_last_failure_s,omitempty"`
	// RecoveredAfterHeal is the first success after the fault was healed
	// (unpause, reconnect, restart), seconds after the heal.
	RecoveredAfterHeal *float64 `json:"first_success_after_heal_s,omitempty"`
	lastFailureAt      time.Time
}

// sessionReport is one publisher->player pair over a fault's window.
type sessionReport struct {
	Stream string `json:"stream"`
	// Sent is the publisher's packets in the window, Lost those that never
	// reached the player.
	Sent int `json:"sent"`
	Lost int `json:"lost"`
	// MaxGapMS is the longest time without a packet at the player.
	MaxGapMS int64 `json:"max_gap_ms"`
	// MaxGapEndS is when the longest gap ended (the arrival after it),
	// seconds after the injection: to place it among the fault's steps.
	MaxGapEndS  *float64 `json:"max_gap_end_s,omitempty"`
	ICERestarts int      `json:"ice_restarts"`
	NewSetups   int      `json:"new_setups"`
	// MediaAfterRestartMS: from the first ICE restart PATCH of either side
	// to the first packet at the player sent after it.
	MediaAfterRestartMS *int64 `json:"media_after_restart_ms,omitempty"`
	// RestartedBy names the clients of the pair that restarted ICE.
	RestartedBy []string `json:"restarted_by,omitempty"`
	Events      []string `json:"events,omitempty"`
}

// orphans are what is left that no client holds.
type orphans struct {
	RelaySessions  int      `json:"relay_sessions"`
	EtcdKeys       int      `json:"etcd_keys"`
	OriginSessions int      `json:"origin_sessions"`
	WaitedS        float64  `json:"waited_s"`
	Detail         []string `json:"detail,omitempty"`
}

// invariants are the sampled checks.
type invariants struct {
	Samples int `json:"samples"`
	// UfragOnTwoRelays: a STUN username served by two relays at once.
	UfragOnTwoRelays int `json:"ufrag_on_two_relays"`
	// SessionOnTwoRelays: a session id counted by two relays at once.
	SessionOnTwoRelays int `json:"session_on_two_relays"`
	// CreatedWithoutRelaySession: a 201 whose session the relay named in
	// the answer did not list right after.
	CreatedWithoutRelaySession int `json:"created_without_relay_session"`
	// Unverified 201s: the answer's relay did not answer the check.
	Unverified int      `json:"created_unverified"`
	Detail     []string `json:"detail,omitempty"`
}

// target is one of the targets with what was measured.
type target struct {
	Target string `json:"target"`
	Met    bool   `json:"met"`
	Detail string `json:"detail"`
}

// faultReport is one fault's measurements.
type faultReport struct {
	Fault      int                `json:"fault"`
	Name       string             `json:"name"`
	Injected   string             `json:"injected"`
	Start      time.Time          `json:"start"`
	End        time.Time          `json:"end"`
	Setups     setupStats         `json:"setups"`
	Sessions   []sessionReport    `json:"sessions"`
	Recovery   map[string]float64 `json:"recovery_s"`
	Orphans    orphans            `json:"orphans"`
	Invariants invariants         `json:"invariants"`
	Targets    []target           `json:"targets"`
	Notes      []string           `json:"notes,omitempty"`

	injectedAt, healedAt time.Time
}

// harness drives the cluster: clients, churn, observer, reports.
type harness struct {
	t       *testing.T
	c       *cluster
	edge    *edge
	pubs    []*client
	players []*client

	mu       sync.Mutex
	cur      *faultReport
	inflight map[string]bool // churn sessions set up and not yet deleted
	churnOn  bool
	dead     map[string]bool // services the current fault took down
}

func (h *harness) report(f func(r *faultReport)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur != nil {
		f(h.cur)
	}
}

func secondsSince(t0, t time.Time) *float64 {
	if t0.IsZero() {
		return nil
	}
	s := t.Sub(t0).Seconds()
	return &s
}

// recordSetup files one setup's outcome under the current fault.
func (h *harness) recordSetup(at time.Time, code string, retryAfter bool) {
	h.report(func(r *faultReport) {
		r.Setups.Attempted++
		if code == "201" {
			r.Setups.Succeeded++
			if !r.Setups.lastFailureAt.IsZero() && r.Setups.RecoveredAfter == nil && !r.injectedAt.IsZero() {
				r.Setups.RecoveredAfter = secondsSince(r.injectedAt, at)
			}
			if !r.healedAt.IsZero() && at.After(r.healedAt) && r.Setups.RecoveredAfterHeal == nil {
				r.Setups.RecoveredAfterHeal = secondsSince(r.healedAt, at)
			}
			return
		}
		r.Setups.Failed[code]++
		if code == "503" && !retryAfter {
			r.Setups.NoRetryAfter++
		}
		if !r.injectedAt.IsZero() && at.After(r.injectedAt) {
			s := at.Sub(r.injectedAt).Seconds()
			if r.Setups.FirstFailure == nil {
				r.Setups.FirstFailure = &s
			}
			r.Setups.LastFailure = &s
			r.Setups.lastFailureAt = at
			r.Setups.RecoveredAfter = nil
		}
	})
}

// churn sets up a WHIP or WHEP session every interval through alternate
// signaling instances, checks that a 201 has its relay session, and
// DELETEs it a second later.
func (h *harness) churn(ctx context.Context, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	sem := make(chan struct{}, 4)
	var inner sync.WaitGroup
	defer inner.Wait()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		h.mu.Lock()
		on := h.churnOn
		h.mu.Unlock()
		if !on {
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // four setups in flight: the rate drops, the harness does not pile up
		}
		inner.Add(1)
		go func() {
			defer inner.Done()
			defer func() { <-sem }()
			h.churnOne(ctx, i)
		}()
	}
}

func (h *harness) churnOne(ctx context.Context, i int) {
	dir, path := webrtc.RTPTransceiverDirectionSendonly, fmt.Sprintf("/whip/live/churn-%d", i%50)
	if i%2 == 1 {
		dir, path = webrtc.RTPTransceiverDirectionRecvonly, "/whep/"+h.pubs[i%len(h.pubs)].stream
	}
	pc, _, err := offer(ctx, dir)
	if err != nil {
		h.t.Logf("churn offer: %v", err)
		return
	}
	defer pc.Close()
	at := time.Now()
	answer, loc, err := h.edge.post(ctx, i%2, path, pc.LocalDescription().SDP)
	var se *statusError
	switch {
	case errors.As(err, &se):
		h.recordSetup(at, strconv.Itoa(se.code), se.retryAfter != "")
		return
	case errors.Is(err, context.DeadlineExceeded):
		h.recordSetup(at, "timeout", false)
		return
	case err != nil:
		h.recordSetup(at, "conn", false)
		return
	}
	id := sessionID(loc)
	h.mu.Lock()
	h.inflight[id] = true
	h.mu.Unlock()
	h.recordSetup(at, "201", false)
	h.checkCreated(ctx, id, answer)
	time.Sleep(time.Second)
	// A DELETE refused with 503 is sent again after its Retry-After, as a
	// client that wants its session gone does (for up to a minute).
	code := "conn"
	for attempt := 0; attempt < 30; attempt++ {
		resp, _, _, err := h.edge.do(ctx, i%2, http.MethodDelete, loc, "", nil, nil)
		if err != nil {
			break
		}
		if attempt == 0 {
			code = strconv.Itoa(resp.StatusCode)
		} else {
			code += "," + strconv.Itoa(resp.StatusCode)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			break
		}
		time.Sleep(2 * time.Second)
	}
	h.mu.Lock()
	delete(h.inflight, id)
	h.mu.Unlock()
	h.report(func(r *faultReport) { r.Setups.Deletes[code]++ })
}

// checkCreated checks that the relay the answer names lists the session.
func (h *harness) checkCreated(ctx context.Context, id, answer string) {
	relay := ""
	for _, l := range strings.Split(answer, "\r\n") {
		if !strings.HasPrefix(l, "a=candidate:") {
			continue
		}
		f := strings.Fields(l)
		if len(f) > 5 {
			for r, a := range h.c.relayUDP {
				if a == f[4]+":"+f[5] {
					relay = r
				}
			}
		}
		if relay != "" {
			break
		}
	}
	if relay == "" {
		h.report(func(r *faultReport) {
			r.Invariants.Unverified++
			r.Invariants.Detail = appendCapped(r.Invariants.Detail, "201 "+id+": no relay candidate in the answer")
		})
		return
	}
	ss, err := h.c.relaySessions(ctx, relay)
	if err != nil {
		h.report(func(r *faultReport) { r.Invariants.Unverified++ })
		return
	}
	if !slices.ContainsFunc(ss, func(s relaySession) bool { return s.ID == id }) {
		h.report(func(r *faultReport) {
			r.Invariants.CreatedWithoutRelaySession++
			r.Invariants.Detail = appendCapped(r.Invariants.Detail, "201 "+id+" not on "+relay)
		})
	}
}

func appendCapped(s []string, v string) []string {
	if len(s) >= 20 {
		return s
	}
	return append(s, v)
}

// observe samples every relay's sessions each second: no username and no
// session id on two relays at once.
func (h *harness) observe(ctx context.Context, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Second):
		}
		users := map[string]string{}
		ids := map[string]string{}
		var dup []string
		var dupIDs []string
		for _, r := range relayNames {
			ss, err := h.c.relaySessions(ctx, r)
			if err != nil {
				continue
			}
			for _, s := range ss {
				if o, ok := users[s.username()]; ok && o != r {
					dup = append(dup, fmt.Sprintf("username %s on %s and %s", s.username(), o, r))
				}
				users[s.username()] = r
				if o, ok := ids[s.ID]; ok && o != r {
					dupIDs = append(dupIDs, fmt.Sprintf("session %s on %s and %s", s.ID, o, r))
				}
				ids[s.ID] = r
			}
		}
		h.report(func(rep *faultReport) {
			rep.Invariants.Samples++
			rep.Invariants.UfragOnTwoRelays += len(dup)
			rep.Invariants.SessionOnTwoRelays += len(dupIDs)
			for _, d := range append(dup, dupIDs...) {
				rep.Invariants.Detail = appendCapped(rep.Invariants.Detail, time.Now().UTC().Format("15:04:05.000")+" "+d)
			}
		})
	}
}

// pairs are the publisher->player pairs (one player per publisher's stream).
func (h *harness) pairs() [][2]*client {
	var out [][2]*client
	for _, pl := range h.players {
		for _, p := range h.pubs {
			if p.stream == pl.stream {
				out = append(out, [2]*client{p, pl})
			}
		}
	}
	return out
}

// mediaFlowing reports whether every player had a packet in the last
// second.
func (h *harness) mediaFlowing() bool {
	for _, pl := range h.players {
		if time.Since(pl.lastArrival()) > time.Second {
			return false
		}
	}
	return true
}

// waitMedia waits until every player receives media again.
func (h *harness) waitMedia(d time.Duration) error {
	deadline := time.Now().Add(d)
	for !h.mediaFlowing() {
		if time.Now().After(deadline) {
			var late []string
			for _, pl := range h.players {
				late = append(late, fmt.Sprintf("%s last packet %s ago", pl.name, time.Since(pl.lastArrival()).Round(time.Millisecond)))
			}
			return fmt.Errorf("media not flowing after %s: %v", d, late)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// fault is one fault of the issue: inject runs it (and heals it), checks
// adds its targets once the window is measured.
type fault struct {
	n      int
	name   string
	inject func(ctx context.Context, h *harness, r *faultReport) error
	checks func(h *harness, r *faultReport)
	// orphanWait bounds the wait for orphans to reach zero.
	orphanWait time.Duration
	// settle is the shortest window after the injection.
	settle time.Duration
}

// runFault measures one fault: the load's state at the start, the
// injection and heal, the recovery of every client, the window's losses
// and gaps, then the orphans with the churn paused.
func (h *harness) runFault(ctx context.Context, f fault, outDir string) *faultReport {
	t := h.t
	r := &faultReport{Fault: f.n, Name: f.name, Start: time.Now().UTC(), Recovery: map[string]float64{},
		Setups: setupStats{Failed: map[string]int{}, Deletes: map[string]int{}}}
	seqFrom := map[*client]uint32{}
	for _, p := range h.pubs {
		seqFrom[p] = p.next.Load()
	}
	h.mu.Lock()
	h.cur = r
	h.churnOn = true
	h.dead = map[string]bool{}
	h.mu.Unlock()
	time.Sleep(3 * time.Second) // a baseline of setups before the fault
	if err := f.inject(ctx, h, r); err != nil {
		r.Notes = append(r.Notes, "injection failed: "+err.Error())
		t.Errorf("fault %d (%s): %v", f.n, f.name, err)
	}
	if err := h.waitMedia(90 * time.Second); err != nil {
		r.Notes = append(r.Notes, err.Error())
		t.Errorf("fault %d (%s): %v", f.n, f.name, err)
	}
	time.Sleep(5 * time.Second) // setups after the recovery
	// Some consequences come late (an origin's ICE agent gives up on a
	// path 30 s after it went quiet): the window stays open until settle
	// has passed since the injection.
	if rest := time.Until(r.injectedAt.Add(f.settle)); !r.injectedAt.IsZero() && rest > 0 {
		time.Sleep(rest)
	}
	r.End = time.Now().UTC()
	windowEnd := time.Now()
	time.Sleep(2 * time.Second) // packets in flight at the window's end
	for _, pr := range h.pairs() {
		p, pl := pr[0], pr[1]
		to := p.next.Load() - uint32(2*time.Second/packetEvery)
		from := seqFrom[p]
		missing, times := pl.arrivals(from, to)
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		var gap time.Duration
		var gapEnd time.Time
		prev := r.Start
		for _, at := range times {
			if d := at.Sub(prev); d > gap {
				gap, gapEnd = d, at
			}
			prev = at
		}
		s := sessionReport{Stream: p.stream, Sent: int(to - from), Lost: missing, MaxGapMS: gap.Milliseconds()}
		if !gapEnd.IsZero() && !r.injectedAt.IsZero() {
			s.MaxGapEndS = secondsSince(r.injectedAt, gapEnd)
		}
		var firstRestart time.Time
		for _, c := range pr {
			for _, e := range c.eventsSince(r.Start) {
				if !e.At.Before(windowEnd) {
					continue
				}
				switch e.Kind {
				case "restart":
					s.ICERestarts++
					if !slices.Contains(s.RestartedBy, c.name) {
						s.RestartedBy = append(s.RestartedBy, c.name)
					}
					if firstRestart.IsZero() || e.At.Before(firstRestart) {
						firstRestart = e.At
					}
				case "resetup":
					s.NewSetups++
				}
				s.Events = append(s.Events, fmt.Sprintf("+%.2fs %s %s %s", e.At.Sub(r.Start).Seconds(), c.name, e.Kind, e.Detail))
			}
		}
		if !firstRestart.IsZero() {
			// The first packet the publisher sent after the restart began
			// that reached the player.
			if back := pl.firstArrivalAfter(firstRestart, 0); !back.IsZero() {
				ms := back.Sub(firstRestart).Milliseconds()
				s.MediaAfterRestartMS = &ms
			}
		}
		r.Sessions = append(r.Sessions, s)
	}
	h.mu.Lock()
	h.churnOn = false
	h.mu.Unlock()
	r.Orphans = h.waitOrphans(ctx, f.orphanWait)
	if f.checks != nil {
		f.checks(h, r)
	}
	h.mu.Lock()
	h.cur = nil
	h.mu.Unlock()
	h.print(r)
	if b, err := json.MarshalIndent(r, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(outDir, fmt.Sprintf("fault-%d.json", f.n)), b, 0o644)
	}
	for _, tg := range r.Targets {
		if !tg.Met {
			t.Logf("fault %d target missed: %s: %s", f.n, tg.Target, tg.Detail)
		}
	}
	return r
}

// liveIDs are the session ids the clients and the churn hold.
func (h *harness) liveIDs() map[string]bool {
	ids := map[string]bool{}
	for _, c := range slices.Concat(h.pubs, h.players) {
		ids[c.id()] = true
	}
	h.mu.Lock()
	maps.Copy(ids, h.inflight)
	h.mu.Unlock()
	return ids
}

// countOrphans counts relay sessions, session-scoped etcd keys and origin
// sessions that no client holds.
func (h *harness) countOrphans(ctx context.Context) (orphans, error) {
	var o orphans
	live := h.liveIDs()
	for _, r := range relayNames {
		if h.isDead(r) {
			continue
		}
		ss, err := h.c.relaySessions(ctx, r)
		if err != nil {
			return o, fmt.Errorf("%s: %w", r, err)
		}
		for _, s := range ss {
			if !live[s.ID] {
				o.RelaySessions++
				o.Detail = appendCapped(o.Detail, r+" session "+s.ID+" "+s.Stream)
			}
		}
	}
	kvs, err := h.c.etcdKeys(ctx, h.aliveEtcd())
	if err != nil {
		return o, err
	}
	for k, v := range kvs {
		rest := strings.TrimPrefix(k, "/rtcedge/")
		kind, tail, _ := strings.Cut(rest, "/")
		id := ""
		switch kind {
		case "sessions", "setups":
			id = tail
		case "relaysessions", "streamsessions", "streamsetups":
			id = tail[strings.LastIndexByte(tail, '/')+1:]
		case "ufrags":
			id = v
		default:
			continue
		}
		if !live[id] {
			o.EtcdKeys++
			o.Detail = appendCapped(o.Detail, "etcd "+k)
		}
	}
	want := len(h.pubs) + len(h.players)
	got := 0
	for _, org := range originNames {
		if h.isDead(org) {
			continue
		}
		m, err := h.c.originSessions(ctx, org)
		if err != nil {
			return o, fmt.Errorf("%s: %w", org, err)
		}
		for stream, n := range m {
			got += n
			if !strings.HasPrefix(stream, "live/chaos-") {
				o.Detail = appendCapped(o.Detail, fmt.Sprintf("%s: %d sessions of %s", org, n, stream))
			}
		}
	}
	o.OriginSessions = max(0, got-want)
	return o, nil
}

func (h *harness) aliveEtcd() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range etcdNames {
		if !h.dead[e] {
			return e
		}
	}
	return etcdNames[0]
}

// waitOrphans waits, with the churn paused, until nothing is orphaned or d
// passes, and returns the last count.
func (h *harness) waitOrphans(ctx context.Context, d time.Duration) orphans {
	start := time.Now()
	// In-flight churn setups finish within their DELETE.
	for i := 0; i < 100; i++ {
		h.mu.Lock()
		n := len(h.inflight)
		h.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var o orphans
	for {
		var err error
		o, err = h.countOrphans(ctx)
		if err == nil && o.RelaySessions+o.EtcdKeys+o.OriginSessions == 0 {
			break
		}
		if err != nil {
			o.Detail = appendCapped(o.Detail, "counting: "+err.Error())
		}
		if time.Since(start) > d {
			break
		}
		time.Sleep(time.Second)
	}
	o.WaitedS = time.Since(start).Seconds()
	return o
}

func (h *harness) print(r *faultReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n=== fault %d: %s (%s)\n", r.Fault, r.Name, r.Injected)
	codes := slices.Sorted(maps.Keys(r.Setups.Failed))
	var failed []string
	for _, c := range codes {
		failed = append(failed, fmt.Sprintf("%s x%d", c, r.Setups.Failed[c]))
	}
	fmt.Fprintf(&b, "setups: %d attempted, %d succeeded, failed %v; deletes %v; 503 without Retry-After %d\n",
		r.Setups.Attempted, r.Setups.Succeeded, failed, r.Setups.Deletes, r.Setups.NoRetryAfter)
	if r.Setups.FirstFailure != nil {
		fmt.Fprintf(&b, "  failures from +%.2fs to +%.2fs after the injection", *r.Setups.FirstFailure, *r.Setups.LastFailure)
		if r.Setups.RecoveredAfter != nil {
			fmt.Fprintf(&b, "; next success +%.2fs", *r.Setups.RecoveredAfter)
		}
		b.WriteString("\n")
	}
	if r.Setups.RecoveredAfterHeal != nil {
		fmt.Fprintf(&b, "  first success %.2fs after the heal\n", *r.Setups.RecoveredAfterHeal)
	}
	for _, s := range r.Sessions {
		fmt.Fprintf(&b, "session %-16s sent %5d lost %4d max gap %5d ms, ICE restarts %d, new setups %d",
			s.Stream, s.Sent, s.Lost, s.MaxGapMS, s.ICERestarts, s.NewSetups)
		if s.MediaAfterRestartMS != nil {
			fmt.Fprintf(&b, ", media %d ms after the first restart (by %v)", *s.MediaAfterRestartMS, s.RestartedBy)
		}
		b.WriteString("\n")
		for _, e := range s.Events {
			fmt.Fprintf(&b, "    %s\n", e)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Recovery)) {
		fmt.Fprintf(&b, "recovery %s: %.2fs\n", k, r.Recovery[k])
	}
	fmt.Fprintf(&b, "orphans after %.1fs: relay sessions %d, etcd keys %d, origin sessions %d %v\n",
		r.Orphans.WaitedS, r.Orphans.RelaySessions, r.Orphans.EtcdKeys, r.Orphans.OriginSessions, r.Orphans.Detail)
	fmt.Fprintf(&b, "invariants (%d samples): ufrag on two relays %d, session on two relays %d, 201 without relay session %d (unverified %d) %v\n",
		r.Invariants.Samples, r.Invariants.UfragOnTwoRelays, r.Invariants.SessionOnTwoRelays,
		r.Invariants.CreatedWithoutRelaySession, r.Invariants.Unverified, r.Invariants.Detail)
	for _, tg := range r.Targets {
		mark := "MET"
		if !tg.Met {
			mark = "MISSED"
		}
		fmt.Fprintf(&b, "target %s: %s (%s)\n", mark, tg.Target, tg.Detail)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	h.t.Log(b.String())
}

// TestChaos is the fault harness. RTCEDGE_CHAOS=full runs a baseline (0)
// and faults 1, 3, 4, 2, 5, 6, 7; RTCEDGE_CHAOS=short runs 1, 3 and 4; RTCEDGE_CHAOS_FAULTS
// (e.g. "3,7") picks others. Reports go to RTCEDGE_CHAOS_OUT (default
// the test's temp dir) as fault-N.json and summary.json.
func TestChaos(t *testing.T) {
	mode := os.Getenv("RTCEDGE_CHAOS")
	if mode == "" {
		t.Skip("set RTCEDGE_CHAOS=short or full (make chaos-short, make chaos) to run the fault harness; it needs Docker and `make images`")
	}
	order := []int{0, 1, 3, 4, 2, 5, 6, 7}
	if mode == "short" {
		order = []int{1, 3, 4}
	}
	if v := os.Getenv("RTCEDGE_CHAOS_FAULTS"); v != "" {
		order = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 || n > 7 {
				t.Fatalf("RTCEDGE_CHAOS_FAULTS %q: want numbers 0 (baseline) to 7", v)
			}
			order = append(order, n)
		}
	}
	outDir := os.Getenv("RTCEDGE_CHAOS_OUT")
	if outDir == "" {
		outDir = t.TempDir()
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	began := time.Now()
	c := upCluster(t, ctx)
	all := slices.Concat(etcdNames, signalingNames, relayNets(), relayNames, originNames)
	if err := c.waitHealthy(ctx, 4*time.Minute, all...); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, c: c, edge: &edge{bases: []string{c.signaling["signaling-1"], c.signaling["signaling-2"]}},
		inflight: map[string]bool{}}
	// The origins are registered by the prober once it has probed them.
	waitUntil(t, 2*time.Minute, "both origins registered", func() bool {
		o, err := h.registeredOrigins(ctx)
		return err == nil && len(o) == 2
	})
	const n = 4
	for i := range n {
		p := &client{name: fmt.Sprintf("pub-%d", i), stream: fmt.Sprintf("live/chaos-%d", i), pub: true, edge: h.edge, home: i % 2}
		if err := p.start(ctx); err != nil {
			t.Fatal(err)
		}
		h.pubs = append(h.pubs, p)
	}
	for i := range n {
		pl := &client{name: fmt.Sprintf("play-%d", i), stream: fmt.Sprintf("live/chaos-%d", i), edge: h.edge, home: (i + 1) % 2}
		if err := pl.start(ctx); err != nil {
			t.Fatal(err)
		}
		h.players = append(h.players, pl)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, cl := range slices.Concat(h.players, h.pubs) {
			cl.close(cctx)
		}
	}()
	if err := h.waitMedia(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("load running after %s: %d publishers, %d players, setups every 500 ms", time.Since(began).Round(time.Second), n, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go h.churn(ctx, stop, &wg)
	go h.observe(ctx, stop, &wg)
	defer func() { close(stop); wg.Wait() }()

	var reports []*faultReport
	for _, n := range order {
		f := faults[n]
		t.Logf("fault %d: %s, at %s", n, f.name, time.Since(began).Round(time.Second))
		r := h.runFault(ctx, f, outDir)
		reports = append(reports, r)
		if ctx.Err() != nil {
			break
		}
		if err := c.waitHealthy(ctx, 2*time.Minute, all...); err != nil {
			t.Fatalf("after fault %d: %v", n, err)
		}
	}
	summary := map[string]any{"mode": mode, "faults": order, "duration_s": time.Since(began).Seconds(), "reports": reports}
	if b, err := json.MarshalIndent(summary, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(outDir, "summary.json"), b, 0o644)
	}
	for _, r := range reports {
		if r.Invariants.UfragOnTwoRelays+r.Invariants.SessionOnTwoRelays+r.Invariants.CreatedWithoutRelaySession > 0 {
			t.Errorf("fault %d: invariants broken: %+v", r.Fault, r.Invariants)
		}
		if r.Orphans.RelaySessions+r.Orphans.EtcdKeys+r.Orphans.OriginSessions > 0 {
			t.Errorf("fault %d: orphans left: %+v", r.Fault, r.Orphans)
		}
		if r.Setups.Failed["500"] > 0 {
			t.Errorf("fault %d: %d setups answered 500", r.Fault, r.Setups.Failed["500"])
		}
	}
	t.Logf("chaos %s: %d faults in %s; reports in %s", mode, len(reports), time.Since(began).Round(time.Second), outDir)
}

// registeredOrigins lists the registered origins through signaling.
func (h *harness) registeredOrigins(ctx context.Context) ([]string, error) {
	resp, body, _, err := h.edge.do(ctx, 0, http.MethodGet, "/v1/origins", "", nil,
		map[string]string{"Authorization": "Bearer " + registrationToken})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/origins: %s", resp.Status)
	}
	var list struct {
		Origins []struct {
			ID string `json:"id"`
		} `json:"origins"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range list.Origins {
		ids = append(ids, o.ID)
	}
	return ids, nil
}

// waitUntil polls cond every 200 ms until it holds or fails the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
