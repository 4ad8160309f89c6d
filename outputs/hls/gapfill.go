package hls

import (
	"sync"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// maxFill is the longest gap repaired by repeating a keyframe. A muxer that
// fell this far behind was starved for a long time; its segments may then
// no longer line up with the other rungs' (logged).
const maxFill = 10 * pipeline.VideoClockRate

// repairGap handles a jump in a rung's video timestamps. A jump that the
// reader caused by dropping packets (the muxer fell behind) exists on this
// rung only: gohlslib would then see fewer keyframes than on the other rungs
// and cut fewer segments, shifting this rung's media sequence numbers for
// good. A jump in the source itself is on every rung and is left alone.
func (f *feeder) repairGap(p *pipeline.Packet, pts int64, au [][]byte) {
	dropped := f.reader.Dropped()
	if dropped == f.dropped {
		return
	}
	f.dropped = dropped
	if !p.Keyframe {
		// The reader resumes video only at a keyframe; a frame without one
		// after a drop means the gap is in the source.
		return
	}
	f.log.Warn("hls: muxer fell behind and lost packets; repeating the next IDR over the gap to keep segments aligned",
		"gap", ticksDuration(pts-f.lastVideo).String(), "dropped", dropped)
	f.fill(f.lastVideo+f.frame, pts, p, au)
}

// fill writes copies of the IDR p at the frame slots from `from` up to its
// muxer PTS to:
// gohlslib then cuts segments and parts at the same frames as on the rungs
// that lost nothing, and players show the picture of p over the gap.
// gohlslib cuts a segment at any IDR SegmentMinDuration after the segment
// start, which is a frame and a half before the next GOP boundary (see
// newTiming); the slots in that window stay empty so that the cut falls on
// the boundary, as on the other rungs. The frame before gets their time.
func (f *feeder) fill(from, to int64, p *pipeline.Packet, au [][]byte) {
	if to-from > maxFill {
		f.log.Warn("hls: gap too long to repair; segments of this rung may not line up with the others",
			"gap", ticksDuration(to-from).String())
		return
	}
	early := f.tm.gop - durationTicks(f.tm.segmentMin)
	for slot := from; slot < to-f.frame/2; slot += f.frame {
		if next := f.tm.start + roundUp(slot-f.tm.start, f.tm.gop); slot < next && slot >= next-early {
			continue
		}
		// The other rungs wrote this slot with the Ingest of its source
		// frame; the same time keeps EXT-X-PROGRAM-DATE-TIME equal.
		ntp, ok := f.st.ingests.get(slot - f.offset)
		if !ok {
			ntp = ntpOf(p).Add(-ticksDuration(to - slot))
		}
		f.writeVideo(slot, f.pdt(slot, ntp, true), au, true, pendingFrame{ingest: time.Time{}, size: len(p.Data)})
	}
}

// ingestLogSize covers the longest repaired gap (maxFill) at 60 fps and more.
const ingestLogSize = 1024

// ingestLog remembers the Ingest of the latest video frames of a stream by
// PTS, recorded by whichever rung writes a frame first. A rung repairing a
// gap takes the times from it: the rungs that lost nothing wrote them.
type ingestLog struct {
	mu   sync.Mutex
	at   map[int64]time.Time
	ring [ingestLogSize]int64
	next int
}

func (l *ingestLog) add(pts int64, t time.Time) {
	if t.IsZero() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at == nil {
		l.at = make(map[int64]time.Time, ingestLogSize)
	}
	if _, ok := l.at[pts]; ok {
		return
	}
	if len(l.at) == ingestLogSize {
		delete(l.at, l.ring[l.next])
	}
	l.at[pts] = t
	l.ring[l.next] = pts
	l.next = (l.next + 1) % ingestLogSize
}

func (l *ingestLog) get(pts int64) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[pts]
	return t, ok
}
