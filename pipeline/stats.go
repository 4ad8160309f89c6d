package pipeline

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBuckets are the upper bounds of the latency histogram: 100 µs to
// about 100 s, 25% apart, so percentiles are within 12% of the true value.
var latencyBuckets = func() []time.Duration {
	var b []time.Duration
	for d := 100 * time.Microsecond; d < 100*time.Second; d = d * 5 / 4 {
		b = append(b, d)
	}
	return b
}()

// Histogram counts durations in fixed exponential buckets. Safe for
// concurrent use without locks.
type Histogram struct {
	counts [80]atomic.Uint64
	total  atomic.Uint64
	sumNs  atomic.Int64
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for i < len(latencyBuckets) && d > latencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.total.Add(1)
	h.sumNs.Add(int64(d))
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Mean returns the average observation.
func (h *Histogram) Mean() time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sumNs.Load() / int64(n))
}

// Quantile returns the upper bound of the bucket holding quantile q (0..1).
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			if i < len(latencyBuckets) {
				return latencyBuckets[i]
			}
			return latencyBuckets[len(latencyBuckets)-1]
		}
	}
	return latencyBuckets[len(latencyBuckets)-1]
}

// StageStats counts what one pipeline stage did. Stages update it from their
// own goroutine; readers take Snapshot from any goroutine.
type StageStats struct {
	Name string

	frames  atomic.Uint64
	dropped atomic.Uint64
	busyNs  atomic.Int64
	// Latency is the time from a frame's ingest to this stage's output.
	Latency Histogram
}

// Done records one frame out of the stage: ingest is when its source entered
// the pipeline (zero if unknown), busy the time the stage spent on it.
func (s *StageStats) Done(ingest time.Time, busy time.Duration) {
	s.frames.Add(1)
	s.busyNs.Add(int64(busy))
	if !ingest.IsZero() {
		s.Latency.Observe(time.Since(ingest))
	}
}

// Busy adds processing time not tied to one output frame.
func (s *StageStats) Busy(d time.Duration) { s.busyNs.Add(int64(d)) }

// Drop counts one frame the stage discarded.
func (s *StageStats) Drop() { s.dropped.Add(1) }

// StageSnapshot is a point-in-time copy of StageStats.
type StageSnapshot struct {
	Name       string        `json:"name"`
	Frames     uint64        `json:"frames"`
	Dropped    uint64        `json:"dropped"`
	Busy       time.Duration `json:"busy_ns"`
	LatencyP50 time.Duration `json:"latency_p50_ns"`
	LatencyP95 time.Duration `json:"latency_p95_ns"`
}

// Snapshot copies the counters.
func (s *StageStats) Snapshot() StageSnapshot {
	return StageSnapshot{
		Name:       s.Name,
		Frames:     s.frames.Load(),
		Dropped:    s.dropped.Load(),
		Busy:       time.Duration(s.busyNs.Load()),
		LatencyP50: s.Latency.Quantile(0.50),
		LatencyP95: s.Latency.Quantile(0.95),
	}
}

// RateMeter measures frames and bytes per second over a sliding window of
// whole seconds, plus totals.
type RateMeter struct {
	mu      sync.Mutex
	window  int
	slots   []rateSlot
	frames  uint64
	bytes   uint64
	first   time.Time
	lastSec int64
}

type rateSlot struct {
	sec    int64
	frames uint64
	bytes  uint64
}

// NewRateMeter returns a meter averaging over the given number of seconds.
func NewRateMeter(windowSeconds int) *RateMeter {
	if windowSeconds < 1 {
		windowSeconds = 1
	}
	return &RateMeter{window: windowSeconds, slots: make([]rateSlot, windowSeconds+1)}
}

// Add records one frame of n bytes at time now.
func (m *RateMeter) Add(n int, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.first.IsZero() {
		m.first = now
	}
	sec := now.Unix()
	s := &m.slots[sec%int64(len(m.slots))]
	if s.sec != sec {
		*s = rateSlot{sec: sec}
	}
	s.frames++
	s.bytes += uint64(n)
	m.frames++
	m.bytes += uint64(n)
	m.lastSec = sec
}

// Rate returns frames and bits per second over the last complete seconds.
func (m *RateMeter) Rate(now time.Time) (fps, bps float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := now.Unix()
	var frames, bytes uint64
	for _, s := range m.slots {
		if s.sec < cur && s.sec >= cur-int64(m.window) {
			frames += s.frames
			bytes += s.bytes
		}
	}
	span := float64(m.window)
	if !m.first.IsZero() {
		// Early on, average over the seconds that exist.
		if age := float64(cur - m.first.Unix()); age < span {
			span = age
		}
	}
	if span <= 0 {
		return 0, 0
	}
	return float64(frames) / span, float64(bytes*8) / span
}

// Totals returns the frames and bytes recorded since the start.
func (m *RateMeter) Totals() (frames, bytes uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.frames, m.bytes
}
