package signaling

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// originHealth is what signaling keeps about origins' health beside the
// registry: failover and probe metrics, and which SRS origins were warned
// about an incomplete heartbeat.
type originHealth struct {
	failovers *prometheus.CounterVec
	probes    *probeMetrics

	mu        sync.Mutex
	srsWarned map[string]bool      // origin ids (bounded: maxSRSWarned)
	beats     map[string]time.Time // last SRS heartbeat seen here by origin id (bounded: maxSRSWarned)
}

// maxSRSWarned bounds originHealth.srsWarned.
const maxSRSWarned = 1024

func newOriginHealth(reg prometheus.Registerer) *originHealth {
	return &originHealth{failovers: newFailoverMetrics(reg), probes: newProbeMetrics(reg), srsWarned: map[string]bool{}, beats: map[string]time.Time{}}
}

// warnOnce reports whether id was not warned about yet, and records it.
func (h *originHealth) warnOnce(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srsWarned[id] {
		return false
	}
	if len(h.srsWarned) >= maxSRSWarned {
		clear(h.srsWarned)
	}
	h.srsWarned[id] = true
	return true
}

// lastBeat returns when this instance last saw a heartbeat of id (zero if
// never) and records now.
func (h *originHealth) lastBeat(id string, now time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := h.beats[id]
	if len(h.beats) >= maxSRSWarned {
		clear(h.beats)
	}
	h.beats[id] = now
	return last
}
