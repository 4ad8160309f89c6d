package hls

import (
	"slices"
	"sync"
	"time"
)

// latencyWindowSize holds about 20 s of a three-rung ladder at 30 fps.
const latencyWindowSize = 2048

// latencyWindow keeps the latest frame latencies of a stream: the time from
// a frame's Ingest to the moment the part that holds it could be downloaded.
type latencyWindow struct {
	mu      sync.Mutex
	samples [latencyWindowSize]time.Duration
	n, next int
}

func (w *latencyWindow) add(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples[w.next] = d
	w.next = (w.next + 1) % len(w.samples)
	w.n = min(w.n+1, len(w.samples))
}

// percentiles returns the median and the 95th percentile of the window.
func (w *latencyWindow) percentiles() (p50, p95 time.Duration, ok bool) {
	w.mu.Lock()
	s := slices.Clone(w.samples[:w.n])
	w.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, false
	}
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.95), true
}
