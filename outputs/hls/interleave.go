package hls

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/prism-streaming/prism/pipeline"
)

// Audio and video are written into the host rung's muxer in media-time
// order, so that gohlslib, which closes the audio part when the video part
// closes, puts into audio part N exactly the AAC frames that start within
// video part N. Like video, gohlslib holds back the newest audio frame until
// the next one gives its duration, so before a video frame at v the audio
// is written up to and including the first frame that starts at or after v.
// AAC reaches the muxer about 50 ms after the video of the same time (the
// encoder's priming and look-ahead are two 1024-sample frames), so a video
// frame that may close a part waits, with the frames after it, until the
// audio of its time has been read, at most audioWait. This delays the
// host rung's parts by that much; the audio would not be complete earlier.
const (
	maxAudioWait = 150 * time.Millisecond
	// maxSharedAudioWait replaces it for a stream whose timeline other
	// nodes serve too (stream.shared): there a frame that gives up waiting
	// puts the late audio into the next part on this node only, and a
	// player fetching parts from several nodes gets an AAC frame twice or
	// not at all. Audio later than this is lost to that anyway.
	maxSharedAudioWait = 600 * time.Millisecond
	// maxAudioQueue bounds the AAC frames held back (about 2.7 s at 48 kHz):
	// past that, video has stalled and the audio goes out on its own.
	maxAudioQueue = 128
	// audioStalled is how far audio may trail video before the video stops
	// waiting for it.
	audioStalled = pipeline.VideoClockRate
	// maxHeld bounds the video frames waiting (1 s at 30 fps).
	maxHeld = 30
)

var errHoldExpired = errors.New("held frame waited long enough")

// heldFrame is a video frame waiting for the audio of its time.
type heldFrame struct {
	p     *pipeline.Packet
	au    [][]byte
	until time.Time
}

// read returns the next packet, or errHoldExpired when the first held frame
// has waited audioWait.
func (f *feeder) read(ctx context.Context) (*pipeline.Packet, error) {
	if len(f.held) == 0 {
		return f.reader.Read(ctx)
	}
	left := time.Until(f.held[0].until)
	if left <= 0 {
		return nil, errHoldExpired
	}
	rctx, cancel := context.WithTimeout(ctx, left)
	defer cancel()
	p, err := f.reader.Read(rctx)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, errHoldExpired
	}
	return p, err
}

// shouldHold tells whether writing p now could close a part before the
// audio of its time is in.
// audioWait is how long a video frame may wait for the audio of its time.
func (f *feeder) audioWait() time.Duration {
	if f.st.shared {
		return maxSharedAudioWait
	}
	return maxAudioWait
}

func (f *feeder) shouldHold(p *pipeline.Packet) bool {
	if f.atrack == nil || !f.segmentOpen() || f.audioSeen >= p.PTS || p.PTS-f.audioSeen > audioStalled {
		return false
	}
	return f.mayClosePart(p.PTS+f.offset, p.Keyframe)
}

// drain writes the held video frames that need not or can no longer wait.
func (f *feeder) drain() {
	for len(f.held) > 0 {
		h := f.held[0]
		if len(f.held) <= maxHeld && f.shouldHold(h.p) && time.Now().Before(h.until) {
			return
		}
		f.held = f.held[1:]
		f.writeFrame(h.p, h.au)
	}
}

func (f *feeder) audio(p *pipeline.Packet) {
	if f.atrack == nil {
		return
	}
	f.queueAudio(p)
	switch {
	case len(f.held) > 0:
		f.drain() // writes the audio before each frame first
	case f.segmentOpen():
		// Audio of the last video frame's time or older is late: the part it
		// belongs to may be closed already; the current one is the best.
		f.flushAudio(f.lastVideo)
	}
	for len(f.audioQ) > maxAudioQueue {
		q := f.audioQ[0]
		switch pts, fate := f.mapAudio(q); fate {
		case audioWrite:
			f.writeAudio(q, pts)
		case audioWait:
			// The audio jumped and the video never followed: it was no
			// new span after all.
			f.resyncAudio()
			continue
		}
		f.audioQ = f.audioQ[1:]
	}
}

// queuedAudio is an AAC frame waiting to be written: a source packet of
// span gen, or a frame of silence (p nil) at muxer PTS pts.
type queuedAudio struct {
	p   *pipeline.Packet
	gen int
	pts int64 // audio clock
}

// What becomes of a queued AAC frame.
type audioFate int

const (
	audioWrite audioFate = iota
	audioDrop            // outside its span: before its start or over the next one
	audioWait            // of a span the video has not reached yet
)

func (f *feeder) queueAudio(p *pipeline.Packet) {
	if f.r != f.st.host {
		return
	}
	// A jump of the audio timestamps starts the audio's next span, which
	// is mapped like the video's next span once the video gets there.
	if f.audioStarted && f.tm.part > 0 {
		d := (p.PTS - f.audioLast) * pipeline.VideoClockRate / int64(f.st.audio.ClockRate)
		dropped := f.reader.Dropped()
		lost := dropped != f.audioDropped // a gap the reader made is no jump
		f.audioDropped = dropped
		if p.Discontinuity || d <= 0 || (d > f.tm.part && !lost) {
			f.audioGen++
			f.audioSeen = 0
		}
	}
	f.audioStarted, f.audioLast = true, p.PTS
	f.audioQ = append(f.audioQ, queuedAudio{p: p, gen: f.audioGen})
	f.audioSeen = max(f.audioSeen, f.audioTicks(p.PTS))
	if !f.segmentOpen() && len(f.audioQ) > maxAudioQueue {
		f.audioQ = f.audioQ[1:] // waiting for the start: only the newest can be used
	}
}

