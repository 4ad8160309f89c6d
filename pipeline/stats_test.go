package pipeline

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 100; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	for _, ca := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.95, 95 * time.Millisecond}} {
		got := h.Quantile(ca.q)
		if got < ca.want || float64(got) > float64(ca.want)*1.25 {
			t.Errorf("q%.2f = %s, want within 25%% above %s", ca.q, got, ca.want)
		}
	}
	if h.Count() != 100 || h.Mean() != 50500*time.Microsecond {
		t.Errorf("count %d mean %s", h.Count(), h.Mean())
	}
}

func TestRateMeter(t *testing.T) {
	m := NewRateMeter(2)
	t0 := time.Unix(1000, 0)
	for s := 0; s < 4; s++ {
		for i := 0; i < 30; i++ {
			m.Add(1000, t0.Add(time.Duration(s)*time.Second+time.Duration(i)*33*time.Millisecond))
		}
	}
	fps, bps := m.Rate(t0.Add(4 * time.Second))
	if fps != 30 || bps != 240000 {
		t.Errorf("fps %.1f bps %.0f, want 30 and 240000", fps, bps)
	}
	if f, b := m.Totals(); f != 120 || b != 120000 {
		t.Errorf("totals %d %d", f, b)
	}
}

func TestStageStats(t *testing.T) {
	s := StageStats{Name: "x"}
	s.Done(time.Now().Add(-10*time.Millisecond), time.Millisecond)
	s.Done(time.Time{}, time.Millisecond)
	s.Drop()
	snap := s.Snapshot()
	if snap.Frames != 2 || snap.Dropped != 1 || snap.Busy != 2*time.Millisecond || snap.LatencyP50 < 10*time.Millisecond {
		t.Errorf("%+v", snap)
	}
}
