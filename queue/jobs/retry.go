package jobs

import "time"

// RetryPolicy paces attempts at something that failed: a job on its node,
// and a live input inside its worker. The delay starts at First, doubles
// up to Max, and an attempt that ran StableAfter starts the count again.
type RetryPolicy struct {
	First, Max  time.Duration
	StableAfter time.Duration
}

// DefaultRetryPolicy: 1 s, doubling to 30 s, reset after 10 s of running.
var DefaultRetryPolicy = RetryPolicy{First: time.Second, Max: 30 * time.Second, StableAfter: 10 * time.Second}

// Delay is the wait before attempt number failures+1.
func (p RetryPolicy) Delay(failures int) time.Duration {
	d := p.First
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Stable reports whether an attempt that ran for d resets the count.
func (p RetryPolicy) Stable(d time.Duration) bool { return d >= p.StableAfter }

// OrDefault fills the zero fields from DefaultRetryPolicy.
func (p RetryPolicy) OrDefault() RetryPolicy {
	if p.First <= 0 {
		p.First = DefaultRetryPolicy.First
	}
	if p.Max <= 0 {
		p.Max = DefaultRetryPolicy.Max
	}
	if p.StableAfter <= 0 {
		p.StableAfter = DefaultRetryPolicy.StableAfter
	}
	return p
}
