package hls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/prism-streaming/prism/pipeline"
)

// feeder is the one goroutine that writes into a rung's muxer (gohlslib's
// Write* must not be called concurrently), from the rung's own reader.
type feeder struct {
	st     *stream
	r      *rung
	reader *pipeline.Reader
	log    *slog.Logger

	frame  int64 // frame interval of the rung, 90 kHz
	tm     timing
	muxer  *gohlslib.Muxer
	vtrack *gohlslib.Track
	atrack *gohlslib.Track // nil unless the rung carries the audio rendition

	videoWrites int
	lastVideo   int64     // muxer PTS of the last video frame written
	lastNTP     time.Time // its EXT-X-PROGRAM-DATE-TIME
	anchorNTP   time.Time // PROGRAM-DATE-TIME of the frame at anchorPTS (see pdt)
	anchorPTS   int64
	segStart    int64  // muxer PTS of the frame that opened the segment being written
	delta       int    // gohlslib's segment numbers to the stream's timeline (timeline.go)
	dropped     uint64 // reader drops already seen (gapfill.go)

	// The muxer's timeline (discontinuity.go): muxer PTS = source PTS +
	// offset of the current span; a jump in the source starts a new span.
	offset  int64
	lastSrc int64  // source PTS of the last video frame written
	gen     int    // span of the video
	spans   []span // the latest spans, for the audio
	waitKey bool   // a jump without an IDR: video waits for one

	// Interleaving of audio with video (interleave.go).
	audioQ       []queuedAudio // AAC waiting for the video to pass its time
	audioSeen    int64         // start of the newest AAC frame read, 90 kHz, source
	audioGen     int           // span of the newest AAC frame read
	audioLast    int64         // its source PTS, audio clock
	audioStarted bool
	audioDropped uint64      // reader drops already seen by the audio
	audioEnd     int64       // muxer PTS where the last written AAC frame ends, audio clock
	audioStale   int         // old-span AAC frames dropped in a row
	held         []heldFrame // video frames waiting for the audio of their time

	// Read-back of the muxer's playlist (progress.go).
	probing   bool          // the first-segment helper was started
	firstSeg  atomic.Bool   // the helper saw the first segment
	synced    bool          // the first segment exists: read back after writes
	discont   bool          // a source change waits for the next segment to start
	state     playlistState // as last read back
	partStart int64         // PTS that opened the part being written
	pending   []pendingFrame

	errs errorLog
}

// pendingFrame is a frame written into the part being written.
type pendingFrame struct {
	ingest time.Time // zero for frames repeated by gapfill
	size   int
}

func newFeeder(st *stream, r *rung, reader *pipeline.Reader) *feeder {
	f := &feeder{st: st, r: r, reader: reader, log: st.log.With("rung", r.name)}
	if r.track.FPS > 0 {
		f.frame = int64(math.Round(pipeline.VideoClockRate / r.track.FPS))
	}
	return f
}

// run feeds the muxer until the reader closes (the job ended) or ctx ends.
func (f *feeder) run(ctx context.Context) error {
	first, err := f.waitStart(ctx)
	if err != nil {
		return ignoreEnd(err)
	}
	if err := f.startMuxer(); err != nil {
		return err
	}
	for _, p := range first {
		f.handle(p)
	}
	for {
		p, err := f.read(ctx)
		if errors.Is(err, errHoldExpired) {
			f.drain()
			continue
		}
		if err != nil {
			return ignoreEnd(err)
		}
		if f.st.testHook != nil {
			f.st.testHook(f.r.name, p)
		}
		f.handle(p)
	}
}

func (f *feeder) handle(p *pipeline.Packet) {
	if p.Track == f.r.track.ID {
		f.video(p)
	} else {
		f.audio(p)
	}
}

// ignoreEnd hides the ordinary ends: the job ended or the stream closed.
func ignoreEnd(err error) error {
	if errors.Is(err, pipeline.ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, errGateAbandoned) {
		return nil
	}
	return err
}

