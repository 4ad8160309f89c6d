package hls

import (
	"testing"
	"time"
)

// TestTiming checks the muxer parameters derived from a stream's GOP and
// frame intervals (90 kHz): parts that are whole frames on every rung,
// close to the target, and a segment cut that tolerates a GOP-grid IDR one
// frame early but not a forced IDR in mid-GOP.
func TestTiming(t *testing.T) {
	for _, ca := range []struct {
		name              string
		gop, frame, lcm   int64
		target            time.Duration
		wantPart          int64
		wantSegmentMin    time.Duration
		wantSegmentTarget time.Duration
	}{
		{"30 fps", 90000, 3000, 3000, 200 * time.Millisecond, 18000, 950 * time.Millisecond, time.Second},
		{"30 and 15 fps", 90000, 6000, 6000, 200 * time.Millisecond, 18000, 900 * time.Millisecond, time.Second},
		{"30 and 24 fps", 90000, 3750, 15000, 200 * time.Millisecond, 30000, 937500 * time.Microsecond, time.Second},
		{"25 fps, 250 ms", 180000, 3600, 3600, 250 * time.Millisecond, 25200, 1940 * time.Millisecond, 2 * time.Second},
		{"29.97 fps", 90000, 3003, 3003, 200 * time.Millisecond, 18018, ticksDuration(90000 - 3003*3/2), time.Second},
	} {
		t.Run(ca.name, func(t *testing.T) {
			tm := newTiming(0, ca.gop, ca.frame, ca.lcm, ca.target)
			if tm.part != ca.wantPart || tm.partMin != ticksDuration(ca.wantPart)-time.Millisecond {
				t.Errorf("part %d ticks (min %s), want %d", tm.part, tm.partMin, ca.wantPart)
			}
			if tm.segmentMin != ca.wantSegmentMin {
				t.Errorf("segment min %s, want %s", tm.segmentMin, ca.wantSegmentMin)
			}
			if got := tm.segmentTarget(); got != ca.wantSegmentTarget {
				t.Errorf("segment target %s, want %s", got, ca.wantSegmentTarget)
			}
		})
	}
}
