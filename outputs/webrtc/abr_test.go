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

// link is what the estimator reports on each tick.
type link struct {
	estimate, capacity int
	loss               float64
	overuse            bool
	queueDelay         time.Duration
}

// feed runs ticks for d with the estimator reporting l, returning every
// decision that changed the rung and the last decision.
func (r *abrRun) feed(d time.Duration, l link) (switches []abrDecision, last abrDecision) {
	for end := r.now.Add(d); r.now.Before(end); r.now = r.now.Add(abrTick) {
		last = r.a.tick(abrInput{now: r.now, estimate: l.estimate, capacity: l.capacity, loss: l.loss,
			overuse: l.overuse, queueDelay: l.queueDelay})
		if last.reason != "" {
			switches = append(switches, last)
		}
	}
	return switches, last
}

var (
	wideLink = link{estimate: 1_500_000, capacity: 100_000_000}
	// squeezed: a queue builds; the estimate was cut to 0.85 × 350k.
	squeezed = link{estimate: 300_000, capacity: 350_000, overuse: true, queueDelay: 200 * time.Millisecond}
)

func TestABRMovesDownOnCongestionAfterHold(t *testing.T) {
	r := newABRRun(t, 0)
	if sw, _ := r.feed(2*time.Second, wideLink); len(sw) != 0 {
		t.Fatalf("switched on a comfortable link: %+v", sw)
	}
	cong := link{estimate: 552_000, capacity: 650_000, overuse: true, queueDelay: 50 * time.Millisecond}
	if sw, _ := r.feed(100*time.Millisecond, cong); len(sw) != 0 {
		t.Fatalf("moved before down_hold (150ms): %+v", sw)
	}
	sw, _ := r.feed(200*time.Millisecond, cong)
	if len(sw) != 1 || sw[0].target != 1 || sw[0].reason != ReasonCongestion {
		t.Fatalf("want one move to 270p for congestion, got %+v", sw)
	}
	// A queue twice the congestion mark moves at once.
	r = newABRRun(t, 0)
	r.feed(time.Second, wideLink)
	cong.queueDelay = 2 * overuseDelay
	if sw, _ := r.feed(abrTick, cong); len(sw) != 1 || sw[0].target != 1 {
		t.Fatalf("want an immediate move on a deep queue, got %+v", sw)
	}
}

func TestABRJumpsToTheRungTheEstimateCovers(t *testing.T) {
	r := newABRRun(t, 0)
	r.feed(time.Second, wideLink)
	sw, _ := r.feed(time.Second, squeezed)
	if len(sw) != 1 || sw[0].target != 2 {
		t.Fatalf("want a direct move to 180p, got %+v", sw)
	}
}

func TestABRStaysWhenTheCutEstimateStillCoversTheRung(t *testing.T) {
	r := newABRRun(t, 0)
	r.feed(time.Second, wideLink)
	// A queue built for a moment (a keyframe on a link that carries the
	// rung): the estimate, 0.85 × 1 Mbit/s, still covers 360p.
	if sw, _ := r.feed(3*time.Second, link{estimate: 850_000, capacity: 1_000_000, overuse: true,
		queueDelay: 60 * time.Millisecond}); len(sw) != 0 {
		t.Fatalf("moved on a queue the rung fits: %+v", sw)
	}
}

func TestABRMovesDownOnLossOnly(t *testing.T) {
	r := newABRRun(t, 0)
	r.feed(time.Second, wideLink)
	// 3 % random loss is NACK's job.
	if sw, _ := r.feed(3*time.Second, link{estimate: 1_500_000, capacity: 100_000_000, loss: 0.03}); len(sw) != 0 {
		t.Fatalf("moved down on 3 %% loss: %+v", sw)
	}
	heavy := link{estimate: 1_500_000, capacity: 100_000_000, loss: 0.15}
	sw, _ := r.feed(time.Second, heavy)
	if len(sw) != 1 || sw[0].target != 1 || sw[0].reason != ReasonLoss {
		t.Fatalf("want one move down for loss, got %+v", sw)
	}
	// Loss that persists moves down again, after it had time to clear.
	sw, _ = r.feed(2*time.Second, heavy)
	if len(sw) != 1 || sw[0].target != 2 {
		t.Fatalf("want a second move down after 2 s of loss, got %+v", sw)
	}
}

