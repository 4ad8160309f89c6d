package transcode

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/pipeline"
)

// Stall handling of live inputs (network pulls, pushed streams), as a
// broadcast encoder does it: when a stream's packets stop for stallAfter,
// its decoder stage repeats the last picture (video) or plays silence
// (audio) at the stream's frame interval, paced by the wall clock, so the
// encoders, LL-HLS parts and WebRTC RTP go on with the real elapsed time
// instead of a hole that would land in one part. At most stallMax is
// filled (then the outputs see the gap, as before).
//
// When media resumes it continues after the filler:
//   - a source that stamps from its own clock (it went on during the
//     stall) arrives where the filler ended: taken as it is;
//   - frames the filler already covered (a backlog released at once, the
//     decoder's delayed frames) are dropped, so latency stays low;
//   - a source whose clock stood still (every frame covered for
//     stallCatchUp) re-anchors the whole input after the filler, one shift
//     for all its streams (timeline.reanchor), so A/V stay locked.
//
// Time stays continuous, so nothing is marked Packet.Discontinuity; the
// first resumed video frame is an IDR on every rung (onResume), so players
// and switching viewers get a clean picture at once.
const (
	stallAfter   = 250 * time.Millisecond
	stallMax     = 10 * time.Second
	stallCatchUp = 300 * time.Millisecond
)

// stallFill is one decoder's filler state; only the decoder's goroutine
// uses it.
type stallFill struct {
	kind     string
	makeFill func(last *astiav.Frame, pts int64) (*astiav.Frame, error)
	onResume func(pts int64) // video: an IDR on every rung there
	stats    *pipeline.StageStats
	log      *slog.Logger
	now      func() time.Time

	last       *astiav.Frame // a reference to the last real frame out
	lastOut    int64         // PTS of the newest frame out, real or filler
	lastDur    int64         // the stream's frame duration, output clock units
	rate       int64         // output clock units per second
	anchorPTS  int64         // the last real frame: filler is paced from it
	anchorWall time.Time
	lastInput  time.Time // the last packet taken from the input queue

	stalled      bool
	stallGen     int // the input clock's shift generation when this stall began
	filled       int // frames filled in this stall
	coveredSince time.Time
	total        int
}

func newStallFill(kind string, rate int64, stats *pipeline.StageStats, log *slog.Logger,
	makeFill func(last *astiav.Frame, pts int64) (*astiav.Frame, error)) *stallFill {
	return &stallFill{kind: kind, rate: rate, makeFill: makeFill, stats: stats, log: log, now: time.Now}
}

// repeatPicture is the video filler: the last picture again, not a
// keyframe of its own (the encoders decide IDRs).
func repeatPicture(last *astiav.Frame, pts int64) (*astiav.Frame, error) {
	f := last.Clone()
	if f == nil {
		return nil, errors.New("cloning a frame failed")
	}
	f.SetPts(pts)
	f.SetPictureType(astiav.PictureTypeNone)
	return f, nil
}

// silence is the audio filler: a frame of the last one's format and size.
func silence(last *astiav.Frame, pts int64) (*astiav.Frame, error) {
	f := astiav.AllocFrame()
	f.SetNbSamples(last.NbSamples())
	f.SetSampleFormat(last.SampleFormat())
	f.SetChannelLayout(last.ChannelLayout())
	f.SetSampleRate(last.SampleRate())
	if err := f.AllocBuffer(0); err != nil {
		f.Free()
		return nil, err
	}
	if err := f.SamplesFillSilence(); err != nil {
		f.Free()
		return nil, err
	}
	f.SetPts(pts)
	return f, nil
}

func (s *stallFill) ticks(d time.Duration) int64 { return int64(d.Seconds() * float64(s.rate)) }

func (s *stallFill) dur(ticks int64) time.Duration {
	return time.Duration(float64(ticks) / float64(s.rate) * float64(time.Second))
}

// real judges a real frame at pts (already on the output timeline) whose
// packet arrived at ingest: ok false drops it, and pts may move when the
// input is re-anchored.
func (s *stallFill) real(d *decoder, pts int64, ingest time.Time) (int64, bool) {
	covers := s.lastOut // the filler's last instant
	if d.timeline.spans {
		covers += s.lastDur / 2 // and its samples: more than half a frame overlaps
	}
	if s.last == nil || pts > covers || (!s.stalled && pts > s.lastOut) {
		return pts, true
	}
	now := s.now()
	if s.coveredSince.IsZero() {
		s.coveredSince = now
	}
	covered := now.Sub(s.coveredSince)
	if covered < stallCatchUp {
		return 0, false // the filler showed this time already
	}
	// The source's clock stood still while the filler ran: move the whole
	// input after the filler. Another stream of the input may have done it
	// for this stall already; then only insist when this one is still
	// covered long after.
	// Where real time is (the filler trails it by stallAfter; fillTo
	// closes that), so the stall adds no latency.
	target := max(s.lastOut+s.lastDur, s.anchorPTS+s.ticks(ingest.Sub(s.anchorWall)))
	seen := s.stallGen
	if covered >= 2*stallCatchUp {
		seen = -1
	}
	if d.timeline.reanchor(pts, target, seen) {
		s.log.Info("live input re-anchored after a stall", "stream", s.kind,
			"shift", s.dur(target-pts).Round(time.Millisecond))
		return target, true
	}
	return 0, false
}

