package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// AudioSampleRate is the rate of every audio output: Opus requires 48 kHz
// and using it for AAC too means one resampler.
const AudioSampleRate = 48000

var clock48k = astiav.NewRational(1, AudioSampleRate)

// audioEncoderSpec is one audio output of the ladder.
type audioEncoderSpec struct {
	name      string // track name
	codec     string // FFmpeg encoder
	format    astiav.SampleFormat
	bitrate   int64
	globalHdr bool // AAC: put the AudioSpecificConfig in extradata
	options   map[string]string
}

func audioSpecs(l *ladder.Ladder) []audioEncoderSpec {
	return []audioEncoderSpec{
		{name: pipeline.CodecAAC, codec: "aac", format: astiav.SampleFormatFltp, bitrate: int64(l.Audio.AAC.Bitrate), globalHdr: true},
		// Constrained VBR keeps Opus near its target: plain VBR overshoots by
		// ~20% on tonal audio, which WebRTC's bandwidth estimate then pays for.
		{name: pipeline.CodecOpus, codec: "libopus", format: astiav.SampleFormatFlt, bitrate: int64(l.Audio.Opus.Bitrate),
			options: map[string]string{"vbr": "constrained"}},
	}
}

func openAudioEncoder(s audioEncoderSpec, channels int) (*astiav.CodecContext, error) {
	codec := astiav.FindEncoderByName(s.codec)
	if codec == nil {
		return nil, fmt.Errorf("%w: %s is not compiled into this FFmpeg", ErrEncoder, s.codec)
	}
	cc := astiav.AllocCodecContext(codec)
	cc.SetSampleRate(AudioSampleRate)
	cc.SetSampleFormat(s.format)
	if channels == 1 {
		cc.SetChannelLayout(astiav.ChannelLayoutMono)
	} else {
		cc.SetChannelLayout(astiav.ChannelLayoutStereo)
	}
	cc.SetBitRate(s.bitrate)
	cc.SetTimeBase(clock48k)
	if s.globalHdr {
		cc.SetFlags(cc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	}
	opts := astiav.NewDictionary()
	defer opts.Free()
	for k, v := range s.options {
		_ = opts.Set(k, v, astiav.NewDictionaryFlags())
	}
	if err := cc.Open(codec, opts); err != nil {
		cc.Free()
		return nil, fmt.Errorf("%w: opening %s: %v", ErrEncoder, s.codec, err)
	}
	return cc, nil
}

// audioStage decodes the source audio once, resamples it once to 48 kHz and
// splits it into one branch per encoder, each cut to that encoder's frame size.
type audioStage struct {
	dec      *astiav.CodecContext
	tb       astiav.Rational
	timeline *timeline
	channels int
	frameLen []int // per output: samples per frame the encoder takes
	formats  []astiav.SampleFormat
	stamps   *ingestStamps
	stats    *pipeline.StageStats
	log      *slog.Logger
	limit    int64 // drop audio at or after this PTS in 48 kHz units (0: none)

	graph   *astiav.FilterGraph
	src     *astiav.BuffersrcFilterContext
	sinks   []*astiav.BuffersinkFilterContext
	srcRate int
	srcFmt  astiav.SampleFormat
	srcCh   int
	errs    int
	pending map[int64]time.Time
}

func newAudioStage(in *input, stats *pipeline.StageStats, log *slog.Logger) (*audioStage, error) {
	cp := in.audio.CodecParameters()
	codec := astiav.FindDecoder(cp.CodecID())
	cc := astiav.AllocCodecContext(codec)
	if err := cp.ToCodecContext(cc); err != nil {
		cc.Free()
		return nil, fmt.Errorf("audio decoder: %w", err)
	}
	cc.SetTimeBase(in.audio.TimeBase())
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("opening %s audio decoder: %w", codec.Name(), err)
	}
	return &audioStage{
		dec:      cc,
		tb:       in.audio.TimeBase(),
		timeline: newTimeline(AudioSampleRate, in.originSeconds(), 1024),
		stats:    stats,
		log:      log,
		pending:  make(map[int64]time.Time),
	}, nil
}

func (a *audioStage) graphString() string {
	layout := "stereo"
	if a.channels == 1 {
		layout = "mono"
	}
	s := fmt.Sprintf("[in]aresample=%d,aformat=channel_layouts=%s,asplit=%d", AudioSampleRate, layout, len(a.frameLen))
	for i := range a.frameLen {
		s += fmt.Sprintf("[a%d]", i)
	}
	for i, n := range a.frameLen {
		s += fmt.Sprintf(";[a%d]aformat=sample_fmts=%s,asetnsamples=n=%d:p=0[o%d]", i, a.formats[i].Name(), n, i)
	}
	return s
}

