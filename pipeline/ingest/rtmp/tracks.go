package rtmp

import (
	"bytes"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// mapper turns gortmplib's tracks into pipeline tracks and its callbacks
// into session packets.
type mapper struct {
	sess      *ingest.Session
	log       *slog.Logger
	fps       float64 // onMetaData's, when the SPS has no timing
	av1SeqHdr []byte
}

// setup maps the tracks (the first supported video track, then the first
// supported audio track) and registers a callback for every track of r,
// a no-op for the skipped ones: the library calls them unchecked.
func (m *mapper) setup(r *gortmplib.Reader) ([]pipeline.Track, error) {
	var video, audio *pipeline.Track
	var vw *videoWriter
	var aw *audioWriter
	for _, t := range r.Tracks() {
		mapped := false
		switch c := t.Codec.(type) {
		case *codecs.H264:
			if video == nil {
				if vw, video = m.h26xTrack(false, [][]byte{c.SPS, c.PPS}); vw != nil {
					r.OnDataH264(t, vw.onH26x)
					mapped = true
				}
			}
			if !mapped {
				r.OnDataH264(t, func(time.Duration, time.Duration, [][]byte) {})
			}
		case *codecs.H265:
			if video == nil {
				if vw, video = m.h26xTrack(true, [][]byte{c.VPS, c.SPS, c.PPS}); vw != nil {
					r.OnDataH265(t, vw.onH26x)
					mapped = true
				}
			}
			if !mapped {
				r.OnDataH265(t, func(time.Duration, time.Duration, [][]byte) {})
			}
		case *codecs.AV1:
			if video == nil {
				vw, video = m.av1Track()
				r.OnDataAV1(t, vw.onAV1)
				mapped = true
			} else {
				r.OnDataAV1(t, func(time.Duration, [][]byte) {})
			}
		case *codecs.MPEG4Audio:
			if audio == nil && c.Config != nil {
				if aw, audio = m.aacTrack(c); aw != nil {
					r.OnDataMPEG4Audio(t, aw.onAudio)
					mapped = true
				}
			}
			if !mapped {
				r.OnDataMPEG4Audio(t, func(time.Duration, []byte) {})
			}
		case *codecs.Opus:
			if audio == nil {
				aw, audio = m.opusTrack(c)
				r.OnDataOpus(t, aw.onAudio)
				mapped = true
			} else {
				r.OnDataOpus(t, func(time.Duration, []byte) {})
			}
		default:
			noop(r, t)
		}
		if !mapped {
			// An unsupported codec, a second track of a kind, or a
			// configuration that did not parse.
			m.log.Warn("rtmp: skipping a track", "codec", fmt.Sprintf("%T", t.Codec))
		}
	}
	if video == nil {
		return nil, fmt.Errorf("%w: no H.264, H.265 or AV1 video track", ingest.ErrUnsupported)
	}
	tracks := []pipeline.Track{*video}
	vw.id = 0
	if audio != nil {
		tracks = append(tracks, *audio)
		aw.id = 1
	}
	return tracks, nil
}

// noop registers a callback that drops the data of a skipped track.
func noop(r *gortmplib.Reader, t *gortmplib.Track) {
	switch t.Codec.(type) {
	case *codecs.VP9:
		r.OnDataVP9(t, func(time.Duration, []byte) {})
	case *codecs.FLAC:
		r.OnDataFLAC(t, func(time.Duration, []byte) {})
	case *codecs.MPEG1Audio:
		r.OnDataMPEG1Audio(t, func(time.Duration, []byte) {})
	case *codecs.AC3:
		r.OnDataAC3(t, func(time.Duration, []byte) {})
	case *codecs.G711:
		r.OnDataG711(t, func(time.Duration, []byte) {})
	case *codecs.LPCM:
		r.OnDataLPCM(t, func(time.Duration, []byte) {})
	}
}

func (m *mapper) h26xTrack(hevc bool, params [][]byte) (*videoWriter, *pipeline.Track) {
	w := &videoWriter{sess: m.sess, log: m.log, hevc: hevc, clock: clock{rate: pipeline.VideoClockRate}}
	for _, p := range params {
		if len(p) == 0 {
			m.log.Warn("rtmp: video configuration without parameter sets")
			return nil, nil
		}
		w.setParam(p)
	}
	t := &pipeline.Track{Kind: pipeline.KindVideo, ClockRate: pipeline.VideoClockRate, Codec: pipeline.CodecH264}
	if hevc {
		t.Codec = pipeline.CodecH265
		var sps h265.SPS
		if err := sps.Unmarshal(w.sps); err != nil {
			m.log.Warn("rtmp: invalid H.265 SPS", "err", err)
			return nil, nil
		}
		t.Width, t.Height, t.FPS = sps.Width(), sps.Height(), sps.FPS()
	} else {
		var sps h264.SPS
		if err := sps.Unmarshal(w.sps); err != nil {
			m.log.Warn("rtmp: invalid H.264 SPS", "err", err)
			return nil, nil
		}
		t.Width, t.Height, t.FPS = sps.Width(), sps.Height(), sps.FPS()
	}
	if t.FPS <= 0 || t.FPS > 1000 {
		t.FPS = m.fps
	}
	t.Extradata = annexB(w.params())
	w.track = t
	return w, t
}

func (m *mapper) av1Track() (*videoWriter, *pipeline.Track) {
	w := &videoWriter{sess: m.sess, log: m.log, av1: true, clock: clock{rate: pipeline.VideoClockRate}}
	t := &pipeline.Track{Kind: pipeline.KindVideo, ClockRate: pipeline.VideoClockRate, Codec: pipeline.CodecAV1, FPS: m.fps}
	if m.av1SeqHdr != nil {
		var sh av1.SequenceHeader
		if sh.Unmarshal(m.av1SeqHdr) == nil {
			t.Width, t.Height = sh.Width(), sh.Height()
		}
		t.Extradata, _ = av1.Bitstream{m.av1SeqHdr}.Marshal()
	}
	w.track = t
	return w, t
}

func (m *mapper) aacTrack(c *codecs.MPEG4Audio) (*audioWriter, *pipeline.Track) {
	cfg := c.Config
	extra, err := cfg.Marshal()
	if err != nil || cfg.SampleRate <= 0 {
		m.log.Warn("rtmp: invalid AAC configuration", "err", err)
		return nil, nil
	}
	frame := int64(1024)
	if cfg.FrameLengthFlag {
		frame = 960
	}
	t := &pipeline.Track{Kind: pipeline.KindAudio, Codec: pipeline.CodecAAC, ClockRate: cfg.SampleRate,
		SampleRate: cfg.SampleRate, Channels: aacChannels(cfg.ChannelConfig), Extradata: extra}
	return &audioWriter{sess: m.sess, clock: clock{rate: int64(cfg.SampleRate)}, duration: func([]byte) int64 { return frame }}, t
}

// aacChannels is the channel count of an AAC channel configuration; 0
// when a program config element defines the layout.
func aacChannels(conf uint8) int {
	switch {
	case conf >= 1 && conf <= 6:
		return int(conf)
	case conf == 7:
		return 8
	}
	return 0
}

func (m *mapper) opusTrack(c *codecs.Opus) (*audioWriter, *pipeline.Track) {
	t := &pipeline.Track{Kind: pipeline.KindAudio, Codec: pipeline.CodecOpus, ClockRate: 48000, SampleRate: 48000, Channels: 2}
	if c.IDHeader != nil {
		if c.IDHeader.ChannelCount > 0 {
			t.Channels = int(c.IDHeader.ChannelCount)
		}
		t.Extradata, _ = c.IDHeader.Marshal()
	}
	return &audioWriter{sess: m.sess, clock: clock{rate: 48000}, duration: opus.PacketDuration2}, t
}

// videoWriter writes one video track's access units: Annex-B with the
// parameter sets in-band on every random-access AU, from the first one on.
type videoWriter struct {
	sess  *ingest.Session
	log   *slog.Logger
	track *pipeline.Track
	id    int
	hevc  bool
	av1   bool
	clock clock

	vps, sps, pps []byte
	started       bool
	dropped       int
}

func (w *videoWriter) nalType(n []byte) int {
	if w.hevc {
		return int(n[0]>>1) & 0x3F
	}
	return int(n[0]) & 0x1F
}

// NALU types of H.264 / H.265 the writer cares about.
const (
	h264AUD, h264SPS, h264PPS = 9, 7, 8
	h265VPS, h265SPS, h265PPS = 32, 33, 34
	h265AUD                   = 35
)

func (w *videoWriter) isParam(typ int) bool {
	if w.hevc {
		return typ == h265VPS || typ == h265SPS || typ == h265PPS
	}
	return typ == h264SPS || typ == h264PPS
}

func (w *videoWriter) isVCL(typ int) bool {
	if w.hevc {
		return typ < 32
	}
	return typ >= 1 && typ <= 5
}

// isKey: H.264 IDR; H.265 IRAP (BLA, IDR, CRA).
func (w *videoWriter) isKey(typ int) bool {
	if w.hevc {
		return typ >= 16 && typ <= 21
	}
	return typ == 5
}

func (w *videoWriter) isAUD(typ int) bool {
	if w.hevc {
		return typ == h265AUD
	}
	return typ == h264AUD
}

// setParam keeps the latest parameter set of its type (copied: the AU's
// buffer belongs to one message).
func (w *videoWriter) setParam(n []byte) {
	p := bytes.Clone(n)
	switch typ := w.nalType(n); {
	case w.hevc && typ == h265VPS:
		w.vps = p
	case w.hevc && typ == h265SPS, !w.hevc && typ == h264SPS:
		w.sps = p
	case w.hevc && typ == h265PPS, !w.hevc && typ == h264PPS:
		w.pps = p
	}
}

func (w *videoWriter) params() [][]byte {
	if w.hevc {
		return [][]byte{w.vps, w.sps, w.pps}
	}
	return [][]byte{w.sps, w.pps}
}

// accessUnit returns the AU to write, with the current parameter sets put
// in front of a random-access AU's slices (after its AUD), or ok false for
// an AU with no picture (a configuration message, SEI alone).
func (w *videoWriter) accessUnit(au [][]byte) (out [][]byte, key, ok bool) {
	hasVCL := false
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		typ := w.nalType(n)
		switch {
		case w.isParam(typ):
			w.setParam(n)
		case w.isVCL(typ):
			hasVCL = true
			key = key || w.isKey(typ)
		}
	}
	if !hasVCL {
		return nil, false, false
	}
	out = make([][]byte, 0, len(au)+3)
	if !key {
		for _, n := range au {
			if len(n) > 0 {
				out = append(out, n)
			}
		}
		return out, false, true
	}
	// Rebuild the head: AUD, VPS/SPS/PPS, then everything else but the
	// parameter sets the AU carried (already folded into the current ones).
	rest := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		typ := w.nalType(n)
		switch {
		case w.isAUD(typ) && len(out) == 0:
			out = append(out, n)
		case w.isParam(typ):
		default:
			rest = append(rest, n)
		}
	}
	for _, p := range w.params() {
		if len(p) > 0 {
			out = append(out, p)
		}
	}
	return append(out, rest...), true, true
}

