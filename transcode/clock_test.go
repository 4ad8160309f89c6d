package transcode

import (
	"math"
	"testing"
	"time"
)

// avClock is one input's two timelines, as the decoders hold them: video
// at 90 kHz, 30 fps; audio at 48 kHz, 1024-sample frames.
type avClock struct {
	clk          *inputClock
	video, audio *timeline
}

func newAVClock(live bool) *avClock {
	c := newInputClock(0)
	return &avClock{clk: c, video: newTimeline(c, 90000, 3000, live), audio: newTimeline(c, 48000, 1024, live)}
}

// push maps a source timestamp in seconds on one stream; it returns the
// output time in seconds, or NaN when the frame is dropped.
func (a *avClock) push(video bool, sec float64) float64 {
	tl, rate := a.audio, 48000.0
	if video {
		tl, rate = a.video, 90000
	}
	out, ok := tl.next(int64(math.Round(sec * rate)))
	if !ok {
		return math.NaN()
	}
	return float64(out) / rate
}

// piece feeds dur seconds of a source piece whose video starts at v0 and
// audio at a0, interleaved by timestamp, except that the first lag
// seconds of one stream come after the other stream's (a muxer's
// interleaving lag at a reset). It returns the output times of the first
// video and audio frames of the piece.
func (a *avClock) piece(v0, a0, dur, lag float64, videoFirst bool) (firstV, firstA float64) {
	type ev struct {
		video bool
		ts    float64
	}
	var vs, as []ev
	for t := 0.0; t < dur; t += 1.0 / 30 {
		vs = append(vs, ev{true, v0 + t})
	}
	for t := 0.0; t < dur; t += 1024.0 / 48000 {
		as = append(as, ev{false, a0 + t})
	}
	// Merge by timestamp, then hold back the lagging stream's first lag s.
	var order []ev
	i, j := 0, 0
	for i < len(vs) || j < len(as) {
		if j >= len(as) || (i < len(vs) && vs[i].ts-v0 <= as[j].ts-a0) {
			order = append(order, vs[i])
			i++
		} else {
			order = append(order, as[j])
			j++
		}
	}
	var held, rest []ev
	for _, e := range order {
		lagging := e.video != videoFirst
		base := a0
		if e.video {
			base = v0
		}
		if lagging && e.ts-base < lag {
			held = append(held, e)
		} else {
			rest = append(rest, e)
		}
	}
	// The leading stream's first lag seconds go first, then the held ones.
	n := 0
	for n < len(rest) {
		e := rest[n]
		base := a0
		if e.video {
			base = v0
		}
		if e.ts-base >= lag {
			break
		}
		n++
	}
	order = append(append(append([]ev{}, rest[:n]...), held...), rest[n:]...)
	firstV, firstA = math.NaN(), math.NaN()
	for _, e := range order {
		out := a.push(e.video, e.ts)
		if math.IsNaN(out) {
			continue
		}
		if e.video && math.IsNaN(firstV) {
			firstV = out
		}
		if !e.video && math.IsNaN(firstA) {
			firstA = out
		}
	}
	return firstV, firstA
}

const audioFrame = 1024.0 / 48000

// TestInputClockKeepsAVOffsetAcrossResets: each piece restarts its clock
// (at another base, forwards or backwards), with the source's A/V offset
// and the stream that meets the reset first changing each time; the output
// A/V offset of each piece is the source's, to a timestamp unit.
func TestInputClockKeepsAVOffsetAcrossResets(t *testing.T) {
	a := newAVClock(false)
	cases := []struct {
		v0, a0, lag float64
		videoFirst  bool
	}{
		{0, 0, 0, true},
		{0, 0.1, 0.2, true},            // audio 100 ms late, video meets the reset first
		{0.2, 0.2 - 0.08, 0.3, false},  // audio 80 ms early, audio first
		{95000, 95000.05, 0.1, true},   // a jump forwards (a wrap the other way)
		{0.5, 0.5 - 0.2, 0.05, false},  // and back
		{0.1, 0.1 + 0.033, 0.25, true}, // the fifth reset
	}
	prevEnd := 0.0
	for i, c := range cases {
		v, au := a.piece(c.v0, c.a0, 2, c.lag, c.videoFirst)
		// Dropped overlap (audio held behind the reset) can only delay the
		// first audio out by whole frames; compare the mapping instead.
		want := c.a0 - c.v0
		got := au - v
		off := math.Mod(got-want+1000*audioFrame, audioFrame)
		if math.Abs(off) > 1e-4 && math.Abs(off-audioFrame) > 1e-4 {
			t.Errorf("piece %d: A/V offset %.4f s, source %.4f s: not the same mapping", i, got, want)
		}
		if got-want > audioFrame*float64(int(c.lag/audioFrame)+1)+1e-4 || got < want-1e-4 {
			t.Errorf("piece %d: A/V offset %.4f s, source %.4f s", i, got, want)
		}
		if i > 0 && (v < prevEnd-0.5 || v > prevEnd+0.5) {
			t.Errorf("piece %d starts at %.3f s, the previous ended at %.3f s", i, v, prevEnd)
		}
		prevEnd = v + 2
	}
	if a.clk.resets != len(cases)-1 {
		t.Errorf("%d resets counted, want %d", a.clk.resets, len(cases)-1)
	}
}

