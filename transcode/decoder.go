package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/pipeline"
)

// errStopped ends a stage loop because the job context ended.
var errStopped = errors.New("stopped")

// decoder is the decode step shared by the video and audio stages: packets
// in, frames out with PTS on the job's clock and the wall-clock time their
// packet was read.
type decoder struct {
	kind     string
	cc       *astiav.CodecContext
	tb       astiav.Rational     // stream time base
	clock    astiav.Rational     // output clock: 1/90000 video, 1/48000 audio
	timeline *timeline           // on the input's one clock, shared with its other streams
	limit    int64               // drop frames at or after this PTS (0: none)
	pending  map[int64]time.Time // packet PTS -> ingest time, until its frame is out
	stats    *pipeline.StageStats
	log      *slog.Logger
	errs     int
	decoded  uint64
	// onDiscontinuity gets the output PTS of the first frame decoded after
	// a packet marked discont (video of a pushed source).
	onDiscontinuity func(pts int64)
	discPending     bool
	// fill keeps a live input's outputs flowing while its source stalls
	// (stall.go); nil for files and lavfi.
	fill *stallFill
}

func openDecoder(kind string, in *input, s *astiav.Stream, threads int, clock astiav.Rational, frameDur int64,
	stats *pipeline.StageStats, log *slog.Logger) (*decoder, error) {
	if frameDur <= 0 {
		frameDur = 1
	}
	cp := s.CodecParameters()
	codec := astiav.FindDecoder(cp.CodecID())
	if codec == nil {
		return nil, fmt.Errorf("no %s decoder for %s", kind, cp.CodecID())
	}
	cc := astiav.AllocCodecContext(codec)
	if err := cp.ToCodecContext(cc); err != nil {
		cc.Free()
		return nil, fmt.Errorf("%s decoder: %w", kind, err)
	}
	cc.SetTimeBase(s.TimeBase())
	cc.SetThreadCount(threads)
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("opening %s %s decoder: %w", codec.Name(), kind, err)
	}
	return &decoder{
		kind:     kind,
		cc:       cc,
		tb:       s.TimeBase(),
		clock:    clock,
		timeline: newTimeline(in.sharedClock(), int64(clock.Den()), frameDur, in.live),
		pending:  make(map[int64]time.Time),
		stats:    stats,
		log:      log,
	}, nil
}

// decode sends one packet (nil flushes the decoder) and hands every frame
// that comes out to emit, which then owns it. Broken data is counted and
// logged, never fatal: a damaged live stream carries on at its next keyframe.
func (d *decoder) decode(dp *demuxedPacket, emit func(f *astiav.Frame, ingest time.Time) error) error {
	start := time.Now()
	if dp == nil {
		_ = d.cc.SendPacket(nil)
	} else {
		if dp.discont {
			d.discPending = true
		}
		if pts := dp.pkt.Pts(); pts != astiav.NoPtsValue {
			if len(d.pending) > 512 { // frames that never came out; don't grow
				clear(d.pending)
			}
			d.pending[pts] = dp.ingest
		}
		err := d.cc.SendPacket(dp.pkt)
		dp.pkt.Free()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			d.decodeError(err)
			return nil
		}
	}
	for {
		f := astiav.AllocFrame()
		if err := d.cc.ReceiveFrame(f); err != nil {
			f.Free()
			if !errors.Is(err, astiav.ErrEagain) && !errors.Is(err, astiav.ErrEof) {
				d.decodeError(err)
			}
			return nil
		}
		raw := f.Pts()
		if raw == astiav.NoPtsValue {
			raw = f.PktDts()
		}
		if raw == astiav.NoPtsValue {
			f.Free()
			d.stats.Drop()
			continue
		}
		ingest, found := d.pending[raw]
		if found {
			delete(d.pending, raw)
		}
		if ingest.IsZero() {
			ingest = time.Now()
		}
		if n, rate := f.NbSamples(), f.SampleRate(); n > 0 && rate > 0 {
			// The real duration of this audio frame (AAC 1024 or 960, MP3
			// 1152, Opus 120-2880 samples, any rate), on the output clock.
			d.timeline.frameDur = max(1, int64(n)*int64(d.clock.Den())/int64(rate))
		}
		pts, ok := d.timeline.nextAt(astiav.RescaleQ(raw, d.tb, d.clock), ingest)
		if ok && d.fill != nil {
			if pts, ok = d.fill.real(d, pts, ingest); ok {
				if err := d.fill.fillTo(d, pts, emit); err != nil {
					f.Free()
					return err
				}
			}
		}
		if !ok || (d.limit > 0 && pts >= d.limit) {
			f.Free()
			d.stats.Drop()
			continue
		}
		f.SetPts(pts)
		if d.fill != nil {
			d.fill.emitted(d, f, ingest)
		}
		if d.discPending && d.onDiscontinuity != nil {
			d.discPending = false
			d.onDiscontinuity(pts) // on the output timeline, after any folding
		}
		d.decoded++
		d.stats.Done(ingest, time.Since(start))
		if err := emit(f, ingest); err != nil {
			return err
		}
	}
}

func (d *decoder) decodeError(err error) {
	d.errs++
	d.stats.Drop()
	if d.errs <= 3 || d.errs%100 == 0 {
		d.log.Warn(d.kind+" decode error", "error", err, "count", d.errs)
	}
}

func (d *decoder) close() {
	if d.cc != nil {
		d.cc.Free()
		d.cc = nil
	}
}

// consume runs a stage's input loop: fn gets each item, and the zero value
// (ok false) once when the input is closed, so the stage can flush. It
// returns when the input ends, fn fails, or ctx ends.
func consume[T any](ctx context.Context, in <-chan T, fn func(item T, ok bool) error) error {
	for {
		var item T
		var ok bool
		select {
		case item, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		err := fn(item, ok)
		if errors.Is(err, errStopped) {
			return nil
		}
		if err != nil || !ok {
			return err
		}
	}
}

// send hands v to out unless ctx ends first.
func send[T any](ctx context.Context, out chan<- T, v T) error {
	select {
	case out <- v:
		return nil
	case <-ctx.Done():
		return errStopped
	}
}
