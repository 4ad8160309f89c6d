package pipeline

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// forwarded records what a throttle passes on.
type forwarded struct {
	mu      sync.Mutex
	reasons []string
}

func (f *forwarded) add(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reasons = append(f.reasons, reason)
}

func (f *forwarded) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reasons)
}

// TestKeyframeThrottle: a burst passes one request per reason on at once
// and one more per reason at the end of the interval; unknown reasons count
// as "other"; after a quiet interval a request goes at once.
func TestKeyframeThrottle(t *testing.T) {
	var f forwarded
	k := NewKeyframeThrottle(f.add, 200*time.Millisecond)
	defer k.Stop()
	start := time.Now()
	for i := range 100 {
		k.Request([]string{KeyframePLI, KeyframeJoin}[i%2])
	}
	k.Request("bogus")
	if got := f.get(); !slices.Equal(got, []string{KeyframePLI, KeyframeJoin, KeyframeOther}) {
		t.Fatalf("passed on at once %v, want one per reason", got)
	}
	testutil.Eventually(t, time.Second, "the deferred requests", func() bool { return len(f.get()) == 5 })
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Fatalf("deferred requests after %s, want the 200ms interval", d)
	}
	st := k.Stats()
	if st.Forwarded != 5 || st.Coalesced != 96 || st.Requests[KeyframePLI] != 50 || st.Requests[KeyframeJoin] != 50 || st.Requests[KeyframeOther] != 1 {
		t.Fatalf("stats %+v", st)
	}
	last := time.Now()
	testutil.Eventually(t, time.Second, "a quiet interval", func() bool { return time.Since(last) > 250*time.Millisecond })
	k.Request(KeyframeSwitch)
	k.Request(KeyframePLI)
	if got := f.get(); len(got) != 7 {
		t.Fatalf("passed on %v: requests after a quiet interval must go at once", got)
	}
}

func TestKeyframeThrottleStopCancelsDeferred(t *testing.T) {
	var f forwarded
	k := NewKeyframeThrottle(f.add, time.Hour)
	k.Request(KeyframeJoin)
	k.Request(KeyframeJoin) // deferred
	k.Stop()
	k.Request(KeyframeJoin) // ignored
	k.mu.Lock()
	pending := len(k.pending)
	k.mu.Unlock()
	if pending != 0 || len(f.get()) != 1 || k.Stats().Requests[KeyframeJoin] != 2 {
		t.Fatalf("%d pending, passed on %v, stats %+v: want the deferred one cancelled, the last ignored", pending, f.get(), k.Stats())
	}
}

func TestKeyframeReasonIsBounded(t *testing.T) {
	for _, r := range KeyframeReasons() {
		if KeyframeReason(r) != r {
			t.Errorf("KeyframeReason(%q) = %q", r, KeyframeReason(r))
		}
	}
	for _, r := range []string{"", "PLI", "pli ", "x"} {
		if KeyframeReason(r) != KeyframeOther {
			t.Errorf("KeyframeReason(%q) = %q, want other", r, KeyframeReason(r))
		}
	}
}
