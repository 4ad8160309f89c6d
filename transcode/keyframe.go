package transcode

import (
	"maps"
	"math"
	"sync"

	"github.com/prism-streaming/prism/pipeline"
)

// keyframeClock decides which frames every rung encodes as IDR, so that all
// rungs switch on the same source frame: frames whose PTS crosses a multiple
// of the GOP duration (counted from the first frame) and the first frame at or
// after a forced keyframe point. Each rung asks through its own keyframeCursor;
// the decision depends only on PTS, so rungs fed the same frames agree exactly.
//
// It is also the job's one keyframe budget: every request (viewers, HLS,
// followers, failover) goes through force, which spaces forced IDRs at least
// minInterval after the last IDR of any kind, in PTS terms, and lets the
// next GOP boundary answer a request when it comes no later.
type keyframeClock struct {
	gop         int64 // in 90 kHz ticks
	minInterval int64 // in 90 kHz ticks

	mu       sync.Mutex
	epoch    int64
	hasEpoch bool
	lastSeen int64
	// encoded is the newest PTS any rung's encoder has taken (its cursor
	// answered isKey for it); hasEncoded once one has. A forced IDR goes on
	// the frame after it, so frames already queued between the filter and
	// the encoders become the IDR instead of waiting behind it.
	encoded    int64
	hasEncoded bool
	forced     [8]int64 // recent forced keyframe points, newest last; 0 = unused
	// discont are recent source changes (a pushed stream's publisher came
	// back): the first frame at or after each is an IDR on every rung and
	// its packets carry Discontinuity. Newest last; 0 = unused.
	discont [8]int64
	stats   pipeline.KeyframeStats
}

// discontinuity marks a source change at pts: every rung puts an IDR on
// the first frame at or after it, and marks that packet. It is outside the
// budget: the new source's frames cannot wait.
func (c *keyframeClock) discontinuity(pts int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pushForcedLocked(pts)
	copy(c.discont[:], c.discont[1:])
	c.discont[len(c.discont)-1] = pts
}

// discontinuityIn reports whether a source change lies in (after, upTo].
func (c *keyframeClock) discontinuityIn(after, upTo int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.discont {
		if d != 0 && after < d && d <= upTo {
			return true
		}
	}
	return false
}

// newKeyframeClock returns a clock with IDRs every gopTicks and forced ones
// at least minIntervalTicks after the last IDR.
func newKeyframeClock(gopTicks, minIntervalTicks int64) *keyframeClock {
	return &keyframeClock{gop: gopTicks, minInterval: minIntervalTicks,
		stats: pipeline.KeyframeStats{Requests: map[string]uint64{}}}
}

// observe records a source frame's PTS before it enters the filter graph.
func (c *keyframeClock) observe(pts int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasEpoch {
		c.epoch, c.hasEpoch = pts, true
	}
	c.lastSeen = pts
}

// force asks for an IDR on every rung, for reason (already one of the
// pipeline.Keyframe* reasons). The IDR lands on the first frame at or after
// max(next frame, last IDR + minInterval), unless a forced one is pending
// or the next GOP boundary comes no later: then the request rides on that.
func (c *keyframeClock) force(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Requests[reason]++
	if !c.hasEpoch {
		c.stats.Coalesced++ // the first frame is an IDR anyway
		return
	}
	// The next frame no encoder has taken yet: the one after the most
	// advanced rung's (every other rung is behind it, so all meet at the
	// same frame); before any encoder ran, the next to enter the filter.
	next := c.lastSeen + 1
	if c.hasEncoded {
		next = c.encoded + 1
	}
	lastIDR := c.epoch + floorDiv(next-1-c.epoch, c.gop)*c.gop // the GOP boundary's
	if reason == pipeline.KeyframeSwitch {
		// A viewer moving down for congestion waits for this IDR with
		// its old rung paused: only forced IDRs space it, not the GOP's.
		lastIDR = math.MinInt64 / 2
	}
	for _, f := range c.forced {
		if f == 0 {
			continue
		}
		if f >= next {
			c.stats.Coalesced++ // one is pending already
			return
		}
		lastIDR = max(lastIDR, f)
	}
	at := max(next, lastIDR+c.minInterval)
	if nextGOP := c.epoch + (floorDiv(next-1-c.epoch, c.gop)+1)*c.gop; nextGOP <= at {
		c.stats.Coalesced++
		return
	}
	c.stats.Forced++
	c.pushForcedLocked(at)
}

