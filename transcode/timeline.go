package transcode

// timeline maps one input stream's timestamps to the job's output clock:
// shifted by the input origin, kept strictly increasing, with large jumps
// (a source restart or a wrap) folded into a continuous timeline.
type timeline struct {
	clockRate int64 // output units per second
	origin    int64 // subtracted, in output units
	offset    int64 // added after a discontinuity
	last      int64
	started   bool
	// maxGap is the largest forward jump taken at face value; larger jumps
	// and any backward jump larger than maxBack are treated as discontinuities.
	maxGap, maxBack int64
	frameDur        int64 // used to continue after a discontinuity
	discontinuities int
}

func newTimeline(clockRate int64, originSeconds float64, frameDur int64) *timeline {
	return &timeline{
		clockRate: clockRate,
		origin:    int64(originSeconds * float64(clockRate)),
		maxGap:    10 * clockRate,
		maxBack:   clockRate,
		frameDur:  frameDur,
	}
}

// next converts a timestamp already rescaled to clockRate. ok is false when
// the frame must be dropped because it does not move time forward.
func (t *timeline) next(ts int64) (out int64, ok bool) {
	out = ts - t.origin + t.offset
	if !t.started {
		t.started, t.last = true, out
		return out, true
	}
	switch d := out - t.last; {
	case d > 0 && d <= t.maxGap:
	case d <= 0 && -d < t.maxBack:
		return 0, false // jitter or a duplicate: keep time strictly increasing
	default:
		t.offset += t.last + t.frameDur - out
		out = t.last + t.frameDur
		t.discontinuities++
	}
	t.last = out
	return out, true
}