// waitStart reads each rung up to two GOP-grid keyframes (startKeys),
// which give the GOP, and returns what it read from the IDR the start gate
// picks on: the first keyframe of the rung that saw the latest one, which
// every rung has read
// (all readers were subscribed before any read). The first segment then
// completes as soon as the second keyframe arrives.
func (f *feeder) waitStart(ctx context.Context) ([]*pipeline.Packet, error) {
	var keys []int64
	var read []*pipeline.Packet // from the first keyframe on
	var last *pipeline.Packet
	observed := int64(0)
	gop := durationTicks(f.r.track.GOP)
	var key1, key2 int64
	for found := false; !found; {
		p, err := f.reader.Read(ctx)
		if err != nil {
			f.st.gate.abandon()
			return nil, err
		}
		if p.Track != f.r.track.ID {
			if len(keys) > 0 {
				read = append(read, p)
			}
			continue
		}
		if last != nil && p.PTS > last.PTS && (observed == 0 || p.PTS-last.PTS < observed) {
			observed = p.PTS - last.PTS
		}
		last = p
		if p.Keyframe {
			keys = append(keys, p.PTS)
			key1, key2, found = startKeys(keys, gop, max(f.frame, observed))
		}
		if len(keys) > 0 {
			read = append(read, p)
		}
	}
	if f.frame <= 0 {
		f.frame = max(observed, 1)
	}
	f.st.gate.report(key1, key2, f.frame, gop)
	tm, err := f.st.gate.wait(ctx, f.st.conf.PartTarget)
	if err != nil {
		return nil, err
	}
	f.tm = tm
	f.st.tm.CompareAndSwap(nil, &tm)
	f.segStart = tm.start
	f.spans = []span{{gen: 0, offset: 0, start: tm.start}}
	for i := range f.audioQ {
		f.audioQ[i].gen = 0 // before the start, a jump is nothing to follow
	}
	f.audioGen = 0
	// Drop what comes before the start IDR; read on if it is still ahead.
	for i, p := range read {
		if p.Track == f.r.track.ID && p.Keyframe && p.PTS >= tm.start {
			return read[i:], nil
		}
	}
	for {
		p, err := f.reader.Read(ctx)
		if err != nil {
			return nil, err
		}
		if p.Track == f.r.track.ID && p.Keyframe && p.PTS >= tm.start {
			return []*pipeline.Packet{p}, nil
		}
		if p.Track != f.r.track.ID {
			f.queueAudio(p)
		}
	}
}

// maxStartKeys is how many keyframes startKeys looks through for two a
// GOP apart before it takes the first two.
const maxStartKeys = 4

// startKeys picks the stream's first keyframe from those read so far, and
// the next: the first of two keyframes one GOP apart (within a frame),
// which are GOP-grid IDRs, not forced ones. A node that starts following a
// stream asks for a keyframe and so usually first sees a forced one,
// between two grid IDRs; a muxer started there would make its first
// segment longer than a GOP and cover other media time than the same
// segment on a node that started on the grid. Without a known GOP, or when
// no two keyframes are a GOP apart, it is the first two keyframes.
func startKeys(keys []int64, gop, frame int64) (key1, key2 int64, found bool) {
	last := keys[len(keys)-1]
	if gop > 0 {
		for _, k := range keys[:len(keys)-1] {
			if d := last - k - gop; d < max(frame, 1) && -d < max(frame, 1) {
				return k, last, true
			}
		}
	}
	if len(keys) >= 2 && (gop <= 0 || len(keys) >= maxStartKeys) {
		return keys[0], keys[1], true
	}
	return 0, 0, false
}

func (f *feeder) startMuxer() error {
	f.vtrack = &gohlslib.Track{Codec: &codecs.H264{}, ClockRate: pipeline.VideoClockRate}
	tracks := []*gohlslib.Track{f.vtrack}
	if f.r == f.st.host {
		var conf mpeg4audio.AudioSpecificConfig
		if err := conf.Unmarshal(f.st.audio.Extradata); err != nil {
			return fmt.Errorf("AAC track %q: AudioSpecificConfig: %w", f.st.audio.Name, err)
		}
		f.atrack = &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: conf}, ClockRate: conf.SampleRate, Name: "aac", IsDefault: true}
		if f.st.audio.ClockRate != conf.SampleRate {
			return fmt.Errorf("AAC track %q: timestamps in %d Hz, sample rate %d Hz", f.st.audio.Name, f.st.audio.ClockRate, conf.SampleRate)
		}
		tracks = append(tracks, f.atrack)
	}
	// Audio, when there is some, rides in this rung's muxer as a second
	// track: gohlslib cuts its segments and parts together with the video's
	// (same DTS), so audio segment N covers the media time of video segment
	// N on every rung. An audio-only muxer would cut on AAC frame
	// boundaries (21.3 ms) and drift from the video's numbering.
	f.muxer = &gohlslib.Muxer{
		Variant:            gohlslib.MuxerVariantLowLatency,
		Tracks:             tracks,
		SegmentCount:       f.st.conf.SegmentCount,
		SegmentMinDuration: f.tm.segmentMin,
		PartMinDuration:    f.tm.partMin,
		OnEncodeError: func(err error) {
			f.errs.log(f.log, "hls: muxer warning", err)
		},
	}
	if err := f.muxer.Start(); err != nil {
		return fmt.Errorf("gohlslib muxer: %w", err)
	}
	f.r.muxer.Store(f.muxer)
	return nil
}

