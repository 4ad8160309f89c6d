package webrtc

import (
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Reasons a keyframe is asked for; they label KeyframeStats.Requests and,
// passed on, the job's own counters.
const (
	keyReasonJoin   = pipeline.KeyframeJoin   // a viewer connected
	keyReasonPLI    = pipeline.KeyframePLI    // a viewer sent PLI or FIR
	keyReasonSwitch = pipeline.KeyframeSwitch // a viewer moves to another rung
	keyReasonPin    = pipeline.KeyframePin    // a viewer pinned a rung
	keyReasonDrop   = pipeline.KeyframeDrop   // a viewer's queue or the stream's reader overflowed
)

// keyframeLimiter passes one stream's keyframe requests on to its job with
// their reasons. The job's keyframe budget (the transcoder's) decides which
// become IDRs; here they are only counted and thinned to one per reason per
// interval (keyframe_min_interval), so that a lossy viewer's PLIs do not
// flood the control subject. A request inside the interval rides on one
// passed on at its end.
type keyframeLimiter struct {
	throttle *pipeline.KeyframeThrottle
}

func newKeyframeLimiter(forward func(reason string), interval time.Duration) *keyframeLimiter {
	return &keyframeLimiter{throttle: pipeline.NewKeyframeThrottle(forward, interval)}
}

// request asks the job for an IDR for reason. It never blocks on the encoder.
func (k *keyframeLimiter) request(reason string) { k.throttle.Request(reason) }

// stop cancels deferred requests; later ones are ignored.
func (k *keyframeLimiter) stop() { k.throttle.Stop() }

func (k *keyframeLimiter) stats() KeyframeStats { return k.throttle.Stats() }
