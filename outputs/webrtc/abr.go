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

// abrInput is one observation of a viewer's connection.
type abrInput struct {
	now      time.Time
	estimate int     // bits/s, pion's GCC target bitrate
	loss     float64 // 0..1, GCC's average loss from transport-cc feedback
}

// abrDecision says which rung to send and how much padding to add.
type abrDecision struct {
	target   int    // rung index, 0 = best
	reason   string // set when target changed
	probeBPS int    // padding to send on top of the media, bits/s; 0 = none
	// probeEnd says why a probe ended on this tick: "up" (it succeeded),
	// "estimate" (the estimate fell) or "loss".
	probeEnd string
}

// abrController picks a viewer's rung. It is a plain state machine fed with
// time and estimates, so tests drive it without a network.
//
// pion's GCC estimate is only a measurement right after it falls: on
// overuse it drops to 0.85 × the rate that got through. While nothing is
// congested it just grows (about 8 % a second, and past the rate actually
// sent, because pion does not cap it by the acknowledged rate), so a low but
// rising estimate means "not caught up yet", not "no room".
//
// Moving down is therefore driven by congestion: the estimate fell (within
// the last two seconds) and is below down_threshold × what the rung needs,
// or loss is above loss_threshold, for down_hold. The target is the best
// rung the estimate covers (one rung down for loss alone).
//
// Moving up needs evidence the estimate cannot give, so the server probes:
// after up_hold without a fall of the estimate, it pads the viewer's stream
// up to what the next rung needs for probe_duration. A fall of the estimate
// or loss during the probe cancels it, with a back-off that doubles up to
// probe_backoff_max; a clean probe moves up. A move down within
// upProbation of a move up counts as a failed probe too.
type abrController struct {
	cfg   ABRConfig
	needs []int // bits/s per rung, best first

	cur      int
	lastEst  int
	fellAt   time.Time // when the estimate last fell
	quietAt  time.Time // start of the current stretch without a fall or a switch
	badSince time.Time // congestion seen continuously since
	lastUp   time.Time
	lastDown time.Time

	probing    bool
	probeStart time.Time
	backoff    time.Duration
	nextProbe  time.Time
	// recoverUntil: after a failed probe, congestion is not judged until then.
	recoverUntil time.Time
}

const (
	// congestionMemory is how long a fall of the estimate makes its level count.
	congestionMemory = 2 * time.Second
	// upProbation: a move down this soon after a move up means the probe
	// was wrong, so the next one backs off; without it a viewer whose link
	// is marginal would climb and fall every few seconds.
	upProbation = 10 * time.Second
)

func newABRController(cfg ABRConfig, needs []int, initial int) *abrController {
	return &abrController{cfg: cfg, needs: needs, cur: initial, backoff: cfg.ProbeDuration}
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
	*a = abrController{cfg: a.cfg, needs: a.needs, cur: r, backoff: a.cfg.ProbeDuration}
}

func (a *abrController) tick(in abrInput) abrDecision {
	if a.quietAt.IsZero() {
		a.quietAt = in.now
	}
	fell := a.lastEst > 0 && in.estimate < a.lastEst
	a.lastEst = in.estimate
	if fell {
		a.fellAt, a.quietAt = in.now, in.now
	}
	need := a.needs[a.cur]
	lossy := in.loss > a.cfg.LossThreshold
	congested := !a.fellAt.IsZero() && in.now.Sub(a.fellAt) < congestionMemory &&
		float64(in.estimate) < float64(need)*a.cfg.DownThreshold
	d := abrDecision{target: a.cur}

	if a.probing {
		switch {
		case lossy:
			d.probeEnd = "loss"
		case fell:
			d.probeEnd = "estimate"
		case in.now.Sub(a.probeStart) >= a.cfg.ProbeDuration:
			a.probing = false
			a.cur--
			a.lastUp, a.quietAt, a.badSince = in.now, in.now, time.Time{}
			a.backoff = a.cfg.ProbeDuration
			return abrDecision{target: a.cur, reason: ReasonProbe, probeEnd: "up"}
		default:
			d.probeBPS = a.needs[a.cur-1] - need
			return d
		}
		a.probing = false
		a.failProbe(in.now)
		// The padding filled the bottleneck queue; while it drains the
		// estimate keeps falling, from the media rate alone (pion counts
		// no padding bytes), so it says nothing about the current rung yet.
		a.recoverUntil = in.now.Add(2 * a.cfg.ProbeDuration)
	}
	if in.now.Before(a.recoverUntil) {
		a.badSince = time.Time{}
		return d
	}

	if congested || lossy {
		if a.badSince.IsZero() {
			a.badSince = in.now
		}
		if in.now.Sub(a.badSince) < a.cfg.DownHold || a.cur == len(a.needs)-1 {
			return d
		}
		if !congested && !a.lastDown.IsZero() && in.now.Sub(a.lastDown) < congestionMemory {
			return d // loss lingers in the average after a move down: give it time
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

	if a.cur > 0 && in.now.Sub(a.quietAt) >= a.cfg.UpHold && !in.now.Before(a.nextProbe) {
		a.probing, a.probeStart = true, in.now
		d.probeBPS = a.needs[a.cur-1] - need
	}
	return d
}

func (a *abrController) failProbe(now time.Time) {
	a.nextProbe = now.Add(a.backoff)
	a.backoff = min(2*a.backoff, a.cfg.ProbeBackoffMax)
}