// TestInputClockBackwardWrap: an MPEG-TS 33-bit wrap seen on audio first:
// both streams continue without a hole and keep their offset.
func TestInputClockBackwardWrap(t *testing.T) {
	a := newAVClock(false)
	wrap := float64(int64(1)<<33) / 90000
	base := wrap - 1 // one second before the wrap
	var lastV, lastA float64
	for k := 0; k < 60; k++ {
		ts := base + float64(k)/30
		vts, ats := ts, ts+0.02
		if vts >= wrap {
			vts -= wrap
		}
		if ats >= wrap {
			ats -= wrap // audio, 20 ms ahead, wraps first
		}
		v, au := a.push(true, vts), a.push(false, ats)
		if math.IsNaN(v) || math.IsNaN(au) {
			t.Fatalf("frame %d dropped", k)
		}
		// Across the wrap the video may wait for the audio's newest frame
		// to end: at most one audio frame more.
		if k > 0 && (v-lastV < 1.0/30-1e-4 || v-lastV > 1.0/30+audioFrame) {
			t.Fatalf("frame %d: video step %.4f s", k, v-lastV)
		}
		if math.Abs((au-v)-0.02) > 1e-4 {
			t.Fatalf("frame %d: A/V offset %.4f s, want 0.02", k, au-v)
		}
		lastV, lastA = v, au
	}
	_ = lastA
	if a.clk.resets != 1 {
		t.Errorf("%d resets, want 1", a.clk.resets)
	}
}

// TestInputClockReanchor: a stall re-anchor moves every stream by the same
// shift and is no jump for the stream that did not make it.
func TestInputClockReanchor(t *testing.T) {
	a := newAVClock(true)
	now := time.Unix(1000, 0)
	a.video.now = func() time.Time { return now }
	a.audio.now = a.video.now
	a.push(true, 0)
	a.push(false, 0.01)
	now = now.Add(3 * time.Second) // the source paused 3 s, its clock too
	out, _ := a.video.next(3000)   // frame 1, covered by 3 s of filler
	if !a.video.reanchor(out, 3*90000, 0) {
		t.Fatal("reanchor refused")
	}
	if a.video.reanchor(out, 3*90000, 0) {
		t.Fatal("a second reanchor for the same stall was taken")
	}
	v := a.push(true, 2.0/30)
	au := a.push(false, 0.01+audioFrame)
	if math.Abs(v-(3+1.0/30)) > 1e-4 {
		t.Errorf("video after the re-anchor at %.4f s, want %.4f", v, 3+1.0/30)
	}
	if math.Abs(au-v-(0.01+audioFrame-2.0/30+0)) > 1e-3 {
		t.Errorf("A/V offset after the re-anchor %.4f s, want %.4f", au-v, 0.01+audioFrame-2.0/30)
	}
	if a.clk.resets != 0 {
		t.Errorf("the re-anchor counted as %d resets", a.clk.resets)
	}
}

// TestInputClockLiveRestart: a live source that restarts its clock after
// 2 s away continues 2 s later on the output (the filler covered them),
// its other stream on the same offset.
func TestInputClockLiveRestart(t *testing.T) {
	a := newAVClock(true)
	now := time.Unix(1000, 0)
	a.video.now = func() time.Time { return now }
	a.audio.now = a.video.now
	for k := 0; k < 30; k++ {
		a.push(true, 50+float64(k)/30)
		a.push(false, 50.01+float64(k)/30)
		now = now.Add(time.Second / 30)
	}
	now = now.Add(2 * time.Second)
	v := a.push(true, 0) // a new publisher, from zero
	au := a.push(false, 0.01)
	if want := 50 + 29.0/30 + 2 + 1.0/30; math.Abs(v-want) > 1e-3 {
		t.Errorf("restart at output %.4f s, want %.4f (after the real gap)", v, want)
	}
	if math.Abs(au-v-0.01) > 1e-4 {
		t.Errorf("A/V offset %.4f s after the restart, want 0.01", au-v)
	}
}
