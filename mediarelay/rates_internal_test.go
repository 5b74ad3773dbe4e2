package mediarelay

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

func TestRateMeter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		after      time.Duration // since t0
		c2oPackets uint64        // counter values at that time
		c2oBytes   uint64
		o2cPackets uint64
		o2cBytes   uint64
		want       rates
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first read averages since creation", []step{
			{after: 2 * time.Second, c2oPackets: 100, c2oBytes: 100_000, o2cPackets: 50, o2cBytes: 1000,
				want: rates{c2oPPS: 50, c2oBPS: 400_000, o2cPPS: 25, o2cBPS: 4000}},
		}},
		{"later reads measure the window since the previous sample", []step{
			{after: time.Second, c2oPackets: 10, c2oBytes: 1000, want: rates{c2oPPS: 10, c2oBPS: 8000}},
			{after: 3 * time.Second, c2oPackets: 410, c2oBytes: 41000, want: rates{c2oPPS: 200, c2oBPS: 160_000}},
		}},
		{"a read within the minimum window repeats the previous rates", []step{
			{after: time.Second, c2oPackets: 10, c2oBytes: 1000, want: rates{c2oPPS: 10, c2oBPS: 8000}},
			{after: 1500 * time.Millisecond, c2oPackets: 1000, c2oBytes: 1_000_000, want: rates{c2oPPS: 10, c2oBPS: 8000}},
			{after: 2 * time.Second, c2oPackets: 1010, c2oBytes: 1_001_000, want: rates{c2oPPS: 1000, c2oBPS: 8_000_000}},
		}},
		{"an idle session reads zero", []step{
			{after: time.Second, c2oPackets: 10, c2oBytes: 1000, want: rates{c2oPPS: 10, c2oBPS: 8000}},
			{after: 5 * time.Second, c2oPackets: 10, c2oBytes: 1000, want: rates{}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m rateMeter
			var c counters
			for i, st := range tc.steps {
				c.c2oPackets.Store(st.c2oPackets)
				c.c2oBytes.Store(st.c2oBytes)
				c.o2cPackets.Store(st.o2cPackets)
				c.o2cBytes.Store(st.o2cBytes)
				if got := m.observe(t0.Add(st.after), t0, &c); got != st.want {
					t.Fatalf("step %d: rates %+v, want %+v", i, got, st.want)
				}
			}
		})
	}
}

func TestStatsInterval(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *durationpb.Duration
		want time.Duration
		code codes.Code
	}{
		{"unset", nil, 0, codes.OK},
		{"one second", durationpb.New(time.Second), time.Second, codes.OK},
		{"too short", durationpb.New(999 * time.Millisecond), 0, codes.InvalidArgument},
		{"too long", durationpb.New(2 * time.Hour), 0, codes.InvalidArgument},
		{"invalid", &durationpb.Duration{Seconds: 1, Nanos: -1}, 0, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statsInterval(&relayv1.WatchSessionsRequest{StatsInterval: tc.d})
			if status.Code(err) != tc.code || got != tc.want {
				t.Fatalf("statsInterval = %s, %v; want %s, %s", got, err, tc.want, tc.code)
			}
		})
	}
}
