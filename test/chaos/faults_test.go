package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// faults are the seven faults by number.
var faults = map[int]fault{
	0: {n: 0, name: "no fault (baseline)", inject: baseline, checks: checkBaseline, orphanWait: 30 * time.Second},
	1: {n: 1, name: "kill the etcd leader", inject: killEtcdLeader, checks: checkEtcdLeader, orphanWait: 30 * time.Second},
	2: {n: 2, name: "pause two of three etcd nodes for 20 s", inject: pauseEtcdMajority, checks: checkEtcdMajority, orphanWait: 30 * time.Second},
	3: {n: 3, name: "kill a relay carrying sessions", inject: killRelay, checks: checkKillRelay,
		orphanWait: orphanGrace + 4*reapInterval + 30*time.Second, settle: 45 * time.Second},
	4: {n: 4, name: "kill a signaling instance mid-setup", inject: killSignaling, checks: checkKillSignaling,
		orphanWait: setupDeadline + 4*reapInterval + 30*time.Second},
	5: {n: 5, name: "disconnect a relay from the etcd network for 30 s", inject: partitionRelay, checks: checkPartition,
		orphanWait: 30 * time.Second},
	6: {n: 6, name: "kill an origin with pinned streams", inject: killOrigin, checks: checkKillOrigin,
		orphanWait: orphanGrace + 4*reapInterval + 30*time.Second, settle: 45 * time.Second},
	7: {n: 7, name: "rolling upgrade of every relay by handover (Drain, a second relay process takes over)", inject: rollingUpgrade, checks: checkRolling,
		orphanWait: 30 * time.Second, settle: 90 * time.Second},
}

// stamp sets one of the report's times under the lock the churn reads
// them with.
func (h *harness) stamp(t *time.Time) {
	h.mu.Lock()
	*t = time.Now()
	h.mu.Unlock()
}

func (h *harness) markDead(s string, dead bool) {
	h.mu.Lock()
	h.dead[s] = dead
	h.mu.Unlock()
}

func (h *harness) isDead(s string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dead[s]
}

// busiestRelay is the relay with the most of the clients' sessions.
func (h *harness) busiestRelay(ctx context.Context) (string, int) {
	live := h.liveIDs()
	best, most := relayNames[0], -1
	for _, r := range relayNames {
		ss, err := h.c.relaySessions(ctx, r)
		if err != nil {
			continue
		}
		n := 0
		for _, s := range ss {
			if live[s.ID] {
				n++
			}
		}
		if n > most {
			best, most = r, n
		}
	}
	return best, most
}

// sumLost is the packets lost over every pair of the report.
func sumLost(r *faultReport) (lost, sent int) {
	for _, s := range r.Sessions {
		lost += s.Lost
		sent += s.Sent
	}
	return lost, sent
}

func addTarget(r *faultReport, met bool, name, format string, args ...any) {
	r.Targets = append(r.Targets, target{Target: name, Met: met, Detail: fmt.Sprintf(format, args...)})
}

// checkSetupCodes adds the targets every fault shares: no 500, every 503
// with Retry-After.
func checkSetupCodes(r *faultReport) {
	addTarget(r, r.Setups.Failed["500"] == 0, "no setup answered 500", "%d answered 500", r.Setups.Failed["500"])
	addTarget(r, r.Setups.NoRetryAfter == 0, "every 503 carries Retry-After", "%d of %d without",
		r.Setups.NoRetryAfter, r.Setups.Failed["503"])
}

func checkNoLoss(r *faultReport, name string) {
	lost, sent := sumLost(r)
	addTarget(r, lost == 0, name, "%d of %d packets lost over %d sessions", lost, sent, len(r.Sessions))
}

