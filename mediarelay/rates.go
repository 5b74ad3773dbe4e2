package mediarelay

import (
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// minRateWindow is the shortest window a rate is measured over: a read
// sooner after the previous sample returns the previous rates.
const minRateWindow = time.Second

// Bounds of WatchSessionsRequest.stats_interval.
const (
	minStatsInterval = time.Second
	maxStatsInterval = time.Hour
)

// rateSample is a session's counters at one time.
type rateSample struct {
	at                   time.Time
	c2oPackets, c2oBytes uint64
	o2cPackets, o2cBytes uint64
}

// rates are packet and bit rates, per second.
type rates struct {
	c2oPPS, c2oBPS uint64
	o2cPPS, o2cBPS uint64
}

// rateMeter turns a session's counters into current rates when the API
// reads them: the rate over the window since the previous sample, taken
// by a read at least minRateWindow earlier (the session's creation for
// the first). Nothing runs on the packet path and no goroutine samples:
// rates cost a lock per read.
type rateMeter struct {
	mu   sync.Mutex
	last rateSample
	cur  rates
}

// observe samples c at now and returns the current rates; created is the
// session's start, the first window's beginning.
func (m *rateMeter) observe(now, created time.Time, c *counters) rates {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last.at.IsZero() {
		m.last.at = created
	}
	dt := now.Sub(m.last.at)
	if dt < minRateWindow {
		return m.cur
	}
	s := rateSample{at: now, c2oPackets: c.c2oPackets.Load(), c2oBytes: c.c2oBytes.Load(),
		o2cPackets: c.o2cPackets.Load(), o2cBytes: c.o2cBytes.Load()}
	per := func(cur, prev uint64, scale float64) uint64 {
		if cur < prev {
			return 0
		}
		return uint64(float64(cur-prev)*scale/dt.Seconds() + 0.5)
	}
	m.cur = rates{
		c2oPPS: per(s.c2oPackets, m.last.c2oPackets, 1), c2oBPS: per(s.c2oBytes, m.last.c2oBytes, 8),
		o2cPPS: per(s.o2cPackets, m.last.o2cPackets, 1), o2cBPS: per(s.o2cBytes, m.last.o2cBytes, 8),
	}
	m.last = s
	return m.cur
}

// statusWithRates is GetStatus with each direction's rates summed over
// the open sessions.
func (r *Relay) statusWithRates() *relayv1.GetStatusResponse {
	st := r.Status()
	r.mu.Lock()
	sessions := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	now := time.Now()
	var sum rates
	for _, s := range sessions {
		rt := s.rates.observe(now, s.created, &s.counters)
		sum.c2oPPS += rt.c2oPPS
		sum.c2oBPS += rt.c2oBPS
		sum.o2cPPS += rt.o2cPPS
		sum.o2cBPS += rt.o2cBPS
	}
	if st.ClientToOrigin != nil {
		st.ClientToOrigin.PacketsPerSecond, st.ClientToOrigin.BitsPerSecond = sum.c2oPPS, sum.c2oBPS
	}
	if st.OriginToClient != nil {
		st.OriginToClient.PacketsPerSecond, st.OriginToClient.BitsPerSecond = sum.o2cPPS, sum.o2cBPS
	}
	return st
}

// statsInterval validates WatchSessionsRequest.stats_interval; 0 is off.
func statsInterval(req *relayv1.WatchSessionsRequest) (time.Duration, error) {
	d := req.GetStatsInterval()
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, status.Error(codes.InvalidArgument, "stats_interval: "+err.Error())
	}
	v := d.AsDuration()
	if v < minStatsInterval || v > maxStatsInterval {
		return 0, status.Errorf(codes.InvalidArgument, "stats_interval %s is outside 1s-1h", v)
	}
	return v, nil
}

// sendStats sends one STATS event per open session of stream ("" every
// stream).
func (g *grpcService) sendStats(stream string, out grpc.ServerStreamingServer[relayv1.WatchSessionsResponse]) error {
	now := timestamp(time.Now())
	page := &relayv1.ListSessionsResponse{}
	for first := true; first || page.NextPageToken != ""; first = false {
		var err error
		page, err = g.r.List(&relayv1.ListSessionsRequest{PageSize: maxPageSize, PageToken: page.GetNextPageToken(), Stream: stream})
		if err != nil {
			return toStatus(err)
		}
		for _, s := range page.Sessions {
			if err := out.Send(&relayv1.WatchSessionsResponse{Type: relayv1.SessionEventType_SESSION_EVENT_TYPE_STATS, Session: s, Time: now}); err != nil {
				return err
			}
		}
	}
	return nil
}