func TestABRProbesBeforeMovingUp(t *testing.T) {
	r := newABRRun(t, 2)
	_, last := r.feed(900*time.Millisecond, wideLink)
	if last.probeBPS != 0 {
		t.Fatalf("probed before up_hold: %+v", last)
	}
	_, last = r.feed(200*time.Millisecond, wideLink)
	if last.probeBPS != 498_000-298_000 {
		t.Fatalf("want a probe padding up to 270p's need, got %+v", last)
	}
	sw, _ := r.feed(time.Second, wideLink)
	if len(sw) != 1 || sw[0].target != 1 || sw[0].reason != ReasonProbe || sw[0].probeEnd != "up" {
		t.Fatalf("want a move up after a clean probe, got %+v", sw)
	}
}

func TestABRDoesNotProbeANarrowLink(t *testing.T) {
	r := newABRRun(t, 2)
	// The bottleneck measures 400 kbit/s: 270p (498k) cannot fit, so
	// there is nothing to probe for, however long the link is quiet.
	for range 300 {
		if _, last := r.feed(abrTick, link{estimate: 340_000, capacity: 400_000}); last.probeBPS != 0 {
			t.Fatalf("probed a link whose capacity is below the next rung: %+v", last)
		}
	}
	// The limit goes: the next trains arrive at line rate.
	sw, _ := r.feed(2500*time.Millisecond, wideLink)
	if len(sw) != 1 || sw[0].target != 1 {
		t.Fatalf("want a probe and a move up once the capacity shows room, got %+v", sw)
	}
}

func TestABRProbeEndsWhenTheQueueGrows(t *testing.T) {
	r := newABRRun(t, 1)
	r.feed(1100*time.Millisecond, wideLink)
	if !r.a.probing {
		t.Fatal("no probe after up_hold")
	}
	// 30 ms of queue since the probe started: the padding does not fit.
	_, last := r.feed(abrTick, link{estimate: 600_000, capacity: 100_000_000, queueDelay: 30 * time.Millisecond})
	if last.probeEnd != "delay" || last.probeBPS != 0 || r.a.failed != 1 {
		t.Fatalf("want the probe ended by the delay, got %+v (failed %d)", last, r.a.failed)
	}
}

func TestABRFailedProbesBackOff(t *testing.T) {
	r := newABRRun(t, 1)
	var starts []time.Duration
	t0 := r.now
	for r.now.Sub(t0) < 2*time.Minute {
		d := r.a.tick(abrInput{now: r.now, estimate: 600_000, capacity: 100_000_000})
		if d.reason != "" {
			t.Fatalf("switched during failing probes: %+v", d)
		}
		if d.probeBPS > 0 && r.a.probeStart.Equal(r.now) {
			starts = append(starts, r.now.Sub(t0))
			// The link does not carry the padding: the queue grows 200 ms
			// into the probe.
			r.now = r.now.Add(200 * time.Millisecond)
			if d := r.a.tick(abrInput{now: r.now, estimate: 600_000, capacity: 100_000_000,
				queueDelay: 40 * time.Millisecond}); d.probeEnd != "delay" {
				t.Fatalf("want the probe cancelled by the delay, got %+v", d)
			}
		}
		r.now = r.now.Add(abrTick)
	}
	var gaps []time.Duration
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, starts[i]-starts[i-1])
	}
	t.Logf("probe starts %v, gaps %v", starts, gaps)
	// 4 s, 8 s, 16 s, then 30 s: at most one failed probe per 30 s on a
	// steady link, after the first minute.
	late := 0
	for _, s := range starts {
		if s > time.Minute {
			late++
		}
	}
	if late > 2 {
		t.Errorf("%d failed probes in the second minute, want at most 2", late)
	}
	for i, g := range gaps {
		if i > 0 && g < gaps[i-1]-200*time.Millisecond {
			t.Errorf("gaps %v shrink", gaps)
		}
	}
}

func TestABRFailedUpSwitchBacksOff(t *testing.T) {
	r := newABRRun(t, 1)
	sw, _ := r.feed(2200*time.Millisecond, wideLink)
	if len(sw) != 1 || sw[0].target != 0 {
		t.Fatalf("want the probe to move up, got %+v", sw)
	}
	// 360p does not hold: congestion right after the move.
	sw, _ = r.feed(time.Second, link{estimate: 500_000, capacity: 580_000, overuse: true, queueDelay: 90 * time.Millisecond})
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
