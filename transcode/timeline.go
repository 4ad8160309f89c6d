package transcode

import (
	"math"
	"sync"
	"time"
)

// inputClock is the one clock of an input, shared by its streams'
// timelines: a timestamp jump (a source restart, a TS wrap) seen on any
// stream shifts every stream of the input by the same offset, so the A/V
// offset the source had survives the jump. Offsets are in seconds, so
// streams on different clock rates share them exactly enough (rounded to
// one unit of each).
//
// Jumps are counted in generations: the first stream to meet a jump opens
// generation n+1 with its offset; a stream still on generation n that meets
// its own jump later (interleaving: it had packets on the old base queued)
// adopts that offset instead of computing its own.
type inputClock struct {
	origin float64 // seconds subtracted: outputs start near zero

	mu   sync.Mutex
	gens []float64 // offset of each generation, seconds; gens[0] = 0
	// shift is added to every stream on top of its generation's offset: a
	// live source that paused (its clock stood still while the wall clock
	// went on) is re-anchored after the filler that covered the pause.
	shift    float64
	shiftGen int     // bumped with each re-anchor
	end      float64 // newest frame end any stream produced, seconds
	resets   int
}

func newInputClock(originSeconds float64) *inputClock {
	return &inputClock{origin: originSeconds, gens: []float64{0}}
}

func (c *inputClock) shiftGeneration() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shiftGen
}

// timeline maps one input stream's timestamps to the job's output clock:
// shifted by the input's origin and offsets, kept strictly increasing, with
// large jumps folded into a continuous timeline through the input's clock.
type timeline struct {
	clk       *inputClock
	clockRate int64   // output units per second
	gen       int     // the clock generation this stream's timestamps are on
	shiftAt   float64 // the clock's shift when last was taken
	last      int64
	lastWall  time.Time
	started   bool
	// maxGap is the largest forward jump taken at face value; larger jumps
	// and any backward jump larger than maxBack are discontinuities. A live
	// input also takes a forward jump as large as the wall-clock time since
	// the last frame (plus maxGap): a source that stalled and stamps its
	// frames from its own clock comes back where real time is.
	maxGap, maxBack int64
	live            bool
	frameDur        int64 // this stream's frame duration, to continue after a jump
	// spans: a frame lasts frameDur (audio samples), so one that starts
	// more than half a frame before the last one ends overlaps it (after
	// a reset, the new base's first frames) and is dropped; less is the
	// jitter of millisecond timestamps (RTMP).
	spans           bool
	lastDur         int64
	discontinuities int
	now             func() time.Time // for tests
}

func newTimeline(clk *inputClock, clockRate, frameDur int64, live bool) *timeline {
	t := &timeline{
		clk:       clk,
		clockRate: clockRate,
		maxGap:    10 * clockRate,
		maxBack:   clockRate,
		frameDur:  frameDur,
		live:      live,
		now:       time.Now,
	}
	if live {
		t.maxGap = clockRate // beyond what the wall clock explains
	}
	return t
}

func (t *timeline) units(sec float64) int64 { return int64(math.Round(sec * float64(t.clockRate))) }

// mapLocked converts ts on generation gen, clock locked.
func (t *timeline) mapLocked(ts int64, gen int) int64 {
	return ts + t.units(t.clk.gens[gen]+t.clk.shift-t.clk.origin)
}

// next converts a timestamp already rescaled to clockRate. ok is false when
// the frame must be dropped because it does not move time forward.
func (t *timeline) next(ts int64) (out int64, ok bool) { return t.nextAt(ts, t.now()) }

// nextAt is next for a frame whose packet arrived at now: a live input's
// forward jumps are judged against arrival times, not decode times (a
// frame-threaded decoder holds frames back across a stall).
func (t *timeline) nextAt(ts int64, now time.Time) (out int64, ok bool) {
	c := t.clk
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.shiftAt != c.shift {
		// The input was re-anchored after a stall: the shift moves this
		// stream's time too, it is no jump.
		t.last += t.units(c.shift - t.shiftAt)
		t.shiftAt = c.shift
	}
	out = t.mapLocked(ts, t.gen)
	if !t.started {
		t.started = true
		return t.accept(out, now), true
	}
	maxGap := t.maxGap
	if t.live {
		maxGap += t.units(now.Sub(t.lastWall).Seconds())
	}
	switch d := out - t.last; {
	case d > 0 && d <= maxGap:
		if t.overlaps(out) {
			return 0, false
		}
		return t.accept(out, now), true
	case d <= 0 && -d < t.maxBack:
		return 0, false // jitter or a duplicate: keep time strictly increasing
	}
	t.discontinuities++
	if t.gen+1 < len(c.gens) {
		// Another stream met this jump first: take its offset, so both
		// keep the source's A/V offset. What overlaps the old base
		// (interleaving lag) is dropped.
		t.gen++
		out = t.mapLocked(ts, t.gen)
		if out <= t.last || t.overlaps(out) {
			return 0, false
		}
		return t.accept(out, now), true
	}
	// The first stream to meet it: continue after the newest media of the
	// whole input, so no stream overlaps itself when it follows.
	target := max(t.last+t.frameDur, t.units(c.end))
	if t.live {
		// A live source that restarted (an SRT publisher's new TS): after
		// the real time it was away, which the stall filler covered.
		target = max(target, t.last+t.units(now.Sub(t.lastWall).Seconds()))
	}
	c.gens = append(c.gens, c.gens[t.gen]+float64(target-out)/float64(t.clockRate))
	c.resets++
	t.gen++
	return t.accept(target, now), true
}

// reanchor moves the whole input's timeline so that this stream's frame
// at out goes out at target, after the filler that covered a stall:
// unless another stream re-anchored since seen (one shift per stall; seen
// < 0 takes it anyway).
func (t *timeline) reanchor(out, target int64, seen int) bool {
	c := t.clk
	c.mu.Lock()
	defer c.mu.Unlock()
	if (seen >= 0 && c.shiftGen != seen) || target <= out {
		return false
	}
	c.shift += float64(target-out) / float64(t.clockRate)
	c.shiftGen++
	t.shiftAt = c.shift
	t.accept(target, t.now())
	return true
}

func (t *timeline) overlaps(out int64) bool {
	return t.spans && t.started && out < t.last+t.lastDur/2
}

func (t *timeline) accept(out int64, now time.Time) int64 {
	t.last, t.lastWall, t.lastDur = out, now, t.frameDur
	if end := float64(out+t.frameDur) / float64(t.clockRate); end > t.clk.end {
		t.clk.end = end
	}
	return out
}
