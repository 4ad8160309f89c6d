package hls

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/pipeline"
)

// maxDiscontinuities bounds the source changes remembered per stream: far
// more than a playlist window holds.
const maxDiscontinuities = 256

// discontinuities are the media sequence numbers of the segments that start
// after the job's source changed (a pushed stream's publisher came back):
// their playlists carry EXT-X-DISCONTINUITY and count them in
// EXT-X-DISCONTINUITY-SEQUENCE. All rungs and the audio rendition cut
// segments on the same IDRs, so one list serves every playlist.
type discontinuities struct {
	mu   sync.Mutex
	msns []int // ascending
}

// add records that segment msn starts after a source change.
func (d *discontinuities) add(msn int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, found := slices.BinarySearch(d.msns, msn); !found {
		d.msns = slices.Insert(d.msns, i, msn)
	}
	if len(d.msns) > maxDiscontinuities {
		d.msns = d.msns[len(d.msns)-maxDiscontinuities:]
	}
}

// has tells whether segment msn starts after a source change.
func (d *discontinuities) has(msn int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, found := slices.BinarySearch(d.msns, msn)
	return found
}

// markTail puts EXT-X-DISCONTINUITY in front of the parts (or the preload
// hint) of the segment being written, body's last, when that segment
// starts after a source change. gohlslib's playlist type has no place for
// the tag there, and without it the segment's parts would first be listed
// in one discontinuity sequence and then, once the segment is complete, in
// the next: hls.js rejects such a reload ("discontinuity sequence
// mismatch") and stalls.
func (d *discontinuities) markTail(body []byte, pl *playlist.Media) []byte {
	next := pl.MediaSequence + len(pl.Segments)
	if pl.Skip != nil {
		next += pl.Skip.SkippedSegments
	}
	if !d.has(next) {
		return body
	}
	// The tail starts after the last segment's URI line: the first part
	// or preload hint line after it.
	lines := bytes.SplitAfter(body, []byte("\n"))
	at := -1
	for i, l := range lines {
		switch {
		case len(l) > 0 && l[0] != '#' && len(bytes.TrimSpace(l)) > 0:
			at = -1 // a segment URI: the tail comes after it
		case at < 0 && (bytes.HasPrefix(l, []byte("#EXT-X-PART:")) || bytes.HasPrefix(l, []byte("#EXT-X-PRELOAD-HINT:"))):
			at = i
		}
	}
	if at < 0 {
		return body
	}
	out := make([]byte, 0, len(body)+len("#EXT-X-DISCONTINUITY\n"))
	for i, l := range lines {
		if i == at {
			out = append(out, "#EXT-X-DISCONTINUITY\n"...)
		}
		out = append(out, l...)
	}
	return out
}

// mark sets the discontinuity tags of a media playlist.
func (d *discontinuities) mark(pl *playlist.Media) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.msns) == 0 {
		return
	}
	before := 0
	for _, m := range d.msns {
		if m < pl.MediaSequence {
			before++
		}
	}
	for i, seg := range pl.Segments {
		if _, found := slices.BinarySearch(d.msns, pl.MediaSequence+i); found {
			seg.Discontinuity = true
		}
	}
	// The tags of segments that left the window (RFC 8216 6.2.1).
	pl.DiscontinuitySequence = &before
}

// Jumps in a rung's source timeline.
//
// A jump of the video timestamps by more than a part (a publisher that
// came back after an outage, a failover placed after the real gap, a
// source that stalled and resumed, a timestamp reset) must not go into one
// part and one segment: the part would exceed PART-TARGET and gohlslib
// would raise EXT-X-TARGETDURATION mid-stream (RFC 8216 forbids both). The
// feeder shifts the muxer's view of time instead, so that gohlslib sees
// continuous media, and writes EXT-X-DISCONTINUITY on the segment that
// starts at the first IDR after the jump, whose EXT-X-PROGRAM-DATE-TIME is
// the real wall-clock time: PDT jumps by the outage across the
// discontinuity and stays consistent with EXTINF inside each span.
//
// A discontinuity rather than EXT-X-GAP: the media after the jump is not a
// continuation of the media before it (another publisher, another encoder,
// a reset clock), which is what EXT-X-DISCONTINUITY says and every player
// handles. GAP segments would have to cover the whole outage, published at
// once when the source comes back, which puts every player at the live edge
// that far behind it, and player support for GAP parts is uneven.

// span is one continuous stretch of a rung's source timeline: from the
// muxer PTS start on, muxer PTS = source PTS + offset (both 90 kHz).
type span struct {
	gen    int
	offset int64
	start  int64
}

// maxSpans bounds the spans a feeder keeps for audio still queued.
const maxSpans = 8

