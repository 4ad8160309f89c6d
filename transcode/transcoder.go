package transcode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/redact"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// Options configure a Transcoder.
type Options struct {
	// Input is any libavformat URL, or "lavfi:<graph>".
	Input string
	// InputOptions are passed to the demuxer (e.g. "rtsp_transport": "tcp").
	InputOptions map[string]string
	Ladder       *ladder.Ladder
	// Realtime paces file and lavfi inputs at 1x, as a live source would
	// arrive. Network inputs are never paced.
	Realtime bool
	// Duration stops the job after this much media time (0: end of input).
	Duration time.Duration
	// CPUs is the job's CPU share in cores, which its encoder, decoder and
	// filter threads are planned for (threads.go); a node gives each job
	// its cost's part of the node's cores. 0: no share, every part plans
	// for all of this machine's CPUs.
	CPUs float64
	// DirectScaling scales every rung from the source instead of cascading
	// from the next larger rung (slower; what a plain FFmpeg split does).
	DirectScaling bool
	// Logger receives the job's logs (default: slog.Default()).
	Logger *slog.Logger
	// Source, when set, is the input instead of Input: a pushed stream's
	// source packets (pipeline/ingest, over queue/relay.FollowSource).
	// Input then only names it.
	Source pipeline.Source
}

// Transcoder runs one ladder over one input: demux, decode once, split and
// scale per rung, encode per rung, fan out. It implements pipeline.Source.
type Transcoder struct {
	opts   Options
	log    *slog.Logger
	in     *input
	tracks []pipeline.Track
	fanout pipeline.Fanout
	clock  *keyframeClock

	vstamps, astamps *ingestStamps
	skipped          []ladder.SkippedRung
	backends         []string

	// stages, in data-flow order; each is owned by the goroutine started for it
	vdec      *decoder
	vfilter   *videoFilter
	audio     *audioStage
	encoders  []*encodeStage
	stageList []*pipeline.StageStats
	demuxSt   *pipeline.StageStats
	meters    []*pipeline.RateMeter
	keyframes []*atomic.Uint64 // IDRs per track; outlive the encoders for Stats
	videoPTS  atomic.Int64
	audioPTS  atomic.Int64

	// queues between stages; drained and freed by cleanup after all stages end
	vpackets chan demuxedPacket
	apackets chan demuxedPacket
	vframes  chan videoFrame
	encIn    []chan *astiav.Frame

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}
	errOnce sync.Once
	err     error
	started time.Time

	// media closes once every encoder published its first packet (on a
	// video rung an IDR: the keyframe clock makes the first frame one);
	// mediaOut says which have.
	media     chan struct{}
	mediaOut  []atomic.Bool
	mediaLeft atomic.Int32
}

var _ pipeline.Source = (*Transcoder)(nil)