// killEtcdLeader: docker kill the leader, time the election among the two
// left, start it again after 10 s.
func killEtcdLeader(ctx context.Context, h *harness, r *faultReport) error {
	leader, err := h.c.etcdLeader(ctx, etcdNames)
	if err != nil {
		return err
	}
	others := slices.DeleteFunc(slices.Clone(etcdNames), func(s string) bool { return s == leader })
	r.Injected = "docker kill " + leader + " (the leader)"
	h.stamp(&r.injectedAt)
	h.markDead(leader, true)
	if err := h.c.kill(ctx, leader); err != nil {
		return err
	}
	for time.Since(r.injectedAt) < time.Minute {
		if l, err := h.c.etcdLeader(ctx, others); err == nil {
			r.Recovery["new_leader_seen"] = time.Since(r.injectedAt).Seconds()
			r.Notes = append(r.Notes, "new leader "+l+" (seen by polling etcdctl endpoint status, which adds up to a second)")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(10 * time.Second)
	if err := h.c.start(ctx, leader); err != nil {
		return err
	}
	h.stamp(&r.healedAt)
	h.markDead(leader, false)
	return h.c.waitHealthy(ctx, 2*time.Minute, leader)
}

func checkEtcdLeader(h *harness, r *faultReport) {
	checkNoLoss(r, "no live session loses a packet")
	checkSetupCodes(r)
	el, ok := r.Recovery["new_leader_seen"]
	switch {
	case !ok:
		addTarget(r, false, "setups fail for at most the election time", "no new leader seen")
	case r.Setups.LastFailure == nil:
		addTarget(r, true, "setups fail for at most the election time", "no setup failed (new leader seen after %.2fs)", el)
	default:
		addTarget(r, *r.Setups.LastFailure <= el+1, "setups fail for at most the election time",
			"failures from +%.2fs to +%.2fs, new leader seen at +%.2fs", *r.Setups.FirstFailure, *r.Setups.LastFailure, el)
	}
}

// pauseEtcdMajority: docker pause the leader and one follower for 20 s.
func pauseEtcdMajority(ctx context.Context, h *harness, r *faultReport) error {
	leader, err := h.c.etcdLeader(ctx, etcdNames)
	if err != nil {
		return err
	}
	paused := []string{leader}
	for _, e := range etcdNames {
		if e != leader && len(paused) < 2 {
			paused = append(paused, e)
		}
	}
	r.Injected = fmt.Sprintf("docker pause %v (the leader and a follower) for 20 s", paused)
	h.stamp(&r.injectedAt)
	for _, p := range paused {
		h.markDead(p, true)
		if err := h.c.pause(ctx, p); err != nil {
			return err
		}
	}
	time.Sleep(20*time.Second - time.Since(r.injectedAt))
	for _, p := range paused {
		if err := h.c.unpause(ctx, p); err != nil {
			return err
		}
		h.markDead(p, false)
	}
	h.stamp(&r.healedAt)
	r.Recovery["paused_for"] = r.healedAt.Sub(r.injectedAt).Seconds()
	for time.Since(r.healedAt) < time.Minute {
		if _, err := h.c.etcdLeader(ctx, etcdNames); err == nil {
			r.Recovery["leader_after_unpause"] = time.Since(r.healedAt).Seconds()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func checkEtcdMajority(h *harness, r *faultReport) {
	checkNoLoss(r, "live media unaffected")
	checkSetupCodes(r)
	other := 0
	for code, n := range r.Setups.Failed {
		if code != "503" {
			other += n
		}
	}
	addTarget(r, other == 0, "setups 503 during the loss", "failed by status %v", r.Setups.Failed)
	if rec := r.Setups.RecoveredAfterHeal; rec != nil {
		addTarget(r, *rec <= 5, "full recovery within 5 s of the unpause", "first success %.2fs after the unpause", *rec)
	} else {
		addTarget(r, false, "full recovery within 5 s of the unpause", "no successful setup after the unpause")
	}
}

// killRelay: docker kill the relay process with most of the clients'
// sessions (its pod's network and published ports stay, like a host whose
// relay died); the clients ICE-restart. The relay is started again after
// the orphan check.
func killRelay(ctx context.Context, h *harness, r *faultReport) error {
	relay, n := h.busiestRelay(ctx)
	r.Injected = fmt.Sprintf("docker kill %s (the relay process, container %s; %d of the clients' sessions)", relay, h.c.colour[relay], n)
	h.stamp(&r.injectedAt)
	h.markDead(relay, true)
	if err := h.c.kill(ctx, relay); err != nil {
		return err
	}
	key := "/rtcedge/relays/" + relay
	for time.Since(r.injectedAt) < time.Minute {
		kvs, err := h.c.etcdKeys(ctx, h.aliveEtcd())
		if _, ok := kvs[key]; err == nil && !ok {
			r.Recovery["relay_registration_gone"] = time.Since(r.injectedAt).Seconds()
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil
}

func checkKillRelay(h *harness, r *faultReport) {
	checkSetupCodes(r)
	worst, restarted := int64(0), 0
	var pubWorst, playWorst int64
	for _, s := range r.Sessions {
		if s.MediaAfterRestartMS == nil {
			continue
		}
		restarted++
		worst = max(worst, *s.MediaAfterRestartMS)
		for _, by := range s.RestartedBy {
			if strings.HasPrefix(by, "pub-") {
				pubWorst = max(pubWorst, *s.MediaAfterRestartMS)
			} else {
				playWorst = max(playWorst, *s.MediaAfterRestartMS)
			}
		}
	}
	addTarget(r, restarted > 0 && worst <= 3000, "media back within 3 s of the client's ICE restart",
		"%d sessions restarted, slowest media %d ms after its first restart (publisher restarts: %d ms, player restarts: %d ms)",
		restarted, worst, pubWorst, playWorst)
	newSetups := 0
	for _, s := range r.Sessions {
		newSetups += s.NewSetups
	}
	addTarget(r, newSetups == 0, "the moved sessions need no new setup", "%d new setups", newSetups)
	addTarget(r, r.Orphans.EtcdKeys == 0, "the dead relay's etcd records gone after the orphan grace",
		"%d orphaned keys after %.1fs (grace %s, reaper every %s)", r.Orphans.EtcdKeys, r.Orphans.WaitedS, orphanGrace, reapInterval)
	restore(h, r)
}

// restore starts again what the fault killed (after its orphan check).
func restore(h *harness, r *faultReport) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h.mu.Lock()
	var dead []string
	for s, d := range h.dead {
		if d {
			dead = append(dead, s)
		}
	}
	h.mu.Unlock()
	for _, s := range dead {
		if err := h.c.start(ctx, s); err != nil {
			r.Notes = append(r.Notes, "restarting "+s+": "+err.Error())
			continue
		}
		if err := h.c.waitHealthy(ctx, 2*time.Minute, s); err != nil {
			r.Notes = append(r.Notes, err.Error())
		}
		h.markDead(s, false)
	}
}

// killSignaling: a burst of setups to one signaling instance, killed
// while they are in flight. It is started again after the orphan check.
func killSignaling(ctx context.Context, h *harness, r *faultReport) error {
	victim := signalingNames[0]
	base := h.c.signaling[victim]
	const burst = 12
	var pcs []*webrtc.PeerConnection
	for i := 0; i < burst; i++ {
		dir := webrtc.RTPTransceiverDirectionSendonly
		if i%2 == 1 {
			dir = webrtc.RTPTransceiverDirectionRecvonly
		}
		pc, _, err := offer(ctx, dir)
		if err != nil {
			return err
		}
		defer pc.Close()
		pcs = append(pcs, pc)
	}
	direct := &edge{bases: []string{base}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	for i, pc := range pcs {
		path := fmt.Sprintf("/whip/live/midsetup-%d", i)
		if i%2 == 1 {
			path = "/whep/" + h.pubs[i%len(h.pubs)].stream
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := time.Now()
			_, loc, err := direct.post(ctx, 0, path, pc.LocalDescription().SDP)
			code := "201"
			var se *statusError
			switch {
			case errors.As(err, &se):
				code = strconv.Itoa(se.code)
				h.recordSetup(at, code, se.retryAfter != "")
			case err != nil:
				code = "conn"
				h.recordSetup(at, code, false)
			default:
				h.recordSetup(at, code, false)
				if resp, _, _, err := h.edge.do(ctx, 1, http.MethodDelete, loc, "", nil, nil); err == nil {
					h.report(func(r *faultReport) { r.Setups.Deletes[strconv.Itoa(resp.StatusCode)]++ })
				}
			}
			mu.Lock()
			results[code]++
			mu.Unlock()
		}()
	}
	time.Sleep(60 * time.Millisecond)
	r.Injected = fmt.Sprintf("docker kill %s 60 ms into a burst of %d setups to it", victim, burst)
	h.stamp(&r.injectedAt)
	h.markDead(victim, true)
	err := h.c.kill(ctx, victim)
	wg.Wait()
	r.Notes = append(r.Notes, fmt.Sprintf("the burst's setups: %v", results))
	return err
}

func checkKillSignaling(h *harness, r *faultReport) {
	checkSetupCodes(r)
	addTarget(r, r.Orphans.RelaySessions == 0 && r.Orphans.OriginSessions == 0 && r.Orphans.EtcdKeys == 0,
		"no orphaned origin or relay session after the setup deadline",
		"after %.1fs (setup deadline %s): relay sessions %d, origin sessions %d, etcd keys %d",
		r.Orphans.WaitedS, setupDeadline, r.Orphans.RelaySessions, r.Orphans.OriginSessions, r.Orphans.EtcdKeys)
	checkNoLoss(r, "live sessions unaffected")
	restore(h, r)
}

// partitionRelay: the relay with most sessions loses the control network
// (etcd) for 30 s; its media network stays. Its pod's net container is
// disconnected (the relay process shares its namespace) and connected again
// with the alias signaling dials the relay by.
func partitionRelay(ctx context.Context, h *harness, r *faultReport) error {
	relay, n := h.busiestRelay(ctx)
	net := h.c.controlNetwork()
	r.Injected = fmt.Sprintf("docker network disconnect %s %s for 30 s (%d of the clients' sessions)", net, relayNet(relay), n)
	h.stamp(&r.injectedAt)
	if _, err := h.c.docker(ctx, "network", "disconnect", net, h.c.ids[relayNet(relay)]); err != nil {
		return err
	}
	key := "/rtcedge/relays/" + relay
	gone := false
	for time.Since(r.injectedAt) < 30*time.Second {
		if !gone {
			kvs, err := h.c.etcdKeys(ctx, h.aliveEtcd())
			if _, ok := kvs[key]; err == nil && !ok {
				r.Recovery["relay_registration_gone"] = time.Since(r.injectedAt).Seconds()
				gone = true
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := h.c.docker(ctx, "network", "connect", "--alias", relay, "--alias", relayNet(relay), net, h.c.ids[relayNet(relay)]); err != nil {
		return err
	}
	h.stamp(&r.healedAt)
	for time.Since(r.healedAt) < time.Minute {
		kvs, err := h.c.etcdKeys(ctx, h.aliveEtcd())
		if _, ok := kvs[key]; err == nil && ok {
			r.Recovery["relay_registered_again_after_reconnect"] = time.Since(r.healedAt).Seconds()
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil
}

func checkPartition(h *harness, r *faultReport) {
	checkNoLoss(r, "live media unaffected while the relay's registry is cut")
	checkSetupCodes(r)
	restarts := 0
	for _, s := range r.Sessions {
		restarts += s.ICERestarts + s.NewSetups
	}
	addTarget(r, restarts == 0, "no client needs an ICE restart or a new setup", "%d restarts and new setups", restarts)
	_, ok := r.Recovery["relay_registered_again_after_reconnect"]
	addTarget(r, ok, "the relay registers again after the partition", "%v", r.Recovery)
}

// killOrigin: docker kill the origin with most of the clients' streams
// pinned; their clients recover (ICE restarts, then new setups) onto the
// other origin. It is started again after the orphan check.
func killOrigin(ctx context.Context, h *harness, r *faultReport) error {
	pins, err := h.c.streamOrigins(ctx)
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, p := range h.pubs {
		for stream, origin := range pins {
			// The status API names streams normalised
			// (__defaultVhost__/live/x).
			if stream == p.stream || strings.HasSuffix(stream, "/"+p.stream) {
				count[origin]++
			}
		}
	}
	victim := originNames[0]
	if count[originNames[1]] > count[originNames[0]] {
		victim = originNames[1]
	}
	r.Injected = fmt.Sprintf("docker kill %s (%d of the clients' %d streams pinned to it)", victim, count[victim], len(h.pubs))
	h.stamp(&r.injectedAt)
	h.markDead(victim, true)
	return h.c.kill(ctx, victim)
}

func checkKillOrigin(h *harness, r *faultReport) {
	checkSetupCodes(r)
	var worst time.Duration
	affected := 0
	for _, s := range r.Sessions {
		if s.ICERestarts+s.NewSetups > 0 {
			affected++
			worst = max(worst, time.Duration(s.MaxGapMS)*time.Millisecond)
		}
	}
	addTarget(r, true, "the affected sessions come back on the other origin (new setups)",
		"%d sessions affected; longest media gap %s", affected, worst)
	addTarget(r, r.Orphans.RelaySessions+r.Orphans.EtcdKeys+r.Orphans.OriginSessions == 0, "nothing orphaned",
		"relay sessions %d, etcd keys %d, origin sessions %d after %.1fs", r.Orphans.RelaySessions, r.Orphans.EtcdKeys,
		r.Orphans.OriginSessions, r.Orphans.WaitedS)
	restore(h, r)
}

// rollingUpgrade: each relay in turn is upgraded by handover inside its
// pod: the running relay process is drained (no new sessions; its /readyz
// turns 503), the pod's other relay service is started beside it (relay-N-b
// for relay-N, and back: same relay id, same ports, RTCEDGE_TAKEOVER), and
// once that one is healthy (its /readyz: sessions reloaded from the
// registry, registered) the old one is stopped (docker stop -t 10: SIGTERM,
// SIGKILL after 10 s). The clients' packets keep going to the pod's
// published ports, which its net container holds throughout.
func rollingUpgrade(ctx context.Context, h *harness, r *faultReport) error {
	r.Injected = "per relay: POST /v1/drain, start the pod's other relay (takeover), wait until it is healthy, docker stop -t 10 the old one"
	h.stamp(&r.injectedAt)
	for _, relay := range relayNames {
		old, oldID := h.c.colour[relay], h.c.ids[relay]
		next := otherColour(relay, old)
		if err := h.c.drainRelay(ctx, relay); err != nil {
			return err
		}
		t0 := time.Now()
		r.Recovery[relay+"_new_started_at"] = t0.Sub(r.injectedAt).Seconds()
		id, err := h.c.startColour(ctx, next)
		if err != nil {
			return fmt.Errorf("starting %s: %w", next, err)
		}
		r.Recovery[relay+"_compose_up"] = time.Since(t0).Seconds()
		// The old process answers /readyz 503 (draining), so a 200 on the
		// pod's port is the new one's. Docker's health check says the same
		// at its own interval (2 s).
		ready := false
		for deadline := time.Now().Add(2 * time.Minute); ; {
			if !ready && h.c.readyz(ctx, relay) == http.StatusOK {
				ready = true
				r.Recovery[relay+"_start_to_ready"] = time.Since(t0).Seconds()
			}
			st := h.c.containerHealth(ctx, id)
			if st == "running healthy" {
				r.Recovery[relay+"_start_to_healthy"] = time.Since(t0).Seconds()
				break
			}
			if !strings.HasPrefix(st, "running") || time.Now().After(deadline) || ctx.Err() != nil {
				logs, _ := h.c.docker(ctx, "logs", "--tail", "20", id)
				return fmt.Errorf("%s (%s) not healthy: %s\n%s", next, relay, st, logs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t1 := time.Now()
		if _, err := h.c.docker(ctx, "stop", "-t", "10", oldID); err != nil {
			return err
		}
		r.Recovery[relay+"_stop"] = time.Since(t1).Seconds()
		r.Recovery[relay+"_old_stopped_at"] = time.Since(r.injectedAt).Seconds()
		h.c.setColour(relay, next, id)
		exit, _ := h.c.docker(ctx, "inspect", "-f", "{{.State.ExitCode}}", oldID)
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %s -> %s (the old one exited with %s)", relay, old, next, strings.TrimSpace(exit)))
		time.Sleep(3 * time.Second)
	}
	h.stamp(&r.healedAt)
	return nil
}

func checkRolling(h *harness, r *faultReport) {
	checkSetupCodes(r)
	newSetups, restarts := 0, 0
	var worst int64
	for _, s := range r.Sessions {
		newSetups += s.NewSetups
		restarts += s.ICERestarts
		worst = max(worst, s.MaxGapMS)
	}
	addTarget(r, newSetups == 0, "every session survives without a new setup", "%d new setups, %d ICE restarts", newSetups, restarts)
	addTarget(r, worst <= 1000, "media gap at most 1 s per session", "longest gap %d ms", worst)
}

// baseline measures the load with no fault for 15 s: the media gaps the
// clients and Docker's port forwarding cause by themselves on this machine.
func baseline(ctx context.Context, h *harness, r *faultReport) error {
	r.Injected = "nothing, 15 s"
	h.stamp(&r.injectedAt)
	time.Sleep(15 * time.Second)
	return nil
}

func checkBaseline(h *harness, r *faultReport) {
	checkNoLoss(r, "no packet lost without a fault")
	checkSetupCodes(r)
	addTarget(r, r.Setups.Succeeded == r.Setups.Attempted, "every setup succeeds", "%d of %d", r.Setups.Succeeded, r.Setups.Attempted)
}
