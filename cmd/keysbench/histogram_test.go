package main

import (
	"testing"
	"time"
)

func TestHistogramBucketsHoldTheirValues(t *testing.T) {
	for _, v := range []time.Duration{0, 1, 127, 128, 129, 1000, 123456, time.Millisecond, 3 * time.Second} {
		i := bucketOf(v)
		if up := bucketUpper(i); up < v || (v >= subBuckets && float64(up-v) > float64(v)/subBuckets) {
			t.Errorf("value %d in bucket %d with upper bound %d", v, i, up)
		}
		if i > 0 && bucketUpper(i-1) >= v {
			t.Errorf("value %d also fits the previous bucket (upper %d)", v, bucketUpper(i-1))
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got-c.want) > float64(c.want)/subBuckets {
			t.Errorf("quantile %v = %v, want %v within 1%%", c.q, got, c.want)
		}
	}
}