func (f *feeder) video(p *pipeline.Packet) {
	var au h264.AnnexB
	if err := au.Unmarshal(p.Data); err != nil {
		f.errs.log(f.log, "hls: dropping a video packet", err)
		return
	}
	f.held = append(f.held, heldFrame{p: p, au: au, until: time.Now().Add(f.audioWait())})
	f.drain()
}

// writeFrame writes a video frame, repairing a gap in front of it or
// starting a new span after a jump of the source (discontinuity.go).
func (f *feeder) writeFrame(p *pipeline.Packet, au [][]byte) {
	if f.videoWrites > 0 && (f.waitKey || f.isJump(p)) {
		if !p.Keyframe {
			f.awaitKey(p)
			return
		}
		f.waitKey = false
		f.newSpan(p, au)
	}
	pts := p.PTS + f.offset
	switch {
	case f.videoWrites == 0 && pts > f.tm.start:
		// The start IDR was lost to a full reader buffer: repeat this one
		// from the start so the segments still line up with other rungs.
		f.fill(f.tm.start, pts, p, au)
	case f.videoWrites > 0 && pts-f.lastVideo > f.frame*3/2:
		f.repairGap(p, pts, au)
	}
	f.st.ingests.add(p.PTS, p.Ingest)
	f.lastSrc = p.PTS
	f.writeVideo(pts, f.pdt(pts, ntpOf(p), p.Keyframe), au, p.Keyframe, pendingFrame{ingest: p.Ingest, size: len(p.Data)})
}

// pdtSlew is how far EXT-X-PROGRAM-DATE-TIME may be pulled later, towards
// the Ingest of a segment's first frame, per segment.
const pdtSlew = 2 * time.Millisecond

// pdt is the wall-clock time written for the frame at muxer PTS pts whose
// source entered the pipeline at ingest: the time of the span's anchor
// plus the media time since, so that PROGRAM-DATE-TIME advances exactly
// with EXTINF inside a segment (frames reach the pipeline with tens of
// milliseconds of jitter, more than a frame).
//
// The anchor moves only at segment starts, on frames every rung has (rungs
// with a capped frame rate see fewer of the others), so that every rung
// writes the same PDT. A frame is never ingested before its time, only
// late (a publisher's network, a transcoder that fell behind and caught
// up), so the anchor moves down at once to a segment start that came
// earlier than predicted: one set on a late frame (the muxer started
// during a stall, CI saw 0.66 s) would otherwise keep PROGRAM-DATE-TIME
// late for good. It moves up by at most pdtSlew per segment, which follows
// a source clock slower than the wall clock without following jitter.
func (f *feeder) pdt(pts int64, ingest time.Time, key bool) time.Time {
	if f.anchorNTP.IsZero() {
		f.anchorNTP, f.anchorPTS = ingest, pts
		return ingest
	}
	pred := f.anchorNTP.Add(ticksDuration(pts - f.anchorPTS))
	if !key || pts-f.segStart < durationTicks(f.tm.segmentMin) {
		return pred
	}
	f.anchorNTP, f.anchorPTS = pred.Add(min(ingest.Sub(pred), pdtSlew)), pts
	return f.anchorNTP
}

func (f *feeder) writeVideo(pts int64, ntp time.Time, au [][]byte, key bool, pf pendingFrame) {
	if f.segmentOpen() {
		// Audio up to this frame belongs to the part this frame may close.
		f.flushAudio(pts)
	}
	if err := f.muxer.WriteH264(f.vtrack, ntp, pts, au); err != nil {
		f.errs.log(f.log, "hls: muxer refused a video frame", err)
		return
	}
	// gohlslib opens a segment on an IDR at least SegmentMinDuration
	// after the segment's start (no B-frames: DTS = PTS).
	if key && f.videoWrites > 0 && pts-f.segStart >= durationTicks(f.tm.segmentMin) {
		f.segStart = pts
	}
	f.st.events.wrote(f.r, pts-f.offset, ntp, f.videoWrites == 0 || pts == f.segStart)
	f.videoWrites++
	f.lastVideo, f.lastNTP = pts, ntp
	if key {
		f.keepSPS(au)
	}
	f.pending = append(f.pending, pf)
	if f.videoWrites == 2 {
		// gohlslib opened the first segment with this write, at the first
		// frame's time; audio written before it would have been dropped.
		f.flushAudio(pts)
	}
	f.track(pts, key)
}

