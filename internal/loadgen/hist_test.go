//go:build linux

package loadgen

import (
	"math"
	"testing"
)

func TestBucketRangeHoldsValue(t *testing.T) {
	tests := []struct {
		name string
		v    int64
	}{
		{"zero", 0},
		{"last linear", histLinear - 1},
		{"first log", histLinear},
		{"microsecond", 1000},
		{"odd", 123457},
		{"second", 1e9},
		{"power of two", 1 << 40},
		{"power of two minus one", 1<<40 - 1},
		{"max int64", math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := bucketOf(tt.v)
			if i < 0 || i >= histBuckets {
				t.Fatalf("bucketOf(%d) = %d, out of [0, %d)", tt.v, i, histBuckets)
			}
			lo, hi := bucketRange(i)
			if tt.v < lo || tt.v > hi {
				t.Fatalf("bucket %d is [%d, %d], does not hold %d", i, lo, hi, tt.v)
			}
			if tt.v >= histLinear && float64(hi-lo+1)/float64(lo) > 1.0/histSub+1e-9 {
				t.Fatalf("bucket %d [%d, %d] wider than 1/%d of its value", i, lo, hi, histSub)
			}
		})
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values func(h *Histogram)
		q      float64
		want   int64
	}{
		{"empty", func(*Histogram) {}, 0.5, 0},
		{"one value", func(h *Histogram) { h.Record(5000) }, 0.99, 5000},
		{"negative counts as zero", func(h *Histogram) { h.Record(-7) }, 0.5, 0},
		{"uniform median", func(h *Histogram) {
			for v := int64(1); v <= 100000; v++ {
				h.Record(v)
			}
		}, 0.5, 50000},
		{"uniform p99", func(h *Histogram) {
			for v := int64(1); v <= 100000; v++ {
				h.Record(v)
			}
		}, 0.99, 99000},
		{"outlier in p999", func(h *Histogram) {
			for range 999 {
				h.Record(100)
			}
			h.Record(1e6)
		}, 0.999, 100},
		{"max", func(h *Histogram) {
			for range 999 {
				h.Record(100)
			}
			h.Record(1e6)
		}, 1, 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			tt.values(&h)
			got := h.Quantile(tt.q)
			if d := math.Abs(float64(got - tt.want)); d > float64(tt.want)/histSub {
				t.Fatalf("Quantile(%v) = %d, want %d within %.1f%%", tt.q, got, tt.want, 100.0/histSub)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b Histogram
	for v := int64(1); v <= 10; v++ {
		a.Record(v)
		b.Record(v * 1000)
	}
	a.Merge(&b)
	a.Merge(&Histogram{})
	if a.Count() != 20 || a.Min() != 1 || a.Max() != 10000 {
		t.Fatalf("merged count %d min %d max %d, want 20, 1, 10000", a.Count(), a.Min(), a.Max())
	}
	if got, want := a.Mean(), (55.0+55000)/20; got != want {
		t.Fatalf("mean %v, want %v", got, want)
	}
}

func TestHistogramRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(100, func() { h.Record(123456) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}