// Start opens the input and the encoders and starts the pipeline. It returns
// once the job is running, or the reason it cannot run.
func Start(ctx context.Context, opts Options) (_ *Transcoder, err error) {
	if opts.Ladder == nil {
		return nil, fmt.Errorf("%w: no ladder given", ErrLadder)
	}
	if err := opts.Ladder.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &Transcoder{opts: opts, log: log, done: make(chan struct{})}
	t.fanout.Log = func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) }
	defer func() {
		if err != nil {
			t.cleanup()
		}
	}()

	if opts.Source != nil {
		t.in, err = openPushInput(ctx, opts.Source, opts.Input)
	} else {
		t.in, err = openInput(ctx, opts.Input, opts.InputOptions)
	}
	if err != nil {
		return nil, err
	}
	cp := t.in.video.CodecParameters()
	srcFPS := t.in.frameRate().Float64()
	rungs, skipped, err := opts.Ladder.Plan(cp.Width(), cp.Height(), srcFPS)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLadder, err)
	}
	t.skipped = skipped
	for _, s := range skipped {
		log.Warn("rung skipped", "rung", s.Name, "reason", s.Reason)
	}

	threads := planThreads(rungs, opts.CPUs, runtime.NumCPU())
	t.clock = newKeyframeClock(ticks90k(time.Duration(opts.Ladder.GOP)), ticks90k(time.Duration(opts.Ladder.KeyframeMinInterval)))
	t.vstamps = newIngestStamps(1024)
	t.astamps = newIngestStamps(1024)

	t.demuxSt = &pipeline.StageStats{Name: "demux"}
	vdecSt := &pipeline.StageStats{Name: "video-decode"}
	vfiltSt := &pipeline.StageStats{Name: "video-filter"}
	t.stageList = append(t.stageList, t.demuxSt, vdecSt, vfiltSt)

	frameDur := int64(math.Round(pipeline.VideoClockRate / srcFPS))
	t.vdec, err = openDecoder("video", t.in, t.in.video, threads.decoder, clock90k, frameDur, vdecSt, log)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoVideo, err)
	}
	if opts.Duration > 0 {
		t.vdec.limit = int64(opts.Duration.Seconds() * pipeline.VideoClockRate)
	}
	scaling, err := planScaling(opts.Ladder.Scaling)
	if err != nil {
		return nil, err
	}
	t.vfilter = &videoFilter{rungs: rungs, cascade: !opts.DirectScaling, sourceFPS: srcFPS, threads: threads.filter, scaling: scaling, clock: t.clock, stamps: t.vstamps, stats: vfiltSt, log: log}

	for i, r := range rungs {
		gopFrames := int(math.Round(time.Duration(opts.Ladder.GOP).Seconds() * r.OutFPS))
		cc, backend, why, err := openVideoEncoder(r, gopFrames, threads.encoders[i])
		if err != nil {
			return nil, err
		}
		tr := pipeline.Track{
			ID: len(t.tracks), Name: r.Name, Kind: pipeline.KindVideo, Codec: pipeline.CodecH264,
			ClockRate: pipeline.VideoClockRate, Width: r.OutWidth, Height: r.OutHeight, FPS: r.OutFPS,
			Profile: r.Profile, Encoder: backend.Codec(), Bitrate: int64(r.Bitrate), GOP: time.Duration(opts.Ladder.GOP),
			EncoderDevice: backend.Device(), Scaler: scaling.scaler(), EncoderWhy: why + "; " + scaling.why,
		}
		t.addEncoder(cc, tr, newRungCursor(t.clock, r.OutFPS, srcFPS), t.vstamps, &t.videoPTS,
			int64(math.Round(pipeline.VideoClockRate/r.OutFPS)))
		t.backends = append(t.backends, backend.Name())
		log.Info("rung encoder", "rung", r.Name, "encoder", backend.Codec(), "device", backend.Device(), "scaler", scaling.scaler(), "why", tr.EncoderWhy)
	}

	if t.in.audio != nil {
		ast := &pipeline.StageStats{Name: "audio-decode"}
		t.stageList = append(t.stageList, ast)
		t.audio, err = newAudioStage(t.in, ast, log)
		if err != nil {
			return nil, err
		}
		t.audio.stamps = t.astamps
		t.audio.channels = opts.Ladder.Audio.Channels
		if opts.Duration > 0 {
			t.audio.dec.limit = int64(opts.Duration.Seconds() * AudioSampleRate)
		}
		for _, spec := range audioSpecs(opts.Ladder) {
			cc, err := openAudioEncoder(spec, opts.Ladder.Audio.Channels)
			if err != nil {
				return nil, err
			}
			tr := pipeline.Track{
				ID: len(t.tracks), Name: spec.name, Kind: pipeline.KindAudio, Codec: spec.name,
				ClockRate: AudioSampleRate, SampleRate: AudioSampleRate, Channels: opts.Ladder.Audio.Channels,
				Extradata: cc.ExtraData(), Encoder: spec.codec, Bitrate: spec.bitrate,
			}
			t.audio.frameLen = append(t.audio.frameLen, cc.FrameSize())
			t.audio.formats = append(t.audio.formats, spec.format)
			t.addEncoder(cc, tr, nil, t.astamps, &t.audioPTS, int64(cc.FrameSize()))
		}
	}

	if t.in.live {
		t.fillStalls()
	}

	t.videoPTS.Store(-1)
	t.audioPTS.Store(-1)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if p := t.in.push; p != nil {
		context.AfterFunc(t.ctx, p.cancel) // unblocks a demux waiting for the publisher
		t.vdec.onDiscontinuity = t.clock.discontinuity
	}
	t.started = time.Now()
	t.vpackets = make(chan demuxedPacket, 64)
	t.vframes = make(chan videoFrame, 4)
	if t.audio != nil {
		t.apackets = make(chan demuxedPacket, 128)
	}
	t.launch()
	log.Info("transcode started", "input", redact.URL(opts.Input), "ladder", opts.Ladder.Name,
		"source", fmt.Sprintf("%dx%d@%.3g", cp.Width(), cp.Height(), srcFPS), "rungs", len(rungs), "audio", t.in.audio != nil,
		"cpu_share", opts.CPUs, "encoder_threads", threads.encoders, "gomaxprocs", runtime.GOMAXPROCS(0))
	return t, nil
}

