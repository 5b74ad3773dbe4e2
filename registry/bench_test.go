package registry_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func BenchmarkCreateSession(b *testing.B) {
	srv := embedetcd.StartForTest(b)
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
	srv := embedetcd.StartForTest(b)
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
	srv := embedetcd.StartForTest(b)
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

func BenchmarkPickOriginPinned(b *testing.B) {
	srv := embedetcd.StartForTest(b)
	c := embedetcd.NewClientForTest(b, srv)
	o := origin("o1", "", 0)
	o.TTL = time.Minute
	if _, _, err := c.RegisterOrigin(b.Context(), o); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.PickOrigin(b.Context(), "v/live/bench", ""); err != nil {
			b.Fatal(err)
		}
	}
}
