package transcode

import (
	"context"
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
		return nil, fmt.Errorf("%w: opening %s: %w", ErrEncoder, s.codec, err)
	}
	return cc, nil
}

// audioStage decodes the source audio once, resamples it once to 48 kHz and
// splits it into one branch per encoder, each cut to that encoder's frame size.
type audioStage struct {
	dec      *decoder
	channels int
	frameLen []int // per output: samples per frame the encoder takes
	formats  []astiav.SampleFormat
	stamps   *ingestStamps
	stats    *pipeline.StageStats
	log      *slog.Logger

	graph   *filterGraph
	srcRate int
	srcFmt  astiav.SampleFormat
	srcCh   int
}

func newAudioStage(in *input, stats *pipeline.StageStats, log *slog.Logger) (*audioStage, error) {
	// The frame duration until the first frame says (decoder.decode): the
	// codec's frame size at its sample rate, on the 48 kHz clock.
	frameDur := int64(1024)
	if cp := in.audio.CodecParameters(); cp.FrameSize() > 0 && cp.SampleRate() > 0 {
		frameDur = int64(cp.FrameSize()) * AudioSampleRate / int64(cp.SampleRate())
	}
	dec, err := openDecoder("audio", in, in.audio, 1, clock48k, frameDur, stats, log)
	if err != nil {
		return nil, err
	}
	dec.timeline.spans = true
	return &audioStage{dec: dec, stats: stats, log: log}, nil
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
	params := astiav.AllocBuffersrcFilterContextParameters()
	defer params.Free()
	params.SetSampleRate(f.SampleRate())
	params.SetSampleFormat(f.SampleFormat())
	params.SetChannelLayout(f.ChannelLayout())
	params.SetTimeBase(clock48k)
	g, err := newFilterGraph(a.graphString(), params, len(a.frameLen), true, 1)
	if err != nil {
		return err
	}
	a.graph = g
	a.srcRate, a.srcFmt, a.srcCh = f.SampleRate(), f.SampleFormat(), f.ChannelLayout().Channels()
	return nil
}

// run is the audio stage: until in is closed or ctx ends, then it flushes
// and closes every output.
func (a *audioStage) run(ctx context.Context, in <-chan demuxedPacket, outs []chan *astiav.Frame) error {
	defer func() {
		for _, o := range outs {
			close(o)
		}
	}()
	var start time.Time
	emit := func(i int, f *astiav.Frame) error {
		// The sinks' time base is 1/48000 after aresample; make sure.
		f.SetPts(astiav.RescaleQ(f.Pts(), a.graph.sinks[i].TimeBase(), clock48k))
		if i == 0 {
			a.stats.Done(a.stamps.lookup(f.Pts()), time.Since(start))
		}
		if err := send(ctx, outs[i], f); err != nil {
			f.Free()
			return err
		}
		return nil
	}
	filter := func(f *astiav.Frame, ingest time.Time) error {
		if a.graph == nil || f.SampleRate() != a.srcRate || f.SampleFormat() != a.srcFmt || f.ChannelLayout().Channels() != a.srcCh {
			if a.graph != nil {
				if err := a.graph.push(nil, emit); err != nil {
					f.Free()
					return err
				}
			}
			if err := a.build(f); err != nil {
				f.Free()
				return err
			}
		}
		a.stamps.add(f.Pts(), ingest)
		return a.graph.push(f, emit)
	}
	flush := func() error {
		start = time.Now()
		if err := a.dec.decode(nil, filter); err != nil {
			return err
		}
		if a.graph != nil {
			return a.graph.push(nil, emit)
		}
		return nil
	}
	return a.dec.run(ctx, in, func(f *astiav.Frame, ingest time.Time) error {
		start = time.Now()
		return filter(f, ingest)
	}, flush)
}

func (a *audioStage) free() {
	a.graph.free()
	a.graph = nil
}

func (a *audioStage) close() {
	a.free()
	a.dec.close()
}
