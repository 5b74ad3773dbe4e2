package demoorigin

import (
	"net/http"
	"testing"
)

// BenchmarkPlaySetup measures a WHEP session on loopback from the client's
// offer to its first forwarded RTP packet (offer gathering, POST, answer
// gathering, ICE, DTLS, SRTP), then DELETE.
func BenchmarkPlaySetup(b *testing.B) {
	o, srv := newTestOrigin(b, "")
	publish(b, srv.URL, testStream)
	b.ResetTimer()
	for b.Loop() {
		p := play(b, srv.URL, testStream)
		p.receive(b, 1, 0)
		if res := do(b, http.MethodDelete, p.location, "", "", nil); res.status != http.StatusOK {
			b.Fatalf("DELETE: %d", res.status)
		}
		_ = p.pc.GracefulClose()
	}
	b.StopTimer()
	b.ReportMetric(float64(o.Stats().PacketsForwarded), "pkts_forwarded")
}