func (t *Transcoder) addEncoder(cc *astiav.CodecContext, tr pipeline.Track, cursor *keyframeCursor, stamps *ingestStamps, newest *atomic.Int64, frameDur int64) {
	t.tracks = append(t.tracks, tr)
	st := &pipeline.StageStats{Name: "encode-" + tr.Name}
	t.stageList = append(t.stageList, st)
	m := pipeline.NewRateMeter(3)
	t.meters = append(t.meters, m)
	keys := new(atomic.Uint64)
	t.keyframes = append(t.keyframes, keys)
	t.encoders = append(t.encoders, &encodeStage{
		cc: cc, track: &t.tracks[len(t.tracks)-1], cursor: cursor, stamps: stamps, fanout: &t.fanout,
		meter: m, stats: st, frameDur: frameDur, newest: newest, keyframes: keys,
	})
	t.encIn = append(t.encIn, make(chan *astiav.Frame, 4))
}

// fillStalls keeps a live input's outputs flowing through source stalls
// (stall.go); the filler frames are counted as the video-fill and
// audio-fill stages' frames.
func (t *Transcoder) fillStalls() {
	vst := &pipeline.StageStats{Name: "video-fill"}
	t.stageList = append(t.stageList, vst)
	t.vdec.fill = newStallFill("video", pipeline.VideoClockRate, vst, t.log, repeatPicture)
	t.vdec.fill.onResume = t.clock.resumed
	if t.audio != nil {
		ast := &pipeline.StageStats{Name: "audio-fill"}
		t.stageList = append(t.stageList, ast)
		t.audio.dec.fill = newStallFill("audio", AudioSampleRate, ast, t.log, silence)
	}
}

