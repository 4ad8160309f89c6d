package hls

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

var errGateAbandoned = errors.New("a rung ended before the stream started")

// startGate makes every muxer of a stream begin on the same IDR. gohlslib
// numbers segments from its first IDR on, so if one rung's muxer started a
// GOP later than another, the same media sequence number would cover
// different media time on the two rungs for the whole life of the stream.
// Each rung's feeder reports the first two keyframes its reader saw; the
// stream starts at the latest first keyframe, which every reader has read
// (they were all subscribed before any of them read), and the GOP is the
// distance between the two.
type startGate struct {
	mu       sync.Mutex
	want     int
	reported int
	start    int64 // 90 kHz
	gop      int64
	frame    int64 // longest frame interval of all rungs
	lcm      int64 // least common multiple of the rungs' frame intervals
	done     chan struct{}
	err      error
}

func newStartGate(rungs int) *startGate {
	return &startGate{want: rungs, done: make(chan struct{})}
}

// report adds one rung's first keyframes and frame interval (90 kHz ticks),
// and the ladder's GOP when the track says it (0 when it does not).
func (g *startGate) report(key1, key2, frame, knownGOP int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil || g.reported == g.want {
		return
	}
	g.start = max(g.start, key1)
	gop := key2 - key1
	if knownGOP > 0 {
		// The ladder's GOP: a keyframe forced right after the first one
		// (a viewer or a follower joining) must not shrink the segments.
		gop = knownGOP
	}
	if g.gop == 0 || gop < g.gop {
		// A keyframe forced in between (RequestKeyframe) makes a shorter
		// distance; the smaller one keeps segments within one GOP.
		g.gop = gop
	}
	g.frame = max(g.frame, frame)
	if g.lcm == 0 {
		g.lcm = frame
	} else {
		g.lcm = lcm(g.lcm, frame)
	}
	g.reported++
	if g.reported == g.want {
		close(g.done)
	}
}

// abandon releases the other feeders when one ends before reporting.
func (g *startGate) abandon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil && g.reported < g.want {
		g.err = errGateAbandoned
		close(g.done)
	}
}

// wait returns the stream's timing once every rung reported.
func (g *startGate) wait(ctx context.Context, partTarget time.Duration) (timing, error) {
	select {
	case <-g.done:
	case <-ctx.Done():
		return timing{}, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return timing{}, g.err
	}
	return newTiming(g.start, g.gop, g.frame, g.lcm, partTarget), nil
}

// timing is what every muxer of a stream is configured with, identical on
// all rungs so that they cut segments and parts at the same media time.
type timing struct {
	start      int64         // PTS of the first IDR fed, 90 kHz
	gop        int64         // 90 kHz
	segmentMin time.Duration // gohlslib SegmentMinDuration
	partMin    time.Duration // gohlslib PartMinDuration
	part       int64         // the part duration this gives, 90 kHz
	frame      int64         // longest frame interval of all rungs, 90 kHz
}

func newTiming(start, gop, frame, frameLCM int64, partTarget time.Duration) timing {
	t := timing{start: start, gop: gop, frame: frame}
	// gohlslib cuts a segment at the first IDR at least SegmentMinDuration
	// after the segment's start. One GOP minus a frame and a half cuts at
	// every GOP-grid IDR even when a non-integer frame rate puts one a frame
	// early, and ignores keyframes forced in between (RequestKeyframe),
	// which land on every rung alike but would make short segments.
	t.segmentMin = ticksDuration(max(gop-frame*3/2, frame))
	// Parts are cut at the first frame at least PartMinDuration after the
	// part's start, so a part is a whole number of frames. To give every
	// rung the same part boundaries, the part must be a whole number of
	// frames on every rung: a multiple of the frame intervals' LCM. If that
	// is far off the target (odd frame-rate mixes), a multiple of the
	// longest frame interval still keeps the rungs close.
	target := durationTicks(partTarget)
	unit := frameLCM
	if unit <= 0 || roundUp(target, unit) > 2*target {
		unit = frame
	}
	t.part = roundUp(target, unit)
	// One millisecond less than the exact part: gohlslib converts 90 kHz to
	// nanoseconds with truncation, and its part-duration check would find
	// e.g. 3 × 66.666666 ms "shorter" than 200 ms and stretch the parts.
	t.partMin = ticksDuration(t.part) - time.Millisecond
	return t
}

// segmentTarget is the segment duration rounded up to whole seconds, as in
// EXT-X-TARGETDURATION.
func (t timing) segmentTarget() time.Duration {
	return max(time.Second, ticksDuration(roundUp(t.gop, pipeline.VideoClockRate)))
}

// ticksDuration and durationTicks split the conversion so that it does
// not overflow int64 past 28 hours of 90 kHz media time (t × 10⁹ would):
// streams run for days.
func ticksDuration(t int64) time.Duration {
	const r = pipeline.VideoClockRate
	return time.Duration(t/r)*time.Second + time.Duration(t%r)*time.Second/r
}

func durationTicks(d time.Duration) int64 {
	const s = int64(time.Second)
	return int64(d)/s*pipeline.VideoClockRate + int64(d)%s*pipeline.VideoClockRate/s
}

func roundUp(v, unit int64) int64 {
	if unit <= 0 {
		return v
	}
	return (v + unit - 1) / unit * unit
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func lcm(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return max(a, b)
	}
	return a / gcd(a, b) * b
}
