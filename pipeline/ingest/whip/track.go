package whip

import (
	"math"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
)

// timeline maps one track's RTP timestamps to the session's: unwrapped to
// int64, counted from the track's first packet, offset by when that packet
// arrived after the session's epoch (so audio and video start roughly
// together; the worker rebases both), and kept strictly increasing.
type timeline struct {
	rate    int64
	started bool
	last    uint32
	ext     int64
	offset  int64
	prev    int64
	emitted bool
}

func (t *timeline) pts(ts uint32, arrival, epoch time.Time) int64 {
	if !t.started {
		t.started, t.last = true, ts
		t.offset = max(0, arrival.Sub(epoch).Nanoseconds()*t.rate/int64(time.Second))
	}
	t.ext += int64(int32(ts - t.last))
	t.last = ts
	pts := t.ext + t.offset
	if t.emitted && pts <= t.prev {
		pts = t.prev + 1
	}
	t.prev, t.emitted = pts, true
	return pts
}

// videoReceiver is the receive path of the source video: reorder,
// depacketize, drop until a keyframe after any loss, and ask for that
// keyframe.
type videoReceiver struct {
	c        *conn
	codec    string
	pt       uint8
	reorder  *reorder
	dep      depacketizer
	tl       timeline
	waitKey  bool
	waitPLI  time.Time // when the last PLI was asked for while waiting
	sps, pps []byte
	now      time.Time

	// Counters (read by tests through the conn's log; cheap).
	frames, broken, dropped uint64
}

func (c *conn) readVideo(t *webrtc.TrackRemote) {
	buf := make([]byte, readBuffer)
	var vr *videoReceiver
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		if c.source.Load() != t {
			continue // another layer, or the source is not chosen yet
		}
		if vr == nil {
			codec := pipeline.CodecH264
			var dep depacketizer = &h264Depacketizer{}
			if strings.EqualFold(t.Codec().MimeType, webrtc.MimeTypeVP8) {
				codec, dep = pipeline.CodecVP8, &vp8Depacketizer{}
			}
			vr = &videoReceiver{c: c, codec: codec, pt: uint8(t.PayloadType()), dep: dep,
				reorder: newReorder(reorderMaxPackets, reorderMaxDelay), waitKey: true, tl: timeline{rate: pipeline.VideoClockRate}}
			c.requestPLI() // the first frames are rarely a keyframe
			vr.waitPLI = time.Now()
		}
		p := &rtp.Packet{}
		if err := p.Unmarshal(append([]byte(nil), buf[:n]...)); err != nil || p.PayloadType != vr.pt {
			continue
		}
		if !vr.push(p, time.Now()) {
			return
		}
	}
}

// push handles one packet; false when the session is ending.
func (v *videoReceiver) push(p *rtp.Packet, now time.Time) bool {
	v.now = now
	ok := true
	v.reorder.push(p, now, func(p *rtp.Packet, lost bool) {
		if lost {
			v.lose()
		}
		v.dep.push(p, lost, func(f frame) {
			if ok && !v.frame(f) {
				ok = false
			}
		})
	})
	return ok
}

// lose starts waiting for a keyframe and asks for one.
func (v *videoReceiver) lose() {
	if !v.waitKey {
		v.waitKey = true
		v.c.log.Debug("whip: video loss, waiting for a keyframe")
	}
	v.waitPLI = v.now
	v.c.requestPLI()
}