// resyncAudio puts the audio back on the video's span.
func (f *feeder) resyncAudio() {
	f.log.Warn("hls: audio and video timelines disagree; following the video's")
	f.audioGen = f.gen
	for i := range f.audioQ {
		f.audioQ[i].gen = min(f.audioQ[i].gen, f.gen)
	}
	f.audioStale = 0
}

// mapAudio returns the muxer PTS of a queued frame, audio clock.
func (f *feeder) mapAudio(q queuedAudio) (int64, audioFate) {
	if q.p == nil {
		return q.pts, audioWrite
	}
	if q.gen > f.gen {
		return 0, audioWait
	}
	sp, ok := f.span(q.gen)
	if !ok {
		return 0, audioDrop
	}
	rate := int64(f.st.audio.ClockRate)
	pts := q.p.PTS + sp.offset*rate/pipeline.VideoClockRate
	t := f.audioTicks(pts)
	if next, ok := f.span(q.gen + 1); t < sp.start-f.audioFrame() || (ok && t >= next.start) {
		return pts, audioDrop
	}
	return pts, audioWrite
}

// flushAudio writes the queued audio that starts before the video time v
// (90 kHz, muxer), and the frame that starts at or after v if it is
// queued, which makes gohlslib put the frame before it into the part that
// v may close.
func (f *feeder) flushAudio(v int64) {
	n := 0
	for _, q := range f.audioQ {
		pts, fate := f.mapAudio(q)
		if fate == audioWait {
			break
		}
		if fate == audioWrite {
			if f.audioTicks(pts) >= v+f.audioFrame() {
				break
			}
			f.writeAudio(q, pts)
		} else if f.audioStale++; f.audioStale > maxAudioQueue {
			f.resyncAudio() // the audio never jumped with the video
		}
		n++
	}
	f.audioQ = f.audioQ[n:]
}

func (f *feeder) writeAudio(q queuedAudio, pts int64) {
	if !f.segmentOpen() || f.audioTicks(pts) < f.tm.start {
		return // before the stream's start: gohlslib would drop it anyway
	}
	data, ntp := silentAAC(f.atrack), time.Now()
	if q.p != nil {
		data, ntp = q.p.Data, ntpOf(q.p)
		f.audioStale = 0
	}
	if err := f.muxer.WriteMPEG4Audio(f.atrack, ntp, pts, [][]byte{data}); err != nil {
		f.errs.log(f.log, "hls: muxer refused an audio frame", err)
		return
	}
	f.audioEnd = pts + mpeg4audio.SamplesPerAccessUnit
}

// fillSilence queues silence from the end of the audio of the span being
// closed up to the muxer time at (90 kHz), where the next span starts, so
// that the audio track has no hole that players would have to bridge.
func (f *feeder) fillSilence(at int64) {
	if f.atrack == nil || f.audioEnd == 0 || silentAAC(f.atrack) == nil {
		return
	}
	end, i := f.audioEnd, 0
	for ; i < len(f.audioQ); i++ {
		q := f.audioQ[i]
		if q.gen > f.gen {
			break
		}
		if pts, fate := f.mapAudio(q); fate == audioWrite && f.audioTicks(pts) < at {
			end = max(end, pts+mpeg4audio.SamplesPerAccessUnit)
		}
	}
	until := at * int64(f.st.audio.ClockRate) / pipeline.VideoClockRate
	var silence []queuedAudio
	for pts := end; pts < until && int64(len(silence)) < maxFill/f.audioFrame(); pts += mpeg4audio.SamplesPerAccessUnit {
		silence = append(silence, queuedAudio{gen: f.gen, pts: pts})
	}
	f.audioQ = slices.Insert(f.audioQ, i, silence...)
}

// silentAAC is one AAC-LC frame of silence for the track's channel count
// (the frames hls.js inserts into gaps), nil for other configurations.
func silentAAC(t *gohlslib.Track) []byte {
	c, ok := t.Codec.(*codecs.MPEG4Audio)
	if !ok || c.Config.Type != mpeg4audio.ObjectTypeAACLC {
		return nil
	}
	switch c.Config.ChannelConfig {
	case 1:
		return silentMono
	case 2:
		return silentStereo
	}
	return nil
}

var (
	silentMono   = []byte{0x00, 0xc8, 0x00, 0x80, 0x23, 0x80}
	silentStereo = []byte{0x21, 0x00, 0x49, 0x90, 0x02, 0x19, 0x00, 0x23, 0x80}
)

// audioFrame is the duration of an AAC frame (1024 samples), 90 kHz.
func (f *feeder) audioFrame() int64 {
	return mpeg4audio.SamplesPerAccessUnit * pipeline.VideoClockRate / int64(f.st.audio.ClockRate)
}

// audioTicks converts an audio PTS to 90 kHz.
func (f *feeder) audioTicks(pts int64) int64 {
	return pts * pipeline.VideoClockRate / int64(f.st.audio.ClockRate)
}