// emitted records a real frame about to go out, which arrived at ingest:
// the filler is paced from arrivals, as the frames it stands for would
// have come.
func (s *stallFill) emitted(d *decoder, f *astiav.Frame, ingest time.Time) {
	if s.stalled {
		s.log.Info("live input resumed", "stream", s.kind, "filled", s.filled,
			"stall", ingest.Sub(s.anchorWall).Round(time.Millisecond))
		if s.onResume != nil {
			s.onResume(f.Pts())
		}
	}
	s.stalled, s.filled, s.coveredSince = false, 0, time.Time{}
	if s.last != nil {
		s.last.Free()
	}
	s.last = f.Clone()
	s.lastOut, s.lastDur = f.Pts(), d.timeline.frameDur
	s.anchorPTS, s.anchorWall = f.Pts(), ingest
}

// due is when the next filler frame is due; zero when none will be. The
// filler trails real time by stallAfter, so a source that comes back on
// its own clock finds its frame not yet covered (fillTo closes the rest).
func (s *stallFill) due() time.Time {
	if s.last == nil {
		return time.Time{}
	}
	ahead := s.dur(s.lastOut + s.lastDur - s.anchorPTS)
	if ahead > stallMax {
		return time.Time{} // gone for longer than filling makes sense
	}
	next := s.anchorWall.Add(ahead + stallAfter)
	if first := s.lastInput.Add(stallAfter); !s.stalled && next.Before(first) {
		next = first // packets still come: the decoder is only slow
	}
	return next
}

// fill emits every filler frame due by now.
func (s *stallFill) fill(d *decoder, emit func(*astiav.Frame, time.Time) error) error {
	now := s.now()
	for {
		if at := s.due(); at.IsZero() || at.After(now) {
			return nil
		}
		if more, err := s.fillOne(d, emit, now); err != nil || !more {
			return err
		}
	}
}

// fillTo closes the rest of a stall before a real frame at pts: filler
// frames up to the one before it, at once.
func (s *stallFill) fillTo(d *decoder, pts int64, emit func(*astiav.Frame, time.Time) error) error {
	if !s.stalled {
		return nil
	}
	now := s.now()
	for s.lastOut+s.lastDur+s.lastDur/2 <= pts && s.dur(s.lastOut-s.anchorPTS) < stallMax {
		if more, err := s.fillOne(d, emit, now); err != nil || !more {
			return err
		}
	}
	return nil
}

// fillOne emits the next filler frame; more is false once the job's
// duration is reached.
func (s *stallFill) fillOne(d *decoder, emit func(*astiav.Frame, time.Time) error, now time.Time) (more bool, err error) {
	pts := s.lastOut + s.lastDur
	if d.limit > 0 && pts >= d.limit {
		return false, nil
	}
	f, err := s.makeFill(s.last, pts)
	if err != nil {
		return false, err
	}
	if !s.stalled {
		s.stalled = true
		s.stallGen = d.timeline.clk.shiftGeneration()
		s.log.Info("live input stalled, filling", "stream", s.kind, "after", now.Sub(s.anchorWall).Round(time.Millisecond))
	}
	s.lastOut = pts
	s.filled++
	s.total++
	s.stats.Done(now, 0)
	return true, emit(f, now)
}

func (s *stallFill) free() {
	if s.last != nil {
		s.last.Free()
		s.last = nil
	}
}

// run is a decoder stage's input loop: packets from in to decode, the
// flush once in is closed, and for a live input the filler while it
// stalls. It returns when the input ends, decoding fails or ctx ends.
func (d *decoder) run(ctx context.Context, in <-chan demuxedPacket,
	emit func(*astiav.Frame, time.Time) error, flush func() error) error {
	handle := func(dp demuxedPacket, ok bool) error {
		if !ok {
			return flush()
		}
		if d.fill != nil {
			d.fill.lastInput = d.fill.now()
		}
		return d.decode(&dp, emit)
	}
	if d.fill == nil {
		return consume(ctx, in, handle)
	}
	defer d.fill.free()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var dp demuxedPacket
		var ok, got bool
		// Input first: a queue that has packets means the pipeline is
		// behind, not that the source stalled.
		select {
		case dp, ok = <-in:
			got = true
		default:
		}
		if !got {
			var tick <-chan time.Time
			if at := d.fill.due(); !at.IsZero() {
				timer.Reset(time.Until(at))
				tick = timer.C
			}
			select {
			case dp, ok = <-in:
				got = true
			case <-tick:
			case <-ctx.Done():
				return nil
			}
		}
		var err error
		if got {
			err = handle(dp, ok)
		} else {
			err = d.fill.fill(d, emit)
		}
		if errors.Is(err, errStopped) {
			return nil
		}
		if err != nil || (got && !ok) {
			return err
		}
	}
}

// resumed puts an IDR on every rung at the first frame at or after pts,
// outside the keyframe budget (a source coming back cannot wait) and
// without marking a discontinuity (time stayed continuous).
func (c *keyframeClock) resumed(pts int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pushForcedLocked(pts)
}
