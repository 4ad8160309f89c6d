package pipeline

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	b := NewTokenBucket(10, 3)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !b.Take(now) {
			t.Fatalf("take %d of a full bucket of 3 refused", i)
		}
	}
	if b.Take(now) {
		t.Fatal("a fourth take at the same instant was allowed")
	}
	// 10 a second: one token back after 100 ms, never more than the burst.
	if !b.Take(now.Add(100 * time.Millisecond)) {
		t.Fatal("no token 100 ms later")
	}
	if b.Take(now.Add(100 * time.Millisecond)) {
		t.Fatal("two tokens from 100 ms")
	}
	later := now.Add(time.Hour)
	n := 0
	for b.Take(later) {
		n++
	}
	if n != 3 {
		t.Fatalf("after an hour idle %d tokens, want the burst of 3", n)
	}
	// A clock that steps back refills nothing and breaks nothing.
	if b.Take(now) {
		t.Fatal("a take at an earlier time found a token")
	}
	if !b.Idle(later.Add(2*time.Minute), time.Minute) || b.Idle(later, time.Minute) {
		t.Fatal("Idle wrong")
	}
}
