package hls

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
)

// One LL-HLS timeline on every node.
//
// gohlslib numbers segments from its own start (7, after its EXT-X-GAP
// window) and names files with a random prefix, so two nodes serving the
// same stream, or one node before and after it restarted its muxer, would
// give the same media different numbers and names. A player behind a load
// balancer that spreads requests over nodes would then mix playlists of
// different timelines. Here the numbering is derived from the media
// timeline instead, which every node following a stream shares (the relay
// forwards the publisher's timestamps unchanged):
//   - the media sequence number of a segment is its start time divided by
//     the GOP (segments are cut on every GOP-grid IDR, see newTiming), plus
//     gapWindow; delta maps gohlslib's numbers onto these;
//   - files are named from it: init.mp4, <msn>.mp4, parts <msn>.<i>.mp4;
//   - the fMP4 movie fragment sequence numbers (mfhd), which gohlslib takes
//     from its own part counter, are rewritten from the same numbers, so a
//     segment is byte for byte the same file on every node;
//   - the epoch in the URLs comes from the stream name and the timeline's
//     identity (TimelineID), not from chance.

// gapWindow keeps the numbers of gohlslib's EXT-X-GAP placeholders in front
// of a stream that starts at media time 0 non-negative.
const gapWindow = 8

// msnOf is the media sequence number of the segment that starts at muxer
// PTS pts (90 kHz). Rounded rather than truncated: IDRs sit on the GOP
// grid up to rounding of frame timestamps, and rounding keeps a boundary a
// tick early or late in the same segment on every node.
func msnOf(pts, gop int64) int {
	if gop <= 0 {
		return gapWindow
	}
	n := pts + gop/2
	q := n / gop
	if n%gop < 0 {
		q-- // floor for negative times
	}
	return int(q) + gapWindow
}

// TimelineSource is implemented by sources whose media timeline is shared
// beyond this process (relay.Stream: every node following one job sees the
// same timestamps). TimelineID names that timeline: equal on every node
// for the same timeline, different for a new one (a new job).
type TimelineSource interface {
	TimelineID() string
}

// timelineEpoch is the URL epoch of a stream whose source names its
// timeline, "" when it does not.
func timelineEpoch(stream string, src any) string {
	ts, ok := src.(TimelineSource)
	if !ok || ts.TimelineID() == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(stream + "\x00" + ts.TimelineID()))
	return hex.EncodeToString(sum[:4])
}

// partBase is where gohlslib's part ids of one segment begin.
type partBase struct {
	msn   int    // the stream's number of the segment
	first uint64 // gohlslib's id of its part 0
	n     int    // parts listed (complete, or written so far)
}

// partID is gohlslib's id of part i of segment msn, if the state knows the
// segment's parts; the hinted part (the one being written) is included.
func (s playlistState) partID(msn, i int) (uint64, bool) {
	for _, b := range s.bases {
		if b.msn != msn {
			continue
		}
		if i < b.n || (msn == s.nextMSN && i == b.n) {
			return b.first + uint64(i), true
		}
	}
	return 0, false
}

var fileRE = regexp.MustCompile(`^(init|([0-9]{1,10})(?:\.([0-9]{1,4}))?)\.mp4$`)

// mediaFile is a request for one of a rendition's files.
type mediaFile struct {
	init      bool
	msn, part int
	isPart    bool
}

func parseMediaFile(name string) (mediaFile, bool) {
	m := fileRE.FindStringSubmatch(name)
	if m == nil {
		return mediaFile{}, false
	}
	if m[1] == "init" {
		return mediaFile{init: true}, true
	}
	msn, err := strconv.Atoi(m[2])
	if err != nil {
		return mediaFile{}, false
	}
	f := mediaFile{msn: msn}
	if m[3] != "" {
		f.isPart = true
		f.part, _ = strconv.Atoi(m[3])
	}
	return f, true
}

func segmentName(msn int) string { return strconv.Itoa(msn) + ".mp4" }
func partName(msn, i int) string { return fmt.Sprintf("%d.%d.mp4", msn, i) }
func gohlsSegment(prefix, stream string, msn, delta int) string {
	return prefix + "_" + stream + "_seg" + strconv.Itoa(msn-delta) + ".mp4"
}

// retime moves a playlist gohlslib wrote onto the stream's timeline: its
// numbers by delta and its file names to the timeline's.
func retime(pl *playlist.Media, delta int) {
	pl.MediaSequence += delta
	if pl.Map != nil {
		pl.Map.URI = "init.mp4"
	}
	first := pl.MediaSequence
	if pl.Skip != nil {
		first += pl.Skip.SkippedSegments
	}
	for i, seg := range pl.Segments {
		msn := first + i
		// EXT-X-GAP placeholders too: a node that started later lists as
		// gaps the first segments another node has, and hls.js, reloading
		// from either, rejects a playlist whose segment has another URI
		// than before ("media sequence mismatch"). Players do not load a
		// gap; this node answers 404 for it.
		seg.URI = segmentName(msn)
		for j, p := range seg.Parts {
			p.URI = partName(msn, j)
		}
	}
	next := first + len(pl.Segments)
	for j, p := range pl.Parts {
		p.URI = partName(next, j)
	}
	if pl.PreloadHint != nil {
		pl.PreloadHint.URI = partName(next, len(pl.Parts))
	}
}

// renumberFragments rewrites the mfhd sequence number of every movie
// fragment in b (a part, or a segment made of parts), which gohlslib takes
// from its own part counter, to one derived from the segment's number and
// the part's index in it: the same on every node, increasing along the
// stream.
func renumberFragments(b []byte, msn, firstPart int) {
	seq := uint32(msn)*256 + uint32(firstPart) //nolint:gosec // wraps after 16 M segments; players only need it to differ
	for off := 0; off+8 <= len(b); {
		size := int(binary.BigEndian.Uint32(b[off:]))
		if size < 8 || off+size > len(b) {
			return
		}
		if string(b[off+4:off+8]) == "moof" {
			for c := off + 8; c+8 <= off+size; {
				cs := int(binary.BigEndian.Uint32(b[c:]))
				if cs < 8 || c+cs > off+size {
					break
				}
				if string(b[c+4:c+8]) == "mfhd" && cs >= 16 {
					binary.BigEndian.PutUint32(b[c+12:], seq)
					seq++
					break
				}
				c += cs
			}
		}
		off += size
	}
}
