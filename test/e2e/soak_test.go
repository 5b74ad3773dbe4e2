package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// Soak bounds: after warm-up, the process may not grow by more than this.
const (
	soakGoroutineSlack = 50
	soakRSSSlackMiB    = 64
)

// rssMiB reads this process's resident set size.
func rssMiB(t *testing.T) float64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// heapMiB is the live heap after a collection.
func heapMiB() float64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// TestSoak churns sessions (WHIP publish with media, WHEP play, DELETE)
// through the whole edge for RTCEDGE_SOAK (a duration; `make soak` sets
// 10m) and fails if goroutines or RSS grow past the bounds above after a
// warm-up, or if any session outlives its DELETE.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("RTCEDGE_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set RTCEDGE_SOAK=10m (make soak does) to soak")
	}
	s := startStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), d+2*time.Minute)
	defer cancel()

	warmup := min(d/5, 2*time.Minute)
	start := time.Now()
	var baseG int
	var baseRSS, baseHeap float64
	cycles := 0
	for time.Since(start) < d {
		stream := fmt.Sprintf("soak/s%d", cycles%4)
		// A subtest per cycle: its cleanups release the clients at once.
		ok := t.Run(fmt.Sprintf("cycle-%d", cycles), func(t *testing.T) {
			pub := publish(t, ctx, s.sigA.url+"/whip/"+stream)
			pl := play(t, ctx, s.sigB.url+"/whep/"+stream)
			waitFor(t, 20*time.Second, "media at the player", func() bool {
				m, _ := pl.received()
				return m >= 5
			})
			for _, loc := range []string{pl.res.Location, pub.res.Location} {
				if code, err := deleteResource(ctx, loc); err != nil || code != http.StatusOK {
					t.Fatalf("DELETE %s: %d %v", loc, code, err)
				}
			}
		})
		if !ok {
			t.FailNow()
		}
		cycles++
		if baseG == 0 && time.Since(start) > warmup {
			debug.FreeOSMemory()
			baseG, baseRSS, baseHeap = runtime.NumGoroutine(), rssMiB(t), heapMiB()
			t.Logf("after warm-up (%d cycles): %d goroutines, %.0f MiB RSS, %.0f MiB heap", cycles, baseG, baseRSS, baseHeap)
		}
	}
	waitFor(t, 30*time.Second, "every session gone", func() bool {
		recs, err := s.reg.ListSessions(ctx)
		st1, _ := s.relay1.admin.GetStatus(ctx, &relayv1.GetStatusRequest{})
		st2, _ := s.relay2.admin.GetStatus(ctx, &relayv1.GetStatusRequest{})
		return err == nil && len(recs) == 0 && st1.GetSessionCount() == 0 && st2.GetSessionCount() == 0
	})
	debug.FreeOSMemory()
	if path := os.Getenv("RTCEDGE_SOAK_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	g, rss, heap := runtime.NumGoroutine(), rssMiB(t), heapMiB()
	t.Logf("after %d cycles in %s: %d goroutines (baseline %d), %.0f MiB RSS (baseline %.0f), %.0f MiB heap (baseline %.0f)",
		cycles, d, g, baseG, rss, baseRSS, heap, baseHeap)
	if baseG == 0 {
		t.Fatal("the soak ended before its warm-up")
	}
	if g > baseG+soakGoroutineSlack {
		t.Errorf("goroutines grew from %d to %d (bound +%d)", baseG, g, soakGoroutineSlack)
	}
	if rss > baseRSS+soakRSSSlackMiB {
		t.Errorf("RSS grew from %.0f to %.0f MiB (bound +%d MiB)", baseRSS, rss, soakRSSSlackMiB)
	}
}