func (c *keyframeClock) pushForcedLocked(at int64) {
	copy(c.forced[:], c.forced[1:])
	c.forced[len(c.forced)-1] = at
}

// keyframeStats returns a snapshot of the budget's counters.
func (c *keyframeClock) keyframeStats() pipeline.KeyframeStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Requests = maps.Clone(st.Requests)
	return st
}

// keyframeCursor is one rung's view of the clock. It sees every source
// frame, capped rung or not, so that its IDR decisions are the same as every
// other rung's; a rung with a frame-rate cap then drops the frames it does
// not encode (take), instead of FFmpeg's fps filter restamping them onto a
// grid of its own, which would put its IDRs on other source frames.
type keyframeCursor struct {
	clock   *keyframeClock
	started bool
	lastPTS int64

	// The cap: a 1/fps grid of capNum/capDen frames per second (capNum 0:
	// no cap), counted from the GOP's IDR (anchor). Restarting it at every
	// GOP boundary keeps the choice of frames the same in every GOP: 29.97
	// capped to 15 keeps every other source frame from each IDR on, where
	// a grid run from the first frame drifts by a frame every 33 s, and
	// LL-HLS parts (cut every so many frames from the segment's IDR) find
	// their boundary frame on the capped rung too. tol is half a source
	// frame, so that jittery source timestamps (RTMP's milliseconds) pick
	// the frame nearest a slot, not the one after it.
	capNum, capDen int64
	tol            int64
	anchor         int64
	lastSlot       int64 // grid slot of the last frame kept
}

// newRungCursor returns the cursor of a rung encoding at outFPS from a
// source at srcFPS (0 when unknown): capped when outFPS is below it.
func newRungCursor(clock *keyframeClock, outFPS, srcFPS float64) *keyframeCursor {
	k := &keyframeCursor{clock: clock}
	if outFPS > 0 && (srcFPS <= 0 || outFPS < srcFPS-0.01) {
		r := rationalFPS(outFPS)
		k.capNum, k.capDen = int64(r.Num()), int64(r.Den())
		if srcFPS > 0 {
			k.tol = int64(math.Round(pipeline.VideoClockRate / srcFPS / 2))
		}
	}
	return k
}

// take reports whether this rung encodes the source frame at pts and if so
// whether as an IDR. Without a cap every frame is taken. With one, a frame
// is taken when it is an IDR (GOP boundary, forced point, source change:
// the same frame on every rung) or the first frame reaching the next slot
// of the cap's grid; the decision depends only on PTS and the clock, so
// rungs with the same cap keep the same frames.
func (k *keyframeCursor) take(pts int64) (keep, key bool) {
	key, boundary := k.decide(pts)
	if k.capNum == 0 {
		return true, key
	}
	if boundary || pts < k.anchor {
		// A GOP starts (or time stepped back, which the timeline should
		// never let through: restart rather than drop until it catches up).
		k.anchor, k.lastSlot = pts, 0
		return true, key
	}
	slot := floorDiv((pts-k.anchor+k.tol)*k.capNum, pipeline.VideoClockRate*k.capDen)
	if key || slot > k.lastSlot {
		k.lastSlot = max(k.lastSlot, slot)
		return true, key
	}
	return false, false
}

// isKey reports whether the frame at pts must be an IDR on this rung.
func (k *keyframeCursor) isKey(pts int64) bool {
	key, _ := k.decide(pts)
	return key
}

// decide is isKey, and also reports whether the IDR is the first frame or
// a GOP boundary (not only a forced point).
func (k *keyframeCursor) decide(pts int64) (key, boundary bool) {
	c := k.clock
	// Reading the forced points and recording pts as taken is one step:
	// force either sees this frame taken (and picks a later one) or this
	// cursor sees its point.
	c.mu.Lock()
	epoch, forced := c.epoch, c.forced
	if !c.hasEncoded || pts > c.encoded {
		c.encoded, c.hasEncoded = pts, true
	}
	c.mu.Unlock()
	boundary = !k.started || floorDiv(pts-epoch, c.gop) > floorDiv(k.lastPTS-epoch, c.gop)
	key = boundary
	if k.started {
		for _, f := range forced {
			if f != 0 && k.lastPTS < f && f <= pts {
				key = true
			}
		}
	}
	k.started = true
	k.lastPTS = pts
	return key, boundary
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