// launch starts one goroutine per stage and the supervisor that cleans up
// when they have all returned.
func (t *Transcoder) launch() {
	run := func(name string, fn func() error) {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			if err := fn(); err != nil {
				t.fail(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	t.media = make(chan struct{})
	t.mediaOut = make([]atomic.Bool, len(t.encoders))
	t.mediaLeft.Store(int32(len(t.encoders)))
	for i, e := range t.encoders {
		e.onFirst = func() {
			t.mediaOut[i].Store(true)
			if t.mediaLeft.Add(-1) == 0 {
				close(t.media)
			}
		}
	}
	nv := len(t.vfilter.rungs)
	run("demux", t.demux)
	run("video-decode", func() error { return runVideoDecode(t.ctx, t.vdec, t.vpackets, t.vframes) })
	run("video-filter", func() error { return t.vfilter.run(t.ctx, t.vframes, t.encIn[:nv]) })
	if t.audio != nil {
		run("audio", func() error { return t.audio.run(t.ctx, t.apackets, t.encIn[nv:]) })
	}
	for i, e := range t.encoders {
		in := t.encIn[i]
		run("encode-"+e.track.Name, func() error { return e.run(t.ctx, in) })
	}
	go func() {
		t.wg.Wait()
		if t.ctx.Err() == nil && t.vdec.decoded == 0 {
			t.fail(fmt.Errorf("%w: %s: no video frame could be decoded", ErrDecode, t.opts.Input))
		}
		t.cleanup()
		releaseFreedMemory()
		t.fanout.Close()
		close(t.done)
	}()
}

func (t *Transcoder) fail(err error) {
	t.errOnce.Do(func() {
		t.err = err
		t.log.Error("transcode failed", "error", err)
	})
	t.cancel()
}

// demux reads the input and routes packets to the decoders.
func (t *Transcoder) demux() error {
	defer close(t.vpackets)
	if t.apackets != nil {
		defer close(t.apackets)
	}
	vi := t.in.video.Index()
	ai := -1
	if t.in.audio != nil {
		ai = t.in.audio.Index()
	}
	origin := t.in.originSeconds()
	pace := t.opts.Realtime && !t.in.live
	var paceStart time.Time
	var paceOrigin float64
	limit := t.opts.Duration.Seconds()
	errs := 0
	for {
		pkt := astiav.AllocPacket()
		ingest, discont, err := t.in.readPacket(pkt)
		now := time.Now()
		if t.in.push == nil {
			ingest = now
		}
		if err != nil {
			pkt.Free()
			if t.ctx.Err() != nil || errors.Is(err, astiav.ErrEof) || errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, astiav.ErrEagain) {
				continue
			}
			if t.in.live {
				// A network source that errors has gone away: the input ended.
				t.log.Info("input closed", "input", redact.URL(t.opts.Input), "reason", redact.Text(err.Error()))
				return nil
			}
			errs++
			if errs > 50 {
				return fmt.Errorf("%w: reading %s: %w", ErrDecode, t.opts.Input, err)
			}
			t.log.Warn("demux error", "error", err)
			continue
		}
		idx := pkt.StreamIndex()
		var out chan demuxedPacket
		var tb astiav.Rational
		switch idx {
		case vi:
			out, tb = t.vpackets, t.in.video.TimeBase()
		case ai:
			out, tb = t.apackets, t.in.audio.TimeBase()
		default:
			pkt.Free()
			continue
		}
		ts := pkt.Dts()
		if ts == astiav.NoPtsValue {
			ts = pkt.Pts()
		}
		if ts != astiav.NoPtsValue {
			sec := float64(ts)*tb.Float64() - origin
			if limit > 0 && sec > limit+1 {
				pkt.Free()
				return nil // past the requested duration, with margin for decoder delay
			}
			if pace {
				if paceStart.IsZero() {
					paceStart, paceOrigin = now, sec
				}
				if wait := time.Until(paceStart.Add(time.Duration((sec - paceOrigin) * float64(time.Second)))); wait > 0 {
					timer := time.NewTimer(wait)
					select {
					case <-timer.C:
					case <-t.ctx.Done():
						timer.Stop()
						pkt.Free()
						return nil
					}
					now = time.Now()
					ingest = now
				}
			}
		}
		t.demuxSt.Done(time.Time{}, time.Since(now))
		select {
		case out <- demuxedPacket{pkt: pkt, ingest: ingest, discont: discont && idx == vi}:
		case <-t.ctx.Done():
			pkt.Free()
			return nil
		}
	}
}

// drain frees what is left in a stage queue (nil is fine), without waiting.
func drain[T any](ch chan T, free func(T)) {
	for ch != nil {
		select {
		case v, ok := <-ch:
			if !ok {
				return
			}
			free(v)
		default:
			return
		}
	}
}

// cleanup frees everything the stages owned. It runs once all stage
// goroutines have returned (or, on a failed Start, before any started).
func (t *Transcoder) cleanup() {
	drain(t.vpackets, func(dp demuxedPacket) { dp.pkt.Free() })
	drain(t.apackets, func(dp demuxedPacket) { dp.pkt.Free() })
	drain(t.vframes, func(vf videoFrame) { vf.f.Free() })
	for _, ch := range t.encIn {
		drain(ch, (*astiav.Frame).Free)
	}
	for _, e := range t.encoders {
		e.cc.Free()
	}
	t.encoders = nil
	if t.vfilter != nil {
		t.vfilter.free()
	}
	if t.vdec != nil {
		t.vdec.close()
	}
	if t.audio != nil {
		t.audio.close()
	}
	if t.in != nil {
		t.in.close()
	}
}

// Tracks implements pipeline.Source.
func (t *Transcoder) Tracks() []pipeline.Track { return t.tracks }

// Skipped lists the ladder rungs not encoded for this input, with why.
func (t *Transcoder) Skipped() []ladder.SkippedRung { return t.skipped }

// Subscribe implements pipeline.Source.
func (t *Transcoder) Subscribe(opts ...pipeline.ReaderOption) *pipeline.Reader {
	return t.fanout.Subscribe(opts...)
}

// RequestKeyframe implements pipeline.Source: the request goes through the
// job's keyframe budget (keyframeClock.force).
func (t *Transcoder) RequestKeyframe(reason string) {
	t.clock.force(pipeline.KeyframeReason(reason))
}

// ticks90k converts d to the video clock.
func ticks90k(d time.Duration) int64 { return int64(d.Seconds() * pipeline.VideoClockRate) }

// Started is closed once media flows: every video rung published its first
// IDR and every audio track its first packet. A transcoder that ends
// before that never closes it; wait on Done too.
func (t *Transcoder) Started() <-chan struct{} { return t.media }

// Waiting names the tracks that have published nothing yet.
func (t *Transcoder) Waiting() []string {
	var names []string
	for i := range t.mediaOut {
		if !t.mediaOut[i].Load() {
			names = append(names, t.tracks[i].Name)
		}
	}
	return names
}

// Done implements pipeline.Source.
func (t *Transcoder) Done() <-chan struct{} { return t.done }

// Err implements pipeline.Source.
func (t *Transcoder) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Close implements pipeline.Source.
func (t *Transcoder) Close() error {
	t.cancel()
	<-t.done
	return t.err
}

// Wait blocks until the job ends and returns Err.
func (t *Transcoder) Wait() error {
	<-t.done
	return t.err
}

// Stats implements pipeline.Source.
func (t *Transcoder) Stats() pipeline.SourceStats {
	now := time.Now()
	s := pipeline.SourceStats{Uptime: now.Sub(t.started)}
	if v := t.videoPTS.Load(); v > 0 {
		s.MediaTime = time.Duration(float64(v) / pipeline.VideoClockRate * float64(time.Second))
	}
	if s.Uptime > 0 {
		s.Speed = s.MediaTime.Seconds() / s.Uptime.Seconds()
	}
	for _, st := range t.stageList {
		snap := st.Snapshot()
		s.Dropped += snap.Dropped
		s.Stages = append(s.Stages, snap)
	}
	for i, tr := range t.tracks {
		fps, bps := t.meters[i].Rate(now)
		frames, bytes := t.meters[i].Totals()
		ts := pipeline.TrackStats{Track: tr.Name, Frames: frames, Bytes: bytes, Keyframes: t.keyframes[i].Load(), FPS: fps, Bitrate: bps}
		if s.Uptime > 0 {
			ts.AvgFPS = float64(frames) / s.Uptime.Seconds()
		}
		if s.MediaTime > 0 {
			ts.AvgBitrate = float64(bytes*8) / s.MediaTime.Seconds()
		}
		s.Tracks = append(s.Tracks, ts)
	}
	s.Keyframes = t.clock.keyframeStats()
	return s
}
