package hls

import (
	"context"
	"errors"
	"time"

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
// audio of its time has been read, at most maxAudioWait. This delays the
// host rung's parts by that much; the audio would not be complete earlier.
const (
	maxAudioWait = 150 * time.Millisecond
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
// has waited maxAudioWait.
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
func (f *feeder) shouldHold(p *pipeline.Packet) bool {
	if f.atrack == nil || !f.segmentOpen() || f.audioSeen >= p.PTS || p.PTS-f.audioSeen > audioStalled {
		return false
	}
	return f.mayClosePart(p.PTS, p.Keyframe)
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
		f.writeAudio(f.audioQ[0])
		f.audioQ = f.audioQ[1:]
	}
}

func (f *feeder) queueAudio(p *pipeline.Packet) {
	if f.r != f.st.host {
		return
	}
	f.audioQ = append(f.audioQ, p)
	f.audioSeen = max(f.audioSeen, f.audioTicks(p))
	if !f.segmentOpen() && len(f.audioQ) > maxAudioQueue {
		f.audioQ = f.audioQ[1:] // waiting for the start: only the newest can be used
	}
}

// flushAudio writes the queued audio that starts before the video time v
// (90 kHz), and the frame that starts at or after v if it is queued, which
// makes gohlslib put the frame before it into the part that v may close.
func (f *feeder) flushAudio(v int64) {
	n := 0
	for _, p := range f.audioQ {
		if f.audioTicks(p) >= v+f.audioFrame() {
			break
		}
		f.writeAudio(p)
		n++
	}
	f.audioQ = f.audioQ[n:]
}

func (f *feeder) writeAudio(p *pipeline.Packet) {
	if !f.segmentOpen() || f.audioTicks(p) < f.tm.start {
		return // before the stream's start: gohlslib would drop it anyway
	}
	if err := f.muxer.WriteMPEG4Audio(f.atrack, ntpOf(p), p.PTS, [][]byte{p.Data}); err != nil {
		f.errs.log(f.log, "hls: muxer refused an audio frame", err)
	}
}

// audioFrame is the duration of an AAC frame (1024 samples), 90 kHz.
func (f *feeder) audioFrame() int64 {
	return mpeg4audio.SamplesPerAccessUnit * pipeline.VideoClockRate / int64(f.st.audio.ClockRate)
}

func (f *feeder) audioTicks(p *pipeline.Packet) int64 {
	return p.PTS * pipeline.VideoClockRate / int64(f.st.audio.ClockRate)
}
