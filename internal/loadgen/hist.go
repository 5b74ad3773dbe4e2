//go:build linux

package loadgen

import (
	"math"
	"math/bits"
)

// Histogram layout: values below histLinear have a bucket each; above, each
// power of two is split into histSub buckets, so a bucket's width is at most
// 1/histSub (about 3%) of its value.
const (
	histLinear  = 64
	histSubBits = 5
	histSub     = 1 << histSubBits
	histBuckets = histLinear + (64-7+1)*histSub
)

// Histogram is a log-bucket histogram of non-negative integers (round trip
// times in nanoseconds), HDR-style: fixed memory, no allocation per Record,
// about 3% relative precision. The zero value is empty and ready. It is not
// safe for concurrent use; Merge combines per-goroutine histograms.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      float64
	min, max int64
}

// bucketOf returns the bucket index of v >= 0.
func bucketOf(v int64) int {
	if v < histLinear {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // top bit, >= 6
	shift := e - histSubBits       // v>>shift is in [histSub, 2*histSub)
	return histLinear + (e-6)*histSub + int(uint64(v)>>shift) - histSub
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < histLinear {
		return int64(i), int64(i)
	}
	j := i - histLinear
	e := j/histSub + 6
	shift := e - histSubBits
	lo = int64(histSub+j%histSub) << shift
	return lo, lo + (int64(1) << shift) - 1
}

// Record adds v; a negative v counts as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
}

// Merge adds every value of o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest value recorded, 0 when empty.
func (h *Histogram) Min() int64 { return h.min }

// Max returns the largest value recorded, 0 when empty.
func (h *Histogram) Max() int64 { return h.max }

// Mean returns the mean, 0 when empty.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q in [0, 1]: the midpoint of the
// bucket holding it, clamped to the recorded min and max. 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			return min(max(lo+(hi-lo)/2, h.min), h.max)
		}
	}
	return h.max
}
