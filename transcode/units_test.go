package transcode

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

func TestKeyframeClockAlignsRungsWithDifferentRates(t *testing.T) {
	c := newKeyframeClock(90000, 45000) // 1 s GOP
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
	c := newKeyframeClock(900000, 0) // no spacing: every request forces at the next frame
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
	c.force(pipeline.KeyframePLI)
	c.force(pipeline.KeyframePLI) // coalesced
	step(6000)
	step(9000)
	c.force(pipeline.KeyframeJoin)
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

// budgetRun steps a clock with a 1 s GOP and a 0.5 s budget through 30 fps
// frames, calling at(pts) after each frame is observed and before it is
// encoded, and returns the keyframe PTS one rung encodes.
func budgetRun(c *keyframeClock, frames int, at func(pts int64)) []int64 {
	k := &keyframeCursor{clock: c}
	var keys []int64
	for i := range int64(frames) {
		pts := i * 3000
		c.observe(pts)
		at(pts)
		if k.isKey(pts) {
			keys = append(keys, pts)
		}
	}
	return keys
}

// TestKeyframeBudget: a forced IDR comes no sooner than the minimum
// interval after the last IDR (GOP or forced); a GOP boundary at or before
// that point answers the request itself; a pending forced one absorbs the
// next requests; a source change is an IDR whatever the budget says.
func TestKeyframeBudget(t *testing.T) {
	c := newKeyframeClock(90000, 45000)
	c.force(pipeline.KeyframeJoin) // before the first frame, which is an IDR anyway
	keys := budgetRun(c, 70, func(pts int64) {
		switch pts {
		case 3000:
			c.force(pipeline.KeyframePLI) // 1/30 s after the first IDR: deferred to 0.5 s
		case 6000:
			c.force(pipeline.KeyframeJoin) // rides on the pending one
		case 51000:
			c.force(pipeline.KeyframePLI) // 0.5 s after the forced one is the GOP boundary: no IDR forced
		case 93000:
			c.force(pipeline.KeyframeHLS) // after the GOP IDR at 1 s: at 1.5 s
			c.discontinuity(99000)        // a source change right after the GOP IDR: not budgeted
		case 102000:
			c.force(pipeline.KeyframeDrop) // pending (1.5 s)
		}
	})
	want := []int64{0, 45000, 90000, 99000, 135000, 180000}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %v, want %v", keys, want)
	}
	st := c.keyframeStats()
	wantReq := map[string]uint64{pipeline.KeyframeJoin: 2, pipeline.KeyframePLI: 2, pipeline.KeyframeHLS: 1, pipeline.KeyframeDrop: 1}
	if st.Forced != 2 || st.Coalesced != 4 || !maps.Equal(st.Requests, wantReq) {
		t.Errorf("stats %+v, want 2 forced, 4 coalesced, requests %v", st, wantReq)
	}
}

// TestKeyframeBudgetUnderPLIFlood: a viewer asking every 150 ms for 10 s
// adds at most one IDR per minimum interval, and no two IDRs are closer
// than it except at GOP boundaries (not budgeted).
func TestKeyframeBudgetUnderPLIFlood(t *testing.T) {
	const frames = 300 // 10 s
	quiet := budgetRun(newKeyframeClock(90000, 45000), frames, func(int64) {})
	c := newKeyframeClock(90000, 45000)
	flood := budgetRun(c, frames, func(pts int64) {
		if pts%13500 == 0 { // every 150 ms
			c.force(pipeline.KeyframePLI)
		}
	})
	if len(quiet) != 10 {
		t.Fatalf("%d IDRs without requests, want 10 (one per GOP)", len(quiet))
	}
	if extra := len(flood) - len(quiet); extra < 1 || extra > frames*3000/45000 {
		t.Errorf("%d extra IDRs, want 1..%d (10 s / 0.5 s)", extra, frames*3000/45000)
	}
	for i := 1; i < len(flood); i++ {
		if d := flood[i] - flood[i-1]; d < 45000 && flood[i]%90000 != 0 {
			t.Errorf("forced IDR at %d only %d ticks after the previous one", flood[i], d)
		}
	}
	st := c.keyframeStats()
	if st.Forced != uint64(len(flood)-len(quiet)) || st.Forced+st.Coalesced != st.Requests[pipeline.KeyframePLI] {
		t.Errorf("stats %+v for %d extra IDRs", st, len(flood)-len(quiet))
	}
	t.Logf("%d IDRs without requests, %d with a PLI every 150 ms (%d requests)", len(quiet), len(flood), st.Requests[pipeline.KeyframePLI])
}

func TestTimeline(t *testing.T) {
	tl := newTimeline(newInputClock(1.0), 90000, 3000, false) // origin 1 s
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

func TestFPSString(t *testing.T) {
	for in, want := range map[float64]string{30: "30", 29.97002997: "30000/1001", 12.5: "12.500"} {
		if got := fpsString(in); got != want {
			t.Errorf("fpsString(%v) = %s, want %s", in, got, want)
		}
	}
}

// TestForcedKeyframeSkipsNoQueuedFrame: frames already past the filter,
// queued for the encoders, can carry a forced IDR; it goes on the frame
// after the one the most advanced encoder took, and a lagging rung meets it
// there.
func TestForcedKeyframeSkipsNoQueuedFrame(t *testing.T) {
	c := newKeyframeClock(900000, 0)
	fast, slow := &keyframeCursor{clock: c}, &keyframeCursor{clock: c}
	for pts := int64(0); pts <= 30000; pts += 3000 {
		c.observe(pts) // eleven frames into the filter graph
	}
	fast.isKey(0)
	fast.isKey(3000) // the fast encoder took two, the slow one one
	slow.isKey(0)
	c.force(pipeline.KeyframeJoin)
	if !fast.isKey(6000) {
		t.Fatal("the forced IDR did not go on the fast encoder's next frame, 6000 (it would wait behind 8 queued frames)")
	}
	if slow.isKey(3000) || !slow.isKey(6000) {
		t.Fatal("the slow encoder must put its IDR on the same frame, 6000")
	}
}

// TestSwitchKeyframeIsSpacedFromForcedOnly: a move down for congestion
// (reason switch) is not held back by a GOP IDR that just went, only by
// another forced one.
func TestSwitchKeyframeIsSpacedFromForcedOnly(t *testing.T) {
	c := newKeyframeClock(90000, 45000) // 1 s GOP, 0.5 s budget
	k := &keyframeCursor{clock: c}
	var keys []int64
	step := func(pts int64) {
		c.observe(pts)
		if k.isKey(pts) {
			keys = append(keys, pts)
		}
	}
	for pts := int64(0); pts <= 93000; pts += 3000 {
		step(pts) // the GOP IDR at 90000 has just gone
	}
	c.force(pipeline.KeyframePLI) // spaced from the GOP IDR: 135000
	c.force(pipeline.KeyframeSwitch)
	step(96000)
	if keys[len(keys)-1] != 90000 {
		t.Fatalf("keys %v: a PLI request forced an IDR 0.07 s after the GOP's", keys)
	}
	c2 := newKeyframeClock(90000, 45000)
	k2 := &keyframeCursor{clock: c2}
	for pts := int64(0); pts <= 93000; pts += 3000 {
		c2.observe(pts)
		k2.isKey(pts)
	}
	c2.force(pipeline.KeyframeSwitch)
	c2.observe(96000)
	if !k2.isKey(96000) {
		t.Fatal("a switch request waited for the budget after a GOP IDR")
	}
}
