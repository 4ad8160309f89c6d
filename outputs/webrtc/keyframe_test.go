package webrtc

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestKeyframeLimiterCoalesces: a burst of requests from many viewers forces
// one IDR at once and one more at the end of the interval, never more.
func TestKeyframeLimiterCoalesces(t *testing.T) {
	var forced atomic.Int32
	k := newKeyframeLimiter(func() { forced.Add(1) }, 200*time.Millisecond)
	defer k.stop()
	start := time.Now()
	for i := range 100 {
		k.request([]string{keyReasonPLI, keyReasonJoin}[i%2])
	}
	if n := forced.Load(); n != 1 {
		t.Fatalf("%d IDRs forced at once, want 1", n)
	}
	testutil.Eventually(t, time.Second, "the deferred IDR", func() bool { return forced.Load() == 2 })
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Fatalf("deferred IDR after %s, want the 200ms interval", d)
	}
	st := k.stats()
	if st.Forced != 2 || st.Coalesced != 99 || st.Requests[keyReasonPLI] != 50 || st.Requests[keyReasonJoin] != 50 {
		t.Fatalf("stats %+v", st)
	}
	// Quiet for an interval: the next request is served at once.
	time.Sleep(250 * time.Millisecond)
	k.request(keyReasonSwitch)
	if forced.Load() != 3 {
		t.Fatalf("a request after a quiet interval must force at once")
	}
}

func TestKeyframeLimiterStopCancelsDeferred(t *testing.T) {
	var forced atomic.Int32
	k := newKeyframeLimiter(func() { forced.Add(1) }, 100*time.Millisecond)
	k.request(keyReasonJoin)
	k.request(keyReasonJoin) // deferred
	k.stop()
	k.request(keyReasonJoin) // ignored
	time.Sleep(200 * time.Millisecond)
	if n := forced.Load(); n != 1 {
		t.Fatalf("%d IDRs forced, want 1 (stop cancels the deferred one)", n)
	}
}