// segmentOpen tells whether gohlslib accepts audio: it opens the first
// segment when the second video frame arrives (it holds one frame back to
// learn its duration).
func (f *feeder) segmentOpen() bool { return f.videoWrites >= 2 }

func (f *feeder) keepSPS(au [][]byte) {
	for _, n := range au {
		if len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
			f.r.mu.Lock()
			if !bytes.Equal(f.r.sps, n) {
				f.r.sps = bytes.Clone(n)
			}
			f.r.mu.Unlock()
			return
		}
	}
}

// ntpOf is the wall-clock time written as EXT-X-PROGRAM-DATE-TIME: the
// Ingest of the source frame, identical on every rung.
func ntpOf(p *pipeline.Packet) time.Time {
	if p.Ingest.IsZero() {
		return time.Now()
	}
	return p.Ingest
}

// track reads back what the muxer published after a write: the state that
// blocking requests wait on, the latency of the frames of a part that just
// closed, and segment sizes.
func (f *feeder) track(pts int64, key bool) {
	if !f.synced {
		if !f.firstSeg.Load() {
			f.startReadBack()
			return
		}
		// From now on a read-back never blocks. The frames before this
		// one were partly in parts closed before: no latency for them.
		f.synced = true
		f.pending = f.pending[len(f.pending)-1:]
		f.partStart = math.MinInt64 / 2 // unknown: read back after every frame until a part closes
		s, err := readState(f.muxer, 0)
		if err != nil {
			f.errs.log(f.log, "hls: reading the muxer's playlist", err)
			return
		}
		// The muxer's first segment starts at the start IDR, every rung's;
		// the second at the GOP-grid IDR that ends it (the first may be
		// longer than a GOP when it starts on a forced IDR, and another
		// node may have started a GOP later). The second's number on the
		// stream's timeline fixes delta for the muxer's life: segments
		// follow one per GOP.
		second := f.tm.start + durationTicks(s.firstDuration)
		f.delta = msnOf(second, f.tm.gop) - (s.firstMSN + 1)
		s = s.moved(f.delta)
		if s.lastSegDuration > 0 {
			f.measure(s) // the first segment
		}
		f.state = s
		f.r.prog.set(s)
		return
	}
	if !f.mayClosePart(pts, key) {
		return // nothing new to read back
	}
	s, err := readState(f.muxer, f.delta)
	if err != nil {
		f.errs.log(f.log, "hls: reading the muxer's playlist", err)
		return
	}
	if s.nextPart != f.state.nextPart {
		// The frame just written opened a new part; every frame before it
		// is now downloadable.
		now := time.Now()
		for _, pf := range f.pending[:len(f.pending)-1] {
			if !pf.ingest.IsZero() {
				f.st.latency.add(now.Sub(pf.ingest))
			}
		}
		f.pending = f.pending[len(f.pending)-1:]
		f.partStart = pts
	}
	if s.nextMSN != f.state.nextMSN {
		if f.discont {
			f.discont = false
			f.st.discont.add(s.nextMSN) // the segment this frame opened
		}
		if s.lastSegDuration > 0 {
			f.measure(s)
		}
	}
	f.state = s
	f.r.prog.set(s)
}

// mayClosePart tells whether writing the frame at pts may have closed (or
// may close) a part or a segment. gohlslib closes a part only on a frame at
// least PartMinDuration after the part's start and a segment only on a
// keyframe. It compares decode times; with B-frames a PTS can run up to two
// frames ahead of its DTS, hence the margin.
func (f *feeder) mayClosePart(pts int64, key bool) bool {
	return !f.synced || key || pts-f.partStart >= durationTicks(f.tm.partMin)-2*f.frame
}

// startReadBack waits, in a helper goroutine, for the muxer's first segment:
// reading the playlist before it exists blocks inside gohlslib. The helper
// ends when the segment exists or when the stream closes the muxer.
func (f *feeder) startReadBack() {
	if f.probing {
		return
	}
	f.probing = true
	m := f.muxer
	f.st.helpers.Add(1)
	go func() {
		defer f.st.helpers.Done()
		// Only the feeder publishes states: it knows the delta.
		if _, err := readState(m, 0); err == nil {
			f.firstSeg.Store(true)
		}
	}()
}

// errorLog logs repeated errors at most once a second, with a count.
type errorLog struct {
	last       time.Time
	suppressed int
}

func (e *errorLog) log(log *slog.Logger, msg string, err error) {
	now := time.Now()
	if now.Sub(e.last) < time.Second {
		e.suppressed++
		return
	}
	log.Warn(msg, "error", err, "suppressed", e.suppressed)
	e.last, e.suppressed = now, 0
}
