package transcode

import (
	"slices"
	"testing"
	"time"

	"github.com/prism-streaming/prism/transcode/ladder"
)

func TestKeyframeClockAlignsRungsWithDifferentRates(t *testing.T) {
	c := newKeyframeClock(90000) // 1 s GOP
	full, half := &keyframeCursor{clock: c}, &keyframeCursor{clock: c}
	var fullKeys, halfKeys []int64
	for i := int64(0); i < 90; i++ { // 3 s at 30 fps; the half-rate rung sees every other frame
		pts := 1000 + i*3000
		c.observe(pts)
		if full.isKey(pts) {
			fullKeys = append(fullKeys, pts)
		}
		if i%2 == 0 && half.isKey(pts) {
			halfKeys = append(halfKeys, pts)
		}
	}
	want := []int64{1000, 91000, 181000}
	if !slices.Equal(fullKeys, want) || !slices.Equal(halfKeys, want) {
		t.Errorf("keys %v and %v, want %v on both", fullKeys, halfKeys, want)
	}
}

func TestKeyframeClockForcedAndCoalesced(t *testing.T) {
	c := newKeyframeClock(900000)
	a, b := &keyframeCursor{clock: c}, &keyframeCursor{clock: c}
	var ka, kb []int64
	step := func(pts int64) {
		c.observe(pts)
		if a.isKey(pts) {
			ka = append(ka, pts)
		}
		if b.isKey(pts) {
			kb = append(kb, pts)
		}
	}
	step(0)
	step(3000)
	c.force()
	c.force() // coalesced
	step(6000)
	step(9000)
	c.force()
	// b lags: a encodes 12000 first, then b catches up; both must agree.
	c.observe(12000)
	if a.isKey(12000) {
		ka = append(ka, 12000)
	}
	if b.isKey(12000) {
		kb = append(kb, 12000)
	}
	want := []int64{0, 6000, 12000}
	if !slices.Equal(ka, want) || !slices.Equal(kb, want) {
		t.Errorf("keys %v and %v, want %v", ka, kb, want)
	}
}

func TestTimeline(t *testing.T) {
	tl := newTimeline(90000, 1.0, 3000) // origin 1 s
	var got []int64
	for _, ts := range []int64{90000, 93000, 93000, 92000, 96000, 5 * 90000 * 100, 5*90000*100 + 3000, 1000} {
		if out, ok := tl.next(ts); ok {
			got = append(got, out)
		}
	}
	// duplicates and small steps back are dropped; the big jump forward and
	// the big jump back are folded into a continuous timeline.
	want := []int64{0, 3000, 6000, 9000, 12000, 15000}
	if !slices.Equal(got, want) || tl.discontinuities != 2 {
		t.Errorf("got %v (%d discontinuities), want %v", got, tl.discontinuities, want)
	}
}

func TestIngestStamps(t *testing.T) {
	s := newIngestStamps(4)
	t0 := time.Unix(100, 0)
	for i := int64(0); i < 6; i++ {
		s.add(i*10, t0.Add(time.Duration(i)*time.Second))
	}
	if got := s.lookup(35); !got.Equal(t0.Add(3 * time.Second)) {
		t.Errorf("lookup(35) = %v", got)
	}
	if got := s.lookup(0); !got.Equal(t0.Add(2 * time.Second)) { // evicted: oldest kept
		t.Errorf("lookup(0) = %v", got)
	}
}

func TestPlanThreads(t *testing.T) {
	rungs := []ladder.PlannedRung{planned("1080p", 1920, 1080, 30), planned("720p", 1280, 720, 30), planned("360p", 640, 360, 30)}
	if got := planThreads(rungs, 2); !slices.Equal(got, []int{1, 1, 1}) {
		t.Errorf("2 CPUs: %v, want one thread each", got)
	}
	if got := planThreads(rungs, 16); !slices.Equal(got, []int{10, 5, 1}) {
		t.Errorf("16 CPUs: %v, want shares by pixel rate", got)
	}
	rungs[2].Threads = 3
	if got := planThreads(rungs, 16); got[2] != 3 {
		t.Errorf("explicit threads ignored: %v", got)
	}
}

func TestFPSString(t *testing.T) {
	for in, want := range map[float64]string{30: "30", 29.97002997: "30000/1001", 12.5: "12.500"} {
		if got := fpsString(in); got != want {
			t.Errorf("fpsString(%v) = %s, want %s", in, got, want)
		}
	}
}