func (w *videoWriter) onH26x(pts, dts time.Duration, au [][]byte) {
	out, key, ok := w.accessUnit(au)
	if !ok {
		return
	}
	w.write(pts, dts, annexB(out), key)
}

func (w *videoWriter) onAV1(pts time.Duration, tu [][]byte) {
	key := false
	for _, obu := range tu {
		if len(obu) > 0 && av1.OBUType((obu[0]>>3)&0xF) == av1.OBUTypeSequenceHeader {
			key = true
		}
	}
	data, err := av1.Bitstream(tu).Marshal()
	if err != nil {
		w.dropped++
		return
	}
	w.write(pts, pts, data, key)
}

func (w *videoWriter) write(pts, dts time.Duration, data []byte, key bool) {
	if !w.started {
		// The worker starts decoding at a keyframe; earlier AUs refer to
		// pictures it never saw.
		if !key {
			w.dropped++
			return
		}
		w.started = true
	}
	p, d := w.clock.convert(pts, dts)
	w.sess.WritePacket(&pipeline.Packet{Track: w.id, Data: data, PTS: p, DTS: d, Keyframe: key})
}

func annexB(au [][]byte) []byte {
	n := 0
	for _, x := range au {
		n += 4 + len(x)
	}
	b := make([]byte, 0, n)
	for _, x := range au {
		b = append(b, 0, 0, 0, 1)
		b = append(b, x...)
	}
	return b
}

