package webrtc

import "time"

// Switch reasons: they label SwitchStats.Reasons and the data-channel
// "rung" message.
const (
	ReasonCongestion = "congestion" // the estimate fell below what the rung needs
	ReasonLoss       = "loss"       // packet loss above abr.loss_threshold
	ReasonProbe      = "probe"      // a padding probe showed room for the next rung
	ReasonPin        = "pin"        // the viewer pinned a rung
	ReasonUnpin      = "unpin"      // the viewer went back to automatic
)

// abrInput is one observation of a viewer's connection (bweSnapshot).
type abrInput struct {
	now      time.Time
	estimate int     // bits/s
	capacity int     // bits/s measured by packet-train dispersion; 0 = unknown
	loss     float64 // 0..1
	// overuse: the queueing delay says a queue is building at the
	// bottleneck (or, without transport-cc, the viewer's REMB fell).
	overuse    bool
	growing    bool // the queue grows fast: no reason to wait for down_hold
	queueDelay time.Duration
}

// abrDecision says which rung to send and how much padding to add.
type abrDecision struct {
	target   int    // rung index, 0 = best
	reason   string // set when target changed
	probeBPS int    // padding to send on top of the media, bits/s; 0 = none
	// probeEnd says why a probe ended on this tick: "up" (it succeeded),
	// "delay" (the queue grew) or "loss".
	probeEnd string
}

// abrController picks a viewer's rung. It is a plain state machine fed with
// time and the estimator's readings, so tests drive it without a network.
//
// Moving down is driven by congestion: the estimator sees a queue building
// (overuse) and its estimate, cut to 0.85 × what gets through, is below
// down_threshold × what the rung needs, or loss is above loss_threshold, for
// down_hold. The target is the best rung the estimate covers (one rung down
// for loss alone).
//
// Moving up needs evidence that there is room, in two steps. The
// estimator's capacity (the bottleneck rate, measured from how the packets
// of each frame spread out on the way) must cover the next rung: that costs
// nothing and keeps a viewer on a narrow link from probing at all. Then,
// after up_hold without congestion, the server pads the viewer's stream up
// to what the next rung needs for probe_duration; the queueing delay rising
// or loss during the probe ends it at once (so the probe never fills the
// bottleneck queue), with a back-off that doubles up to probe_backoff_max;
// a clean probe moves up. A move down within upProbation of a move up
// counts as a failed probe too.
type abrController struct {
	cfg   ABRConfig
	needs []int // bits/s per rung, best first

	cur      int
	quietAt  time.Time // start of the current stretch without congestion or a switch
	badSince time.Time // congestion seen continuously since
	lastUp   time.Time
	lastDown time.Time

	probing    bool
	probeStart time.Time
	probeDelay time.Duration // queueing delay when the probe started
	backoff    time.Duration
	nextProbe  time.Time
	// recoverUntil: after a failed probe, congestion is not judged until
	// then: the probe's own packets are still draining.
	recoverUntil time.Time
	failed       uint64
}

const (
	// upProbation: a move down this soon after a move up means the probe
	// was wrong, so the next one backs off; without it a viewer whose link
	// is marginal would climb and fall every few seconds.
	upProbation = 10 * time.Second
	// probeDelayRise ends a probe: the queue grew by this much since it
	// started, so the link is full.
	probeDelayRise = 25 * time.Millisecond
	// capacityMargin: the measured capacity must exceed the next rung's
	// need by this factor before a probe is worth sending.
	capacityMargin = 1.1
)

func newABRController(cfg ABRConfig, needs []int, initial int) *abrController {
	return &abrController{cfg: cfg, needs: needs, cur: initial, backoff: cfg.ProbeBackoff}
}

// initialRung is the best rung whose need fits in bps, or the lowest.
func initialRung(needs []int, bps int) int {
	for i, n := range needs {
		if n <= bps {
			return i
		}
	}
	return len(needs) - 1
}

// reset makes r the current rung and forgets all history (after a pin).
func (a *abrController) reset(r int) {
	*a = abrController{cfg: a.cfg, needs: a.needs, cur: r, backoff: a.cfg.ProbeBackoff, failed: a.failed}
}

func (a *abrController) tick(in abrInput) abrDecision {
	if a.quietAt.IsZero() {
		a.quietAt = in.now
	}
	need := a.needs[a.cur]
	lossy := in.loss > a.cfg.LossThreshold
	congested := in.overuse && float64(in.estimate) < float64(need)*a.cfg.DownThreshold
	d := abrDecision{target: a.cur}

	if a.probing {
		switch {
		case lossy:
			d.probeEnd = "loss"
		case in.overuse || in.queueDelay > a.probeDelay+probeDelayRise:
			d.probeEnd = "delay"
		case in.now.Sub(a.probeStart) >= a.cfg.ProbeDuration:
			a.probing = false
			a.cur--
			a.lastUp, a.quietAt, a.badSince = in.now, in.now, time.Time{}
			return abrDecision{target: a.cur, reason: ReasonProbe, probeEnd: "up"}
		default:
			d.probeBPS = a.needs[a.cur-1] - need
			return d
		}
		a.probing = false
		a.failProbe(in.now)
		a.recoverUntil = in.now.Add(a.cfg.ProbeDuration)
		a.quietAt = in.now
	}
	if in.now.Before(a.recoverUntil) && !congested {
		a.badSince = time.Time{}
		return d
	}

	if congested || lossy || in.overuse {
		a.quietAt = in.now
	}
	if congested || lossy {
		if a.badSince.IsZero() {
			a.badSince = in.now
		}
		// A queue already twice the congestion mark is no blip: move now,
		// each further frame of this rung deepens it.
		deep := congested && (in.queueDelay >= 2*overuseDelay || in.growing)
		if (!deep && in.now.Sub(a.badSince) < a.cfg.DownHold) || a.cur == len(a.needs)-1 {
			return d
		}
		if !congested && !a.lastDown.IsZero() && in.now.Sub(a.lastDown) < lossWindow {
			return d // loss lingers in the window after a move down: give it time
		}
		target, reason := a.cur+1, ReasonLoss
		if congested {
			reason = ReasonCongestion
			target = max(initialRung(a.needs, in.estimate), a.cur+1)
		}
		if !a.lastUp.IsZero() && in.now.Sub(a.lastUp) < upProbation {
			a.failProbe(in.now) // the rung we probed into did not hold: back off
		}
		a.cur, a.badSince, a.quietAt, a.lastDown = target, time.Time{}, in.now, in.now
		d.target, d.reason = a.cur, reason
		return d
	}
	a.badSince = time.Time{}

	if a.cur > 0 && in.now.Sub(a.quietAt) >= a.cfg.UpHold && !in.now.Before(a.nextProbe) &&
		(in.capacity == 0 || float64(in.capacity) >= float64(a.needs[a.cur-1])*capacityMargin) {
		a.probing, a.probeStart, a.probeDelay = true, in.now, in.queueDelay
		d.probeBPS = a.needs[a.cur-1] - need
	}
	return d
}

func (a *abrController) failProbe(now time.Time) {
	a.failed++
	a.nextProbe = now.Add(a.backoff)
	a.backoff = min(2*a.backoff, a.cfg.ProbeBackoffMax)
}
