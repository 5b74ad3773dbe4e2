package signaling

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxOriginLabels bounds the origin label's values: the origins with the
// most viewers (then streams) keep their id, the rest are summed under
// "(other)". Streams of no origin are counted under "(none)" (neither is a
// valid origin id).
const maxOriginLabels = 50

// streamCollector exports, at scrape time, how many streams and viewers
// each origin has, from the registry (pins and sessions; the relays are not
// asked). Every instance exports the same cluster-wide values.
type streamCollector struct{ s *Server }

var (
	streamsDesc = prometheus.NewDesc("rtcedge_signaling_streams",
		"Streams by origin: pinned to it, or with sessions on it (the registry's view; every signaling instance exports the same).",
		[]string{"origin"}, nil)
	viewersDesc = prometheus.NewDesc("rtcedge_signaling_viewers",
		"Edge sessions playing a stream, by origin.", []string{"origin"}, nil)
	publishersDesc = prometheus.NewDesc("rtcedge_signaling_publishers",
		"Edge sessions publishing a stream, by origin.", []string{"origin"}, nil)
	statusUpDesc = prometheus.NewDesc("rtcedge_signaling_status_up",
		"1 when the registry answered for the stream gauges of this scrape, else 0 (and the gauges are absent).", nil, nil)
)

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamsDesc
	ch <- viewersDesc
	ch <- publishersDesc
	ch <- statusUpDesc
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	snap, err := c.s.statusSnapshot(ctx, false)
	if err != nil {
		c.s.log.Debug("signaling: stream gauges: registry", "err", err)
		ch <- prometheus.MustNewConstMetric(statusUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(statusUpDesc, prometheus.GaugeValue, 1)
	type count struct{ streams, viewers, publishers float64 }
	per := map[string]*count{}
	for _, st := range snap.streams {
		o := st.OriginId
		if o == "" {
			o = "(none)"
		}
		if per[o] == nil {
			per[o] = &count{}
		}
		per[o].streams++
		per[o].viewers += float64(st.Viewers)
		per[o].publishers += float64(st.Publishers)
	}
	for _, o := range snap.origins { // registered origins without streams read 0
		if per[o.Id] == nil {
			per[o.Id] = &count{}
		}
	}
	ids := make([]string, 0, len(per))
	for id := range per {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		ca, cb := per[a], per[b]
		switch {
		case ca.viewers != cb.viewers:
			return cmpDesc(ca.viewers, cb.viewers)
		case ca.streams != cb.streams:
			return cmpDesc(ca.streams, cb.streams)
		}
		if a < b {
			return -1
		}
		return 1
	})
	if len(ids) > maxOriginLabels {
		other := &count{}
		for _, id := range ids[maxOriginLabels-1:] {
			other.streams += per[id].streams
			other.viewers += per[id].viewers
			other.publishers += per[id].publishers
		}
		ids = append(ids[:maxOriginLabels-1], "(other)")
		per["(other)"] = other
	}
	for _, id := range ids {
		ch <- prometheus.MustNewConstMetric(streamsDesc, prometheus.GaugeValue, per[id].streams, id)
		ch <- prometheus.MustNewConstMetric(viewersDesc, prometheus.GaugeValue, per[id].viewers, id)
		ch <- prometheus.MustNewConstMetric(publishersDesc, prometheus.GaugeValue, per[id].publishers, id)
	}
}

func cmpDesc(a, b float64) int {
	if a > b {
		return -1
	}
	return 1
}
