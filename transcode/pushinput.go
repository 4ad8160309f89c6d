package transcode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/avlog"
	"github.com/prism-streaming/prism/pipeline"
)

// ErrSource: a pushed source Prism cannot decode (no video track, an
// unknown codec, no keyframe in time).
var ErrSource = errors.New("pushed source unusable")

// inputPadding is FFmpeg's AV_INPUT_BUFFER_PADDING_SIZE: decoders may read
// this far past a packet's end, and go-astiav's Packet.FromData allocates
// exactly the bytes it is given.
const inputPadding = 64

// pushProbeTime bounds how long the input waits for the first video
// keyframe (and a few frames after it, to measure the frame rate).
const pushProbeTime = 10 * time.Second

// pushInput reads a pushed source (a publisher's access units, relayed by
// queue/relay.FollowSource) as the transcoder's input.
//
// Elementary tracks (RTMP, WHIP: H.264, H.265, AV1, VP8, AAC, Opus) go to
// the decoders as packets with the codec parameters the listener parsed:
// nothing probes them. A container track (SRT's MPEG-TS) goes through a
// custom AVIOContext into FFmpeg's mpegts demuxer.
type pushInput struct {
	src    pipeline.Source
	reader *pipeline.Reader
	ctx    context.Context
	cancel context.CancelFunc

	// Elementary: source track ID -> input stream index, and the common
	// time base subtracted from every track (seconds of the first video
	// keyframe).
	streamOf map[int]int
	tracks   []pipeline.Track
	base     float64
	queued   []*pipeline.Packet // read while probing, handed out first

	// Container.
	ioc           *astiav.IOContext
	leftover      []byte
	containerDisc bool // a new publisher's bytes came: mark the next video keyframe
}

// codecIDs maps pipeline codec names to FFmpeg decoders.
var codecIDs = map[string]astiav.CodecID{
	pipeline.CodecH264: astiav.CodecIDH264,
	pipeline.CodecH265: astiav.CodecIDHevc,
	pipeline.CodecAV1:  astiav.CodecIDAv1,
	pipeline.CodecVP8:  astiav.CodecIDVp8,
	pipeline.CodecVP9:  astiav.CodecIDVp9,
	pipeline.CodecAAC:  astiav.CodecIDAac,
	pipeline.CodecOpus: astiav.CodecIDOpus,
	pipeline.CodecMP3:  astiav.CodecIDMp3,
}

