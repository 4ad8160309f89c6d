package webrtc

import (
	"sync"
	"time"
)

// Reasons a keyframe is asked for; they label KeyframeStats.Requests.
const (
	keyReasonJoin   = "join"   // a viewer connected
	keyReasonPLI    = "pli"    // a viewer sent PLI or FIR
	keyReasonSwitch = "switch" // a viewer moves to another rung
	keyReasonPin    = "pin"    // a viewer pinned a rung
	keyReasonDrop   = "drop"   // a viewer's queue overflowed and waits for an IDR
)

// keyframeLimiter coalesces the keyframe requests of one stream's viewers
// into at most one forced IDR per interval. A forced IDR lands on every rung
// (Job.RequestKeyframe), which also raises the bitrate of every rung and of
// the HLS output for a moment, so no single viewer may trigger them freely.
// A request inside the interval is not lost: it is deferred to the end of
// the interval, and every request up to then rides on that one IDR.
type keyframeLimiter struct {
	force    func()
	interval time.Duration

	mu        sync.Mutex
	last      time.Time // when the last IDR was forced
	pending   *time.Timer
	closed    bool
	requests  map[string]uint64
	forced    uint64
	coalesced uint64
}

func newKeyframeLimiter(force func(), interval time.Duration) *keyframeLimiter {
	return &keyframeLimiter{force: force, interval: interval, requests: map[string]uint64{}}
}

// request asks for an IDR soon. It never blocks on the encoder.
func (k *keyframeLimiter) request(reason string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	k.requests[reason]++
	if k.pending != nil {
		k.coalesced++
		return
	}
	wait := k.interval - time.Since(k.last)
	if wait <= 0 {
		k.fireLocked()
		return
	}
	k.coalesced++
	k.pending = time.AfterFunc(wait, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.pending = nil
		if !k.closed {
			k.fireLocked()
		}
	})
}

func (k *keyframeLimiter) fireLocked() {
	k.last = time.Now()
	k.forced++
	k.force()
}

// stop cancels a deferred IDR; later requests are ignored.
func (k *keyframeLimiter) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	if k.pending != nil {
		k.pending.Stop()
		k.pending = nil
	}
}

func (k *keyframeLimiter) stats() KeyframeStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	req := make(map[string]uint64, len(k.requests))
	for r, n := range k.requests {
		req[r] = n
	}
	return KeyframeStats{Requests: req, Forced: k.forced, Coalesced: k.coalesced}
}
