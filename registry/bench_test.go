package registry_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func BenchmarkCreateSession(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s := session(fmt.Sprintf("s%d", i), "r1", "v/live/bench", fmt.Sprintf("o%d", i), fmt.Sprintf("c%d", i))
		if err := c.CreateSession(b.Context(), s); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGetSessionByUfrag(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	if err := c.CreateSession(b.Context(), session("s1", "r1", "v/live/bench", "ou", "cu")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.GetSessionByUfrag(b.Context(), "ou:cu"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPickRelay(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	for i := range 10 {
		reg, err := c.RegisterRelay(b.Context(), registry.Relay{ID: fmt.Sprintf("r%d", i), Sessions: i}, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = reg.Close(b.Context()) })
	}
	for {
		rs, err := c.Relays(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(rs) == 10 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.PickRelay(b.Context(), ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickOrigin measures the common case: the stream is pinned to a
// live origin (one read transaction).
func BenchmarkPickOrigin(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	for i := range 3 {
		o := origin(fmt.Sprintf("o%d", i), "", 0)
		o.TTL = time.Minute
		if _, _, err := c.RegisterOrigin(b.Context(), o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.PickOrigin(b.Context(), "v/live/bench", ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickOriginNewPin measures pinning a new stream: the read, the
// pin count and the create-if-absent transaction. The pins accumulate, so
// the pin count grows with b.N.
func BenchmarkPickOriginNewPin(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	for i := range 3 {
		o := origin(fmt.Sprintf("o%d", i), "", 0)
		o.TTL = time.Minute
		if _, _, err := c.RegisterOrigin(b.Context(), o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.PickOrigin(b.Context(), fmt.Sprintf("v/live/s%d", i), ""); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCreateSessionParallel shows the write throughput with concurrent
// callers (etcd batches their raft entries and fsyncs).
func BenchmarkCreateSessionParallel(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			s := session(fmt.Sprintf("s%d", i), "r1", "v/live/bench", fmt.Sprintf("o%d", i), fmt.Sprintf("c%d", i))
			if err := c.CreateSession(b.Context(), s); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetSessionByUfragParallel shows the read throughput with
// concurrent callers.
func BenchmarkGetSessionByUfragParallel(b *testing.B) {
	srv := startDurable(b)
	c := embedetcd.NewClientForTest(b, srv)
	if err := c.CreateSession(b.Context(), session("s1", "r1", "v/live/bench", "ou", "cu")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.GetSessionByUfrag(b.Context(), "ou:cu"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// startDurable starts an embedded etcd with fsync on, as in production, so
// that write figures include the disk.
func startDurable(b *testing.B) *embedetcd.Server {
	b.Helper()
	srv, err := embedetcd.Start(b.Context(), embedetcd.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return srv
}
