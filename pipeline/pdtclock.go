package pipeline

import "time"

// FrameClock maps a program date time to the media time of the frame that
// was live then: what an LL-HLS viewer, who knows only the PDT of the
// frame on screen, needs to report it on the events' timeline. A followed
// stream implements it from the frames it passed on.
type FrameClock interface {
	// PTSAt is the PTS (EventClock) of the newest frame that entered at or
	// before pdt; false when the stream has no frame within reach.
	PTSAt(pdt time.Time) (pts int64, ok bool)
}

// FrameLog is a FrameClock over the newest video frames (a bounded ring):
// its owner adds each frame as it passes, under its own lock.
type FrameLog struct {
	pts    []int64
	ingest []time.Time
	next   int
	full   bool
}

// frameLogSize is about 17 s at 30 fps: more than an LL-HLS player's delay.
const frameLogSize = 512

// Add records a frame: its PTS on EventClock and when it entered Prism.
func (l *FrameLog) Add(pts int64, ingest time.Time) {
	if l.pts == nil {
		l.pts, l.ingest = make([]int64, frameLogSize), make([]time.Time, frameLogSize)
	}
	l.pts[l.next], l.ingest[l.next] = pts, ingest
	l.next = (l.next + 1) % frameLogSize
	l.full = l.full || l.next == 0
}

// PTSAt is FrameClock's: the frame that entered last at or before pdt
// (1 ms of slack: the PDT a player computes is rounded). Before the
// oldest frame logged, or more than a second after the newest, it has no
// answer.
func (l *FrameLog) PTSAt(pdt time.Time) (int64, bool) {
	n := l.next
	if l.full {
		n = frameLogSize
	}
	if n == 0 {
		return 0, false
	}
	newest := (l.next - 1 + frameLogSize) % frameLogSize
	if pdt.Sub(l.ingest[newest]) > time.Second {
		return 0, false
	}
	at := pdt.Add(time.Millisecond)
	for i := range n {
		j := (newest - i + frameLogSize) % frameLogSize
		if !l.ingest[j].After(at) {
			return l.pts[j], true
		}
	}
	return 0, false
}
