package webrtc

import (
	"testing"
	"time"
)

// abrRun feeds an abrController one input per 100 ms tick.
type abrRun struct {
	t   *testing.T
	a   *abrController
	now time.Time
}

func newABRRun(t *testing.T, initial int) *abrRun {
	var c Config
	c.Defaults()
	// needs of smallLadder: 700k/450k/250k video + 48k audio
	return &abrRun{t: t, a: newABRController(c.ABR, []int{748_000, 498_000, 298_000}, initial), now: time.Unix(1000, 0)}
}

// feed runs ticks for d with estimate est and loss, returning every
// decision that changed the rung and the last decision.
func (r *abrRun) feed(d time.Duration, est int, loss float64) (switches []abrDecision, last abrDecision) {
	for end := r.now.Add(d); r.now.Before(end); r.now = r.now.Add(abrTick) {
		last = r.a.tick(abrInput{now: r.now, estimate: est, loss: loss})
		if last.reason != "" {
			switches = append(switches, last)
		}
	}
	return switches, last
}

func TestABRMovesDownOnCongestionAfterHold(t *testing.T) {
	r := newABRRun(t, 0)
	if sw, _ := r.feed(2*time.Second, 1_500_000, 0); len(sw) != 0 {
		t.Fatalf("switched on a comfortable estimate: %+v", sw)
	}
	// The estimator signals overuse: 0.85 × 650k got through.
	sw, _ := r.feed(300*time.Millisecond, 552_000, 0)
	if len(sw) != 0 {
		t.Fatalf("moved before down_hold (400ms): %+v", sw)
	}
	sw, _ = r.feed(300*time.Millisecond, 552_000, 0)
	if len(sw) != 1 || sw[0].target != 1 || sw[0].reason != ReasonCongestion {
		t.Fatalf("want one move to 270p for congestion, got %+v", sw)
	}
}

func TestABRJumpsToTheRungTheEstimateCovers(t *testing.T) {
	r := newABRRun(t, 0)
	r.feed(time.Second, 1_500_000, 0)
	sw, _ := r.feed(time.Second, 300_000, 0)
	if len(sw) != 1 || sw[0].target != 2 {
		t.Fatalf("want a direct move to 180p, got %+v", sw)
	}
}

func TestABRIgnoresOneOveruseAndALowRisingEstimate(t *testing.T) {
	r := newABRRun(t, 0)
	r.feed(time.Second, 1_500_000, 0)
	// One overuse on a link that carries the rung: 0.85 × 748k.
	if sw, _ := r.feed(3*time.Second, 636_000, 0); len(sw) != 0 {
		t.Fatalf("moved on a single overuse: %+v", sw)
	}
	// After a probe moved up the estimate may still be low, but rising:
	// GCC catching up, not congestion.
	r = newABRRun(t, 0)
	for est := 400_000; est < 700_000; est += 5_000 {
		if sw, _ := r.feed(abrTick, est, 0); len(sw) != 0 {
			t.Fatalf("moved down on a rising estimate %d: %+v", est, sw)
		}
	}
}

func TestABRMovesDownOnLoss(t *testing.T) {
	r := newABRRun(t, 0)
	r.feed(time.Second, 1_500_000, 0)
	sw, _ := r.feed(time.Second, 1_500_000, 0.12)
	if len(sw) != 1 || sw[0].target != 1 || sw[0].reason != ReasonLoss {
		t.Fatalf("want one move down for loss, got %+v", sw)
	}
	// Loss that persists moves down again, after it had time to clear.
	sw, _ = r.feed(2*time.Second, 1_500_000, 0.12)
	if len(sw) != 1 || sw[0].target != 2 {
		t.Fatalf("want a second move down after 2 s of loss, got %+v", sw)
	}
}

func TestABRProbesBeforeMovingUp(t *testing.T) {
	r := newABRRun(t, 2)
	_, last := r.feed(900*time.Millisecond, 400_000, 0)
	if last.probeBPS != 0 {
		t.Fatalf("probed before up_hold: %+v", last)
	}
	_, last = r.feed(200*time.Millisecond, 410_000, 0)
	if last.probeBPS != 498_000-298_000 {
		t.Fatalf("want a probe padding up to 270p's need, got %+v", last)
	}
	sw, _ := r.feed(time.Second, 420_000, 0)
	if len(sw) != 1 || sw[0].target != 1 || sw[0].reason != ReasonProbe || sw[0].probeEnd != "up" {
		t.Fatalf("want a move up after a clean probe, got %+v", sw)
	}
}

func TestABRFailedProbesBackOff(t *testing.T) {
	r := newABRRun(t, 1)
	est := 600_000
	var starts []time.Duration
	t0 := r.now
	for r.now.Sub(t0) < 20*time.Second {
		d := r.a.tick(abrInput{now: r.now, estimate: est, loss: 0})
		if d.reason != "" {
			t.Fatalf("switched during failing probes: %+v", d)
		}
		if d.probeBPS > 0 && !r.a.probing {
			t.Fatal("padding without a probe")
		}
		if d.probeBPS > 0 && (len(starts) == 0 || r.now.Sub(t0)-starts[len(starts)-1] > 200*time.Millisecond) {
			starts = append(starts, r.now.Sub(t0))
			// The link does not carry the padding: the estimate falls
			// 300 ms into the probe.
			r.now = r.now.Add(300 * time.Millisecond)
			est = 400_000
			if d := r.a.tick(abrInput{now: r.now, estimate: est}); d.probeEnd != "estimate" || d.probeBPS != 0 {
				t.Fatalf("want the probe cancelled by the fall, got %+v", d)
			}
			est = 600_000 // recovers
		}
		r.now = r.now.Add(abrTick)
	}
	if len(starts) < 4 {
		t.Fatalf("probe starts %v: want repeated probes", starts)
	}
	var gaps []time.Duration
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, starts[i]-starts[i-1])
	}
	t.Logf("probe starts %v, gaps %v", starts, gaps)
	// Back-off 1s, 2s, 4s, 4s after each failure, but never sooner than
	// the 2 s recovery plus up_hold.
	for i, g := range gaps {
		if i > 0 && g < gaps[i-1]-200*time.Millisecond {
			t.Errorf("gaps %v shrink", gaps)
		}
		if g > 4*time.Second+time.Second+500*time.Millisecond {
			t.Errorf("gap %s exceeds probe_backoff_max plus up_hold", g)
		}
	}
}

func TestABRFailedUpSwitchBacksOff(t *testing.T) {
	r := newABRRun(t, 1)
	r.feed(1100*time.Millisecond, 600_000, 0)
	sw, _ := r.feed(time.Second, 610_000, 0)
	if len(sw) != 1 || sw[0].target != 0 {
		t.Fatalf("want the probe to move up, got %+v", sw)
	}
	// 360p does not hold: congestion right after the move.
	sw, _ = r.feed(time.Second, 500_000, 0)
	if len(sw) != 1 || sw[0].target != 1 {
		t.Fatalf("want a move back down, got %+v", sw)
	}
	if !r.a.nextProbe.After(r.now) {
		t.Fatalf("a move down right after a move up must delay the next probe")
	}
}

func TestInitialRung(t *testing.T) {
	needs := []int{2_900_000, 1_500_000, 900_000}
	for _, ca := range []struct{ bps, want int }{{5_000_000, 0}, {2_500_000, 1}, {1_500_000, 1}, {100_000, 2}} {
		if got := initialRung(needs, ca.bps); got != ca.want {
			t.Errorf("initialRung(%d) = %d, want %d", ca.bps, got, ca.want)
		}
	}
}
