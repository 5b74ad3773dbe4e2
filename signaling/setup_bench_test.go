package signaling_test

import (
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// BenchmarkWHIPSetup compares a WHIP POST through the edge (offer checks,
// PickOrigin, the origin's POST, AllocateSession on a real relay, the etcd
// transactions, the answer rewrite) with the same POST straight to the
// origin. The setup-p50-ms metrics are the medians of the POST alone (the
// edge's DELETE runs between POSTs, outside the figure); their difference
// is the edge's overhead (issue 8: at most 5 ms).
func BenchmarkWHIPSetup(b *testing.B) {
	e := newEnv(b, 1)
	origin := newFakeOrigin(b, registry.OriginKindMediaMTX)
	origin.register(b, e.reg)
	offer := fixture(b, "chrome-whip-offer.sdp")
	for _, tc := range []struct {
		name string
		url  string
		edge bool
	}{
		{name: "direct", url: origin.srv.URL + "/live/bench/whip"},
		{name: "edge", url: e.sig[0].URL + "/whip/live/bench", edge: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				r := do(b, http.MethodPost, tc.url, "application/sdp", offer)
				lat = append(lat, time.Since(start))
				if r.status != http.StatusCreated {
					b.Fatalf("POST = %d %s", r.status, r.body)
				}
				if tc.edge {
					if d := do(b, http.MethodDelete, e.sig[0].URL+r.header.Get("Location"), "", ""); d.status != http.StatusOK {
						b.Fatalf("DELETE = %d", d.status)
					}
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "setup-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "setup-p99-ms")
		})
	}
}

// BenchmarkWHIPSetupParallel runs WHIP POST + DELETE from 8 clients per
// core against one signaling instance and reports its throughput (issue 8:
// at least 500 setups/s).
func BenchmarkWHIPSetupParallel(b *testing.B) {
	e := newEnv(b, 1)
	origin := newFakeOrigin(b, registry.OriginKindMediaMTX)
	origin.register(b, e.reg)
	offer := fixture(b, "chrome-whip-offer.sdp")
	var setups atomic.Int64
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := tryDo(b.Context(), http.MethodPost, e.sig[0].URL+"/whip/live/bench", "application/sdp", offer)
			if err != nil || r.status != http.StatusCreated {
				b.Errorf("POST = %d %v %s", r.status, err, r.body)
				return
			}
			setups.Add(1)
			if d, err := tryDo(b.Context(), http.MethodDelete, e.sig[0].URL+r.header.Get("Location"), "", ""); err != nil || d.status != http.StatusOK {
				b.Errorf("DELETE = %d %v", d.status, err)
				return
			}
		}
	})
	b.ReportMetric(float64(setups.Load())/time.Since(start).Seconds(), "setups/s")
}
