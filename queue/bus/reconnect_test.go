package bus

import (
	"testing"
	"time"
)

func TestReconnectDelayBacksOff(t *testing.T) {
	// 50ms, 100ms, ... doubling, capped at the maximum, plus jitter.
	for attempts := 1; attempts <= 10; attempts++ {
		d := reconnectDelay(attempts, 2*time.Second)
		base := min(firstReconnectDelay<<(attempts-1), 2*time.Second)
		if d < base || d > base+base/5 {
			t.Fatalf("attempt %d: %s, want %s plus up to 20%%", attempts, d, base)
		}
	}
}