// isJump tells whether video frame p does not continue the timeline of the
// last frame written: marked as a source change, backwards, or ahead by
// more than a part. A gap the reader made by dropping packets is not a
// jump: those frames exist on the other rungs and gapfill.go repeats the
// next IDR over them.
func (f *feeder) isJump(p *pipeline.Packet) bool {
	d := p.PTS - f.lastSrc
	switch {
	case p.Discontinuity || d <= 0:
		return true
	case d <= f.tm.part:
		return false
	}
	return f.reader.Dropped() == f.dropped
}

// awaitKey drops the video after a jump until an IDR: a new span must
// start with one. It does not ask the source for one: a forced IDR falls
// between the source's GOP boundaries, and gohlslib, which cuts segments
// only at least SegmentMinDuration apart, would then not cut at the next
// boundary and make the first segment of the span up to two GOPs long,
// over EXT-X-TARGETDURATION. The next boundary comes within a GOP anyway.
func (f *feeder) awaitKey(p *pipeline.Packet) {
	if f.waitKey {
		return
	}
	f.waitKey = true
	f.log.Warn("hls: source timeline jumped without an IDR; dropping video until the next one",
		"from", ticksDuration(f.lastSrc).String(), "to", ticksDuration(p.PTS).String())
}

// newSpan starts a new span at the IDR p. gohlslib opens a segment only on
// an IDR at least SegmentMinDuration after the segment's start, so the IDR
// goes at that point at the earliest (and after this rung's last frame by
// the longest frame interval, so that the point, decided by the first rung
// that gets here, is after every rung's last frame). Up to there the
// segment being written gets copies of the IDR at its part boundaries:
// parts keep their length and the segment ends on time; players show the
// new picture over the rest of the old segment. The audio of that time is
// silence.
func (f *feeder) newSpan(p *pipeline.Packet, au [][]byte) {
	segMin := durationTicks(f.tm.segmentMin)
	j := f.st.jumps.decide(f.gen+1, p.PTS, max(f.segStart+segMin, f.lastVideo+f.tm.frame))
	offset := j.at - j.src
	at := p.PTS + offset // later than j.at if this rung lost the first IDR
	if at <= f.lastVideo {
		// Not this rung's jump after all (it saw another first IDR):
		// keep its own timeline monotonic.
		at = max(f.segStart+segMin, f.lastVideo+f.tm.frame)
		offset = at - p.PTS
	}
	for c := f.segStart + f.tm.part; c < min(at, f.segStart+segMin); c += f.tm.part {
		if c > f.lastVideo {
			f.writeVideo(c, f.lastNTP.Add(ticksDuration(c-f.lastVideo)), au, true, pendingFrame{size: len(p.Data)})
		}
	}
	f.fillSilence(at)
	f.gen++
	f.offset = offset
	f.spans = append(f.spans, span{gen: f.gen, offset: f.offset, start: at})
	if len(f.spans) > maxSpans {
		f.spans = f.spans[len(f.spans)-maxSpans:]
	}
	f.discont = true // the segment this IDR opens
	if f.synced {
		// Known now, before the muxer lists the segment or its first part:
		// a playlist served in between would put them in the old
		// discontinuity sequence (the read-back adds it again, harmlessly).
		f.st.discont.add(f.state.nextMSN + 1)
	}
	f.anchorNTP = time.Time{} // its PROGRAM-DATE-TIME is its real ingest
	f.log.Info("hls: source timeline jumped; new span after a discontinuity",
		"from", ticksDuration(f.lastSrc).String(), "to", ticksDuration(p.PTS).String(), "source change", p.Discontinuity)
}

// span returns the span gen, if it is still kept.
func (f *feeder) span(gen int) (span, bool) {
	for _, s := range f.spans {
		if s.gen == gen {
			return s, true
		}
	}
	return span{}, false
}

// maxJumps bounds the jump decisions remembered per stream.
const maxJumps = 64

// jump is where the first rung to start span gen put its IDR: source PTS
// src at muxer PTS at.
type jump struct{ src, at int64 }

// jumpLog makes every rung map a new span alike: the first rung to get
// there decides, the others take the same offset, so that the same source
// frame has the same muxer PTS (and segment) on every rung.
type jumpLog struct {
	mu    sync.Mutex
	at    map[int]jump
	order []int
}

func (l *jumpLog) decide(gen int, src, proposed int64) jump {
	l.mu.Lock()
	defer l.mu.Unlock()
	if j, ok := l.at[gen]; ok {
		return j
	}
	if l.at == nil {
		l.at = map[int]jump{}
	}
	j := jump{src: src, at: proposed}
	l.at[gen] = j
	l.order = append(l.order, gen)
	if len(l.order) > maxJumps {
		delete(l.at, l.order[0])
		l.order = l.order[1:]
	}
	return j
}