// openPushInput opens src as an input. label names it in errors and logs.
func openPushInput(ctx context.Context, src pipeline.Source, label string) (_ *input, err error) {
	initFFmpeg()
	tracks := src.Tracks()
	p := &pushInput{src: src, streamOf: map[int]int{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, p.cancel)
	defer stop() // from here the transcoder cancels it (input.close)
	// Buffer a few seconds: a slow decoder drops its own packets (and video
	// resumes at a keyframe it asks for), never the publisher's.
	p.reader = src.Subscribe(pipeline.WithName("transcode"), pipeline.WithBufferSize(4096),
		pipeline.WithKeyframeRequest(func(int) { src.RequestKeyframe(pipeline.KeyframeDrop) }))
	in := &input{url: label, live: true, push: p}
	defer func() {
		if err != nil {
			in.close()
		}
	}()
	if i := slices.IndexFunc(tracks, func(t pipeline.Track) bool { return t.Kind == pipeline.KindContainer }); i >= 0 {
		if tracks[i].Codec != pipeline.CodecMPEGTS {
			return nil, fmt.Errorf("%w: %s: container %q", ErrSource, label, tracks[i].Codec)
		}
		return in, p.openContainer(in, tracks[i].ID, label)
	}
	return in, p.openElementary(in, tracks, label)
}

// openElementary builds one input stream per usable track and waits for the
// first video keyframe, measuring the frame rate when the publisher did not
// say it.
func (p *pushInput) openElementary(in *input, tracks []pipeline.Track, label string) error {
	in.fc = astiav.AllocFormatContext()
	if in.fc == nil {
		return fmt.Errorf("%w: %s: allocating format context failed", ErrOpenInput, label)
	}
	in.unopened = true
	var video *pipeline.Track
	for _, t := range tracks {
		id, ok := codecIDs[t.Codec]
		if !ok || astiav.FindDecoder(id) == nil || t.ClockRate <= 0 {
			continue
		}
		isVideo := t.Kind == pipeline.KindVideo && in.video == nil && t.Width > 0 && t.Height > 0
		isAudio := t.Kind == pipeline.KindAudio && in.audio == nil && t.SampleRate > 0
		if !isVideo && !isAudio {
			continue
		}
		s := in.fc.NewStream(nil)
		cp := s.CodecParameters()
		cp.SetCodecID(id)
		if len(t.Extradata) > 0 {
			if err := cp.SetExtraData(t.Extradata); err != nil {
				return fmt.Errorf("%w: %s: extradata of %s: %w", ErrSource, label, t.Name, err)
			}
		}
		s.SetTimeBase(astiav.NewRational(1, t.ClockRate))
		if isVideo {
			cp.SetMediaType(astiav.MediaTypeVideo)
			cp.SetWidth(t.Width)
			cp.SetHeight(t.Height)
			if t.FPS > 0 && t.FPS <= 240 {
				s.SetAvgFrameRate(fpsRational(t.FPS))
			}
			in.video = s
			video = &t
		} else {
			cp.SetMediaType(astiav.MediaTypeAudio)
			cp.SetSampleRate(t.SampleRate)
			if t.Channels == 1 {
				cp.SetChannelLayout(astiav.ChannelLayoutMono)
			} else {
				cp.SetChannelLayout(astiav.ChannelLayoutStereo)
			}
			in.audio = s
		}
		p.streamOf[t.ID] = s.Index()
	}
	if in.video == nil {
		return fmt.Errorf("%w: %s: no decodable video track in %s", ErrNoVideo, label, describeTracks(tracks))
	}
	p.tracks = tracks
	return p.probe(in, *video, label)
}

// probe reads up to the first video keyframe (dropping what comes before
// it: nothing decodes without it) and, when the frame rate is unknown, a
// few frames more to measure it.
func (p *pushInput) probe(in *input, video pipeline.Track, label string) error {
	p.src.RequestKeyframe(pipeline.KeyframeSource)
	deadline := time.Now().Add(pushProbeTime)
	ctx, cancel := context.WithDeadline(p.ctx, deadline)
	defer cancel()
	needFPS := in.video.AvgFrameRate().Num() <= 0
	var dts []int64
	for {
		pkt, err := p.reader.Read(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && len(p.queued) > 0 {
				break // a keyframe came, the frame rate stays a guess
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: %s: no video keyframe within %s", ErrSource, label, pushProbeTime)
			}
			return fmt.Errorf("%w: %s: the source ended before its first keyframe: %w", ErrOpenInput, label, err)
		}
		isVideo := pkt.Track == video.ID
		if len(p.queued) == 0 {
			if !isVideo || !pkt.Keyframe {
				continue
			}
			p.base = float64(pkt.DTS) / float64(video.ClockRate)
		}
		p.queued = append(p.queued, pkt)
		if isVideo {
			dts = append(dts, pkt.DTS)
		}
		if !needFPS || len(dts) >= 12 {
			break
		}
	}
	if needFPS {
		if fps := measureFPS(dts, video.ClockRate); fps > 0 {
			in.video.SetAvgFrameRate(fpsRational(fps))
		}
	}
	return nil
}

// measureFPS is the frame rate of the median DTS step, or 0.
func measureFPS(dts []int64, clockRate int) float64 {
	var steps []int64
	for i := 1; i < len(dts); i++ {
		if d := dts[i] - dts[i-1]; d > 0 {
			steps = append(steps, d)
		}
	}
	if len(steps) == 0 {
		return 0
	}
	slices.Sort(steps)
	fps := float64(clockRate) / float64(steps[len(steps)/2])
	if fps < 1 || fps > 240 {
		return 0
	}
	return fps
}

// fpsRational turns a frame rate into a rational, exact for the NTSC ones.
func fpsRational(fps float64) astiav.Rational {
	for _, r := range []astiav.Rational{astiav.NewRational(30000, 1001), astiav.NewRational(60000, 1001), astiav.NewRational(24000, 1001)} {
		if math.Abs(r.Float64()-fps) < 0.01 {
			return r
		}
	}
	return astiav.NewRational(int(math.Round(fps*1000)), 1000)
}

func describeTracks(tracks []pipeline.Track) string {
	var s []string
	for _, t := range tracks {
		s = append(s, fmt.Sprintf("%s %s", t.Kind, t.Codec))
	}
	if len(s) == 0 {
		return "no tracks"
	}
	return fmt.Sprint(s)
}

// readPacket fills pkt with the next packet of a used track, on the time
// base of its stream, rebased so the first video keyframe is at zero.
func (p *pushInput) readPacket(pkt *astiav.Packet) (time.Time, bool, error) {
	for {
		var sp *pipeline.Packet
		if len(p.queued) > 0 {
			sp, p.queued = p.queued[0], p.queued[1:]
		} else {
			var err error
			if sp, err = p.reader.Read(p.ctx); err != nil {
				return time.Time{}, false, astiav.ErrEof
			}
		}
		idx, ok := p.streamOf[sp.Track]
		if !ok || len(sp.Data) == 0 {
			continue
		}
		rate := float64(p.tracks[sp.Track].ClockRate)
		shift := int64(math.Round(p.base * rate))
		pts, dts := sp.PTS-shift, sp.DTS-shift
		if dts < 0 {
			continue // before the first keyframe (audio interleaved ahead of it)
		}
		buf := make([]byte, len(sp.Data)+inputPadding)
		copy(buf, sp.Data)
		if err := pkt.FromData(buf); err != nil {
			return time.Time{}, false, fmt.Errorf("%w: packet: %w", ErrDecode, err)
		}
		pkt.SetSize(len(sp.Data))
		pkt.SetStreamIndex(idx)
		pkt.SetPts(pts)
		pkt.SetDts(dts)
		if sp.Duration > 0 {
			pkt.SetDuration(sp.Duration)
		}
		if sp.Keyframe {
			pkt.SetFlags(astiav.NewPacketFlags(astiav.PacketFlagKey))
		}
		return sp.Ingest, sp.Discontinuity && p.tracks[sp.Track].Kind == pipeline.KindVideo, nil
	}
}

// openContainer opens FFmpeg's mpegts demuxer on the container track's
// bytes.
func (p *pushInput) openContainer(in *input, track int, label string) error {
	p.reader.Close()
	p.reader = p.src.Subscribe(pipeline.WithName("transcode"), pipeline.WithBufferSize(8192), pipeline.WithTracks(track))
	ioc, err := astiav.AllocIOContext(64<<10, false, p.readBytes, nil, nil)
	if err != nil {
		return fmt.Errorf("%w: %s: AVIOContext: %w", ErrOpenInput, label, err)
	}
	p.ioc = ioc
	in.fc = astiav.AllocFormatContext()
	if in.fc == nil {
		return fmt.Errorf("%w: %s: allocating format context failed", ErrOpenInput, label)
	}
	in.fc.SetPb(ioc)
	dict := astiav.NewDictionary()
	defer dict.Free()
	// As for network pulls: one second of analysis finds a live TS's codecs.
	_ = dict.Set("analyzeduration", "1000000", 0)
	_ = dict.Set("probesize", "2000000", 0)
	var openErr error
	lines := avlog.Capture(false, func() { openErr = in.fc.OpenInput("", astiav.FindInputFormat("mpegts"), dict) })
	if openErr != nil {
		in.fc.Free()
		in.fc = nil
		return fmt.Errorf("%w: %s: %w%s", ErrOpenInput, label, openErr, detail(lines))
	}
	lines = avlog.Capture(false, func() { openErr = in.fc.FindStreamInfo(nil) })
	if openErr != nil {
		return fmt.Errorf("%w: %s: reading stream information: %w%s", ErrOpenInput, label, openErr, detail(lines))
	}
	in.pickStreams()
	if in.video == nil {
		return fmt.Errorf("%w: %s", ErrNoVideo, label)
	}
	return nil
}

// readBytes is the AVIOContext read callback: it blocks until bytes come
// (FFmpeg must never get 0 bytes without an error) and reports io.EOF once
// the source ended.
func (p *pushInput) readBytes(b []byte) (int, error) {
	for len(p.leftover) == 0 {
		sp, err := p.reader.Read(p.ctx)
		if err != nil {
			return 0, io.EOF
		}
		p.leftover = sp.Data
		if sp.Discontinuity {
			p.containerDisc = true
		}
	}
	n := copy(b, p.leftover)
	p.leftover = p.leftover[n:]
	return n, nil
}

// close stops reading the source (a blocked read returns) and frees the
// AVIOContext; the format context is the input's.
func (p *pushInput) close() {
	p.cancel()
	p.reader.Close()
}

func (p *pushInput) freeIO() {
	if p.ioc != nil {
		p.ioc.Free()
		p.ioc = nil
	}
}