// audioWriter writes one audio track's frames (raw AAC AUs, Opus packets).
type audioWriter struct {
	sess     *ingest.Session
	id       int
	clock    clock
	duration func([]byte) int64 // in ClockRate ticks
}

func (w *audioWriter) onAudio(pts time.Duration, frame []byte) {
	if len(frame) == 0 {
		return
	}
	p, _ := w.clock.convert(pts, pts)
	w.sess.WritePacket(&pipeline.Packet{Track: w.id, Data: frame, PTS: p, DTS: p, Duration: w.duration(frame)})
}

// wrap is where RTMP's 32-bit millisecond timestamps wrap (49.7 days).
const wrap = time.Duration(1<<32) * time.Millisecond

// clock converts a track's RTMP timestamps to ticks of its clock rate:
// it unwraps the 32-bit millisecond counter and keeps DTS monotonic (a
// publisher's clock may step back; the worker needs it not to).
type clock struct {
	rate    int64
	epoch   time.Duration
	last    time.Duration
	lastDTS int64
	started bool
}

func (c *clock) convert(pts, dts time.Duration) (int64, int64) {
	if c.started {
		switch {
		case dts < c.last-wrap/2:
			c.epoch += wrap
		case dts > c.last+wrap/2 && c.epoch >= wrap:
			c.epoch -= wrap // a late message from before the wrap
		}
	}
	off := pts - dts
	c.last = dts
	d := ticks(c.epoch+dts, c.rate)
	if c.started && d < c.lastDTS {
		d = c.lastDTS
	}
	c.started, c.lastDTS = true, d
	return max(ticks(c.epoch+dts+off, c.rate), d), d
}

// ticks converts d to units of rate per second without overflowing.
func ticks(d time.Duration, rate int64) int64 {
	return int64(d/time.Second)*rate + int64(d%time.Second)*rate/int64(time.Second)
}
