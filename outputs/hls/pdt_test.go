package hls

import (
	"math/rand/v2"
	"testing"
	"time"
)

// pdtRun feeds 30 fps frames with 1 s GOPs to a feeder's pdt, as writeVideo
// does, for seconds of media; arrival(i) is how late frame i reaches the
// pipeline against its true time (never early). It returns, per segment,
// the PROGRAM-DATE-TIME written for the segment's first frame minus that
// frame's true time.
func pdtRun(seconds int, arrival func(i int) time.Duration) []time.Duration {
	const frame, gop = 3000, 90000
	f := &feeder{tm: newTiming(0, gop, frame, frame, 200*time.Millisecond)}
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	var errs []time.Duration
	for i := range seconds * 30 {
		pts := int64(i) * frame
		key := pts%gop == 0
		truth := t0.Add(ticksDuration(pts))
		got := f.pdt(pts, truth.Add(arrival(i)), key)
		if key && (i == 0 || pts-f.segStart >= durationTicks(f.tm.segmentMin)) {
			f.segStart = pts
			errs = append(errs, got.Sub(truth))
		}
	}
	return errs
}

// TestPDTFollowsEarliestArrival: PROGRAM-DATE-TIME is the time the stream's
// frames enter the pipeline when they are on time, whatever the frame the
// muxer happened to start on. CI saw PDT 0.66 s late for good when the
// first frame came during a stall and the rest on time.
func TestPDTFollowsEarliestArrival(t *testing.T) {
	// The first 10 frames late by 660 ms down to 0 (a stall, caught up).
	errs := pdtRun(20, func(i int) time.Duration {
		return max(0, 660*time.Millisecond-time.Duration(i)*66*time.Millisecond)
	})
	if errs[0] != 660*time.Millisecond {
		t.Fatalf("first segment: PDT %v off, want the first frame's late ingest (660ms)", errs[0])
	}
	for i, e := range errs[1:] {
		if e != 0 {
			t.Errorf("segment %d: PDT %v off the on-time arrivals, want 0", i+1, e)
		}
	}

	// Jitter of 0–40 ms on every frame: PDT stays near the earliest
	// segment starts (it moves only on frames every rung has), never before
	// the truth, never past the jitter, and on average well under it.
	rng := rand.New(rand.NewPCG(1, 2))
	errs = pdtRun(60, func(int) time.Duration { return time.Duration(rng.IntN(40)) * time.Millisecond })
	var sum time.Duration
	for i, e := range errs[3:] {
		sum += e
		if e < 0 || e >= 40*time.Millisecond {
			t.Errorf("segment %d with jitter: PDT %v off, want 0..40ms", i+3, e)
		}
	}
	if mean := sum / time.Duration(len(errs)-3); mean > 12*time.Millisecond {
		t.Errorf("with 0–40 ms of jitter PDT is %v late on average, want at most 12ms (the jitter's mean is 20ms)", mean)
	}

	// A source clock 1 ms/s slower than the wall clock: frames arrive
	// later and later; PDT follows within pdtSlew per segment.
	errs = pdtRun(30, func(i int) time.Duration { return time.Duration(i) * time.Millisecond / 30 })
	for i, e := range errs {
		if lag := time.Duration(i)*time.Millisecond - e; lag < 0 || lag > pdtSlew {
			t.Errorf("segment %d with a slow source clock: PDT %v behind the drift, want 0..%v", i, lag, pdtSlew)
		}
	}
}

// TestTicksPastADay: 90 kHz conversions hold for streams running for days
// (a plain t × 10⁹ overflows after 28 hours).
func TestTicksPastADay(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second / 30, 29 * time.Hour, 30*24*time.Hour + 33366666*time.Nanosecond, -29 * time.Hour} {
		ticks := durationTicks(d)
		if back := ticksDuration(ticks); (back - d).Abs() > 12*time.Microsecond {
			t.Errorf("%v -> %d ticks -> %v", d, ticks, back)
		}
	}
	if got := durationTicks(29 * time.Hour); got != 29*3600*90000 {
		t.Errorf("29 h is %d ticks, want %d", got, 29*3600*90000)
	}
}
