package pipeline

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// Reasons a keyframe is asked for (Source.RequestKeyframe). They label the
// counters in KeyframeStats and Prometheus, so the set is closed: anything
// else counts as KeyframeOther (KeyframeReason).
const (
	KeyframeJoin     = "join"     // a WebRTC viewer connected
	KeyframePLI      = "pli"      // a WebRTC viewer sent PLI or FIR
	KeyframeSwitch   = "switch"   // a WebRTC viewer moves to another rung
	KeyframePin      = "pin"      // a WebRTC viewer pinned a rung
	KeyframeDrop     = "drop"     // a reader's buffer overflowed; it waits for an IDR
	KeyframeHLS      = "hls"      // an HLS muxer lost packets and waits for an IDR
	KeyframeFollower = "follower" // a relay follower joined or lost messages
	KeyframeFailover = "failover" // a follower moved to a new publisher of the stream
	KeyframeSource   = "source"   // a transcoder waits for its pushed source's first keyframe
	KeyframeOther    = "other"    // an unknown reason (an old peer, a foreign one)
)

var keyframeReasons = []string{KeyframeJoin, KeyframePLI, KeyframeSwitch, KeyframePin, KeyframeDrop,
	KeyframeHLS, KeyframeFollower, KeyframeFailover, KeyframeSource, KeyframeOther}

// KeyframeReasons lists every reason KeyframeReason returns.
func KeyframeReasons() []string { return slices.Clone(keyframeReasons) }

// KeyframeReason returns reason when it is one of the Keyframe* reasons and
// KeyframeOther otherwise, so that what comes from the wire cannot grow a
// label set.
func KeyframeReason(reason string) string {
	if slices.Contains(keyframeReasons, reason) {
		return reason
	}
	return KeyframeOther
}

// KeyframeStats are a transcoder's keyframe budget counters (SourceStats):
// every request is either Forced (an IDR on every rung, spaced by the job's
// minimum interval) or Coalesced (it rides on an IDR already due: a forced
// one pending or the next GOP boundary).
type KeyframeStats struct {
	Requests  map[string]uint64 `json:"requests"` // by reason
	Forced    uint64            `json:"forced"`
	Coalesced uint64            `json:"coalesced"`
}

// KeyframeThrottleStats count what a KeyframeThrottle saw: Forwarded
// requests were passed on, Coalesced ones rode on one passed on.
type KeyframeThrottleStats struct {
	Requests  map[string]uint64 `json:"requests"` // by reason
	Forwarded uint64            `json:"forwarded"`
	Coalesced uint64            `json:"coalesced"`
}

// KeyframeThrottle passes keyframe requests on at most once per reason per
// interval, so that a burst (many viewers, a lossy one's PLIs) does not
// become a flood of control messages. It sets no keyframe policy: the
// transcoder's budget decides which requests become IDRs. A request inside
// the interval is not lost: one is passed on at the interval's end for all
// of them.
type KeyframeThrottle struct {
	forward  func(reason string)
	interval time.Duration

	mu      sync.Mutex
	last    map[string]time.Time
	pending map[string]*time.Timer
	closed  bool
	stats   KeyframeThrottleStats
}

// NewKeyframeThrottle returns a throttle that calls forward, never with its
// lock held (a deferred call may still be running when Stop returns).
func NewKeyframeThrottle(forward func(reason string), interval time.Duration) *KeyframeThrottle {
	return &KeyframeThrottle{forward: forward, interval: interval, last: map[string]time.Time{},
		pending: map[string]*time.Timer{}, stats: KeyframeThrottleStats{Requests: map[string]uint64{}}}
}

// Request passes reason on now or at the end of its interval. It never
// blocks on the forward of a deferred request.
func (k *KeyframeThrottle) Request(reason string) {
	reason = KeyframeReason(reason)
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.stats.Requests[reason]++
	if k.pending[reason] != nil {
		k.stats.Coalesced++
		k.mu.Unlock()
		return
	}
	wait := k.interval - time.Since(k.last[reason])
	if wait <= 0 {
		k.last[reason] = time.Now()
		k.stats.Forwarded++
		k.mu.Unlock()
		k.forward(reason)
		return
	}
	// This request is the one passed on at the interval's end; the next
	// ones ride on it.
	k.pending[reason] = time.AfterFunc(wait, func() {
		k.mu.Lock()
		if k.closed {
			k.mu.Unlock()
			return
		}
		delete(k.pending, reason)
		k.last[reason] = time.Now()
		k.stats.Forwarded++
		k.mu.Unlock()
		k.forward(reason)
	})
	k.mu.Unlock()
}

// Stop cancels deferred requests; later ones are ignored.
func (k *KeyframeThrottle) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	for r, t := range k.pending {
		t.Stop()
		delete(k.pending, r)
	}
}

// Stats returns a snapshot of the counters.
func (k *KeyframeThrottle) Stats() KeyframeThrottleStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.stats
	st.Requests = maps.Clone(st.Requests)
	return st
}
