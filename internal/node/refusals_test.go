package node

import (
	"fmt"
	"testing"
	"time"
)

// TestRefusalLimiter: a host refused maxFailures times within the window is
// refused at once until a window after its last failure; the table is bounded.
func TestRefusalLimiter(t *testing.T) {
	l := newRefusalLimiter(3, time.Minute, 4)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		if b, _ := l.blocked("10.0.0.1", t0); b {
			t.Fatalf("blocked after %d failures", i)
		}
		l.failed("10.0.0.1", t0.Add(time.Duration(i)*time.Second))
	}
	b, left := l.blocked("10.0.0.1", t0.Add(3*time.Second))
	if !b || left != 59*time.Second {
		t.Fatalf("after 3 failures: blocked %v for %s, want 59s (a minute after the last)", b, left)
	}
	if b, _ := l.blocked("10.0.0.2", t0); b {
		t.Fatal("another host is blocked")
	}
	if b, _ := l.blocked("10.0.0.1", t0.Add(2*time.Second+time.Minute)); b {
		t.Fatal("still blocked a window after the last failure")
	}
	l.failed("10.0.0.3", t0)
	l.succeeded("10.0.0.3")
	if len(l.hosts) != 0 {
		t.Fatalf("%d hosts remembered, want 0", len(l.hosts))
	}
	for i := range 10 { // bounded: the stalest host goes
		l.failed(fmt.Sprintf("10.1.0.%d", i), t0.Add(time.Duration(i)*time.Second))
	}
	if len(l.hosts) > 4 {
		t.Fatalf("%d hosts remembered, at most 4", len(l.hosts))
	}
	if _, ok := l.hosts["10.1.0.9"]; !ok {
		t.Fatal("the newest host was evicted")
	}
}