func (v *videoReceiver) frame(f frame) bool {
	if f.broken {
		v.broken++
		v.lose()
		return true
	}
	if v.waitKey && !f.keyframe {
		v.dropped++
		// The keyframe the PLI asked for may have been lost too.
		if v.now.Sub(v.waitPLI) > 2*v.c.s.PLIInterval {
			v.waitPLI = v.now
			v.c.requestPLI()
		}
		if v.codec == pipeline.CodecH264 {
			v.keepParameterSets(f.data)
		}
		return true
	}
	u := unit{video: true, keyframe: f.keyframe, data: f.data, arrival: v.now}
	if v.codec == pipeline.CodecH264 {
		data, track, ok := v.h264(f)
		if !ok {
			v.broken++
			v.lose()
			return true
		}
		u.data, u.track = data, track
	} else if f.keyframe {
		w, h, ok := vp8Size(f.data)
		if !ok {
			v.broken++
			v.lose()
			return true
		}
		u.track = &pipeline.Track{Name: "video", Kind: pipeline.KindVideo, Codec: pipeline.CodecVP8,
			ClockRate: pipeline.VideoClockRate, Width: w, Height: h}
	}
	v.waitKey = false
	v.frames++
	u.pts = v.tl.pts(f.ts, v.now, v.c.epoch)
	return v.c.send(u)
}

// keepParameterSets remembers the latest SPS and PPS of an access unit.
func (v *videoReceiver) keepParameterSets(au []byte) (hasSPS, hasPPS bool) {
	for _, n := range pipeline.SplitAnnexB(au) {
		if len(n) == 0 {
			continue
		}
		switch n[0] & 0x1f {
		case 7:
			v.sps, hasSPS = n, true
		case 8:
			v.pps, hasPPS = n, true
		}
	}
	return hasSPS, hasPPS
}

// h264 makes a keyframe carry its SPS and PPS in-band (prepending the
// latest ones when the publisher sent them earlier) and describes the
// track from the SPS. Other access units pass as they are.
func (v *videoReceiver) h264(f frame) ([]byte, *pipeline.Track, bool) {
	hasSPS, hasPPS := v.keepParameterSets(f.data)
	if !f.keyframe {
		return f.data, nil, true
	}
	if v.sps == nil || v.pps == nil {
		return nil, nil, false // undecodable: the parameter sets never came
	}
	var sps h264.SPS
	if err := sps.Unmarshal(v.sps); err != nil {
		return nil, nil, false
	}
	width, height := sps.Width(), sps.Height()
	if width <= 0 || height <= 0 || width > 16384 || height > 16384 {
		return nil, nil, false
	}
	extradata := annexB(v.sps, v.pps)
	data := f.data
	if !hasSPS || !hasPPS {
		var prefix []byte
		if !hasSPS {
			prefix = annexB(v.sps)
		}
		if !hasPPS {
			prefix = append(prefix, annexB(v.pps)...)
		}
		data = append(prefix, f.data...)
	}
	fps := sps.FPS()
	if math.IsNaN(fps) || math.IsInf(fps, 0) || fps < 0 || fps > 1000 {
		fps = 0
	}
	return data, &pipeline.Track{Name: "video", Kind: pipeline.KindVideo, Codec: pipeline.CodecH264,
		ClockRate: pipeline.VideoClockRate, Width: width, Height: height, FPS: fps, Extradata: extradata}, true
}

func annexB(nalus ...[]byte) []byte {
	var out []byte
	for _, n := range nalus {
		out = append(append(out, annexBStartCode...), n...)
	}
	return out
}

func (c *conn) readAudio(t *webrtc.TrackRemote) {
	buf := make([]byte, readBuffer)
	pt := uint8(t.PayloadType())
	ro := newReorder(reorderMaxPackets, reorderMaxDelay)
	tl := timeline{rate: opusRate}
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		p := &rtp.Packet{}
		if err := p.Unmarshal(append([]byte(nil), buf[:n]...)); err != nil || p.PayloadType != pt {
			continue
		}
		now := time.Now()
		ok := true
		ro.push(p, now, func(p *rtp.Packet, _ bool) {
			if !ok || len(p.Payload) == 0 {
				return
			}
			ok = c.send(unit{pts: tl.pts(p.Timestamp, now, c.epoch), data: p.Payload, arrival: now})
		})
		if !ok {
			return
		}
	}
}
