package transcode

import (
	"sync"
)

// keyframeClock decides which frames every rung encodes as IDR, so that all
// rungs switch on the same source frame: frames whose PTS crosses a multiple
// of the GOP duration (counted from the first frame) and the first frame at or
// after a forced keyframe point. Each rung asks through its own keyframeCursor;
// the decision depends only on PTS, so rungs fed the same frames agree exactly.
type keyframeClock struct {
	gop int64 // in 90 kHz ticks

	mu       sync.Mutex
	epoch    int64
	hasEpoch bool
	lastSeen int64
	forced   [8]int64 // recent forced keyframe points, newest last; 0 = unused
	// discont are recent source changes (a pushed stream's publisher came
	// back): the first frame at or after each is an IDR on every rung and
	// its packets carry Discontinuity. Newest last; 0 = unused.
	discont [8]int64
}

// discontinuity marks a source change at pts: every rung puts an IDR on
// the first frame at or after it, and marks that packet.
func (c *keyframeClock) discontinuity(pts int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(c.forced[:], c.forced[1:])
	c.forced[len(c.forced)-1] = pts
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

func newKeyframeClock(gopTicks int64) *keyframeClock {
	return &keyframeClock{gop: gopTicks}
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

// force asks for an IDR on every rung at the next source frame. Requests made
// before that frame arrives coalesce into one.
func (c *keyframeClock) force() {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.lastSeen + 1
	if newest := c.forced[len(c.forced)-1]; newest > c.lastSeen {
		return // one is already pending
	}
	copy(c.forced[:], c.forced[1:])
	c.forced[len(c.forced)-1] = at
}

type keyframeCursor struct {
	clock   *keyframeClock
	started bool
	lastPTS int64
}

// isKey reports whether the frame at pts must be an IDR on this rung.
func (k *keyframeCursor) isKey(pts int64) bool {
	c := k.clock
	c.mu.Lock()
	epoch, forced := c.epoch, c.forced
	c.mu.Unlock()
	key := !k.started || floorDiv(pts-epoch, c.gop) > floorDiv(k.lastPTS-epoch, c.gop)
	if k.started {
		for _, f := range forced {
			if f != 0 && k.lastPTS < f && f <= pts {
				key = true
			}
		}
	}
	k.started = true
	k.lastPTS = pts
	return key
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
