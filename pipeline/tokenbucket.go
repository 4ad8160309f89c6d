package pipeline

import "time"

// TokenBucket is a rate limit: Rate tokens a second, at most Burst saved
// up. A bucket starts full. It is not safe for concurrent use: its owner
// holds the lock that guards it.
type TokenBucket struct {
	Rate, Burst float64
	tokens      float64
	at          time.Time
}

// NewTokenBucket returns a full bucket of rate tokens a second and burst
// at most.
func NewTokenBucket(rate, burst float64) TokenBucket {
	return TokenBucket{Rate: rate, Burst: burst}
}

// Take spends one token at now, if there is one.
func (b *TokenBucket) Take(now time.Time) bool {
	if b.at.IsZero() {
		b.tokens = b.Burst
	} else if d := now.Sub(b.at); d > 0 {
		b.tokens = min(b.Burst, b.tokens+d.Seconds()*b.Rate)
	}
	if now.After(b.at) {
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Idle reports whether the bucket was last used more than d before now
// (a full bucket again, which a per-client map may forget).
func (b *TokenBucket) Idle(now time.Time, d time.Duration) bool { return now.Sub(b.at) > d }