func (a *audioStage) build(f *astiav.Frame) error {
	a.free()
	g := astiav.AllocFilterGraph()
	a.graph = g
	src, err := g.NewBuffersrcFilterContext(astiav.FindFilterByName("abuffer"), "in")
	if err != nil {
		return fmt.Errorf("creating abuffer: %w", err)
	}
	a.src = src
	params := astiav.AllocBuffersrcFilterContextParameters()
	defer params.Free()
	params.SetSampleRate(f.SampleRate())
	params.SetSampleFormat(f.SampleFormat())
	params.SetChannelLayout(f.ChannelLayout())
	params.SetTimeBase(clock48k)
	if err := src.SetParameters(params); err != nil {
		return fmt.Errorf("setting abuffer parameters: %w", err)
	}
	if err := src.Initialize(nil); err != nil {
		return fmt.Errorf("initializing abuffer: %w", err)
	}
	outputs := astiav.AllocFilterInOut()
	outputs.SetName("in")
	outputs.SetFilterContext(src.FilterContext())
	var inputs, prev *astiav.FilterInOut
	a.sinks = a.sinks[:0]
	for i := range a.frameLen {
		sink, err := g.NewBuffersinkFilterContext(astiav.FindFilterByName("abuffersink"), fmt.Sprintf("o%d", i))
		if err != nil {
			outputs.Free()
			if inputs != nil {
				inputs.Free()
			}
			return fmt.Errorf("creating abuffersink: %w", err)
		}
		a.sinks = append(a.sinks, sink)
		io := astiav.AllocFilterInOut()
		io.SetName(fmt.Sprintf("o%d", i))
		io.SetFilterContext(sink.FilterContext())
		if prev == nil {
			inputs = io
		} else {
			prev.SetNext(io)
		}
		prev = io
	}
	desc := a.graphString()
	err = g.Parse(desc, inputs, outputs)
	inputs.Free()
	outputs.Free()
	if err != nil {
		return fmt.Errorf("parsing audio graph %q: %w", desc, err)
	}
	if err := g.Configure(); err != nil {
		return fmt.Errorf("configuring audio graph %q: %w", desc, err)
	}
	a.srcRate, a.srcFmt, a.srcCh = f.SampleRate(), f.SampleFormat(), f.ChannelLayout().Channels()
	return nil
}

func (a *audioStage) run(ctx context.Context, in <-chan demuxedPacket, outs []chan *astiav.Frame) error {
	defer func() {
		for _, o := range outs {
			close(o)
		}
	}()
	for {
		var dp demuxedPacket
		var ok bool
		select {
		case dp, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		start := time.Now()
		if !ok {
			_ = a.dec.SendPacket(nil)
			if err := a.receive(ctx, outs, start); err != nil {
				return err
			}
			if a.graph != nil {
				_ = a.src.AddFrame(nil, astiav.NewBuffersrcFlags())
				return a.drain(ctx, outs, start)
			}
			return nil
		}
		if pts := dp.pkt.Pts(); pts != astiav.NoPtsValue {
			if len(a.pending) > 512 {
				clear(a.pending)
			}
			a.pending[pts] = dp.ingest
		}
		err := a.dec.SendPacket(dp.pkt)
		dp.pkt.Free()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			a.decodeError(err)
			continue
		}
		if err := a.receive(ctx, outs, start); err != nil {
			return err
		}
	}
}

func (a *audioStage) decodeError(err error) {
	a.errs++
	a.stats.Drop()
	if a.errs <= 3 || a.errs%100 == 0 {
		a.log.Warn("audio decode error", "error", err, "count", a.errs)
	}
}

func (a *audioStage) receive(ctx context.Context, outs []chan *astiav.Frame, start time.Time) error {
	for {
		f := astiav.AllocFrame()
		if err := a.dec.ReceiveFrame(f); err != nil {
			f.Free()
			if !errors.Is(err, astiav.ErrEagain) && !errors.Is(err, astiav.ErrEof) {
				a.decodeError(err)
			}
			return nil
		}
		raw := f.Pts()
		if raw == astiav.NoPtsValue {
			f.Free()
			a.stats.Drop()
			continue
		}
		ingest, found := a.pending[raw]
		if found {
			delete(a.pending, raw)
		} else {
			ingest = time.Now()
		}
		pts, ok := a.timeline.next(astiav.RescaleQ(raw, a.tb, clock48k))
		if !ok || (a.limit > 0 && pts >= a.limit) {
			f.Free()
			a.stats.Drop()
			continue
		}
		f.SetPts(pts)
		if a.graph == nil || f.SampleRate() != a.srcRate || f.SampleFormat() != a.srcFmt || f.ChannelLayout().Channels() != a.srcCh {
			if a.graph != nil {
				_ = a.src.AddFrame(nil, astiav.NewBuffersrcFlags())
				if err := a.drain(ctx, outs, start); err != nil {
					f.Free()
					return err
				}
			}
			if err := a.build(f); err != nil {
				f.Free()
				return err
			}
		}
		a.stamps.add(pts, ingest)
		err := a.src.AddFrame(f, astiav.NewBuffersrcFlags())
		f.Free()
		if err != nil {
			return fmt.Errorf("feeding audio graph: %w", err)
		}
		if err := a.drain(ctx, outs, start); err != nil {
			return err
		}
	}
}

func (a *audioStage) drain(ctx context.Context, outs []chan *astiav.Frame, start time.Time) error {
	for i, sink := range a.sinks {
		for {
			f := astiav.AllocFrame()
			if err := sink.GetFrame(f, astiav.NewBuffersinkFlags()); err != nil {
				f.Free()
				if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
					break
				}
				return fmt.Errorf("reading audio graph: %w", err)
			}
			// The sink's time base is 1/48000 after aresample.
			f.SetPts(astiav.RescaleQ(f.Pts(), sink.TimeBase(), clock48k))
			if i == 0 {
				a.stats.Done(a.stamps.lookup(f.Pts()), time.Since(start))
			}
			select {
			case outs[i] <- f:
			case <-ctx.Done():
				f.Free()
				return nil
			}
		}
	}
	return nil
}

func (a *audioStage) free() {
	if a.graph != nil {
		a.graph.Free()
		a.graph = nil
		a.src = nil
		a.sinks = a.sinks[:0]
	}
}

func (a *audioStage) close() {
	a.free()
	if a.dec != nil {
		a.dec.Free()
		a.dec = nil
	}
}
