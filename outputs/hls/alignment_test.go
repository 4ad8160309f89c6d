package hls

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
)

// segmentMedia is what ffprobe finds in one segment of one rendition.
type segmentMedia struct {
	start, end float64 // first PTS, last PTS + one frame, in seconds
	frames     int
}

// TestRungsAreAligned proves the contract players switch rungs on: for every
// media sequence number (and part) present on all rungs, the media time
// covered is the same on every rung, and the audio rendition's segment of
// that number covers the same time too. Playlists give the durations and
// program date-times; ffprobe on the downloaded segments gives the truth.
func TestRungsAreAligned(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	f := startFixture(t, Config{}, "", nil)
	defer f.close()

	mv := f.index()
	if len(mv.Variants) != 3 || len(mv.Renditions) != 1 || mv.Renditions[0].URI == nil {
		t.Fatalf("want 3 variants and one audio rendition, got %d and %d", len(mv.Variants), len(mv.Renditions))
	}
	var uris []string
	for _, v := range mv.Variants {
		uris = append(uris, v.URI)
	}
	audioURI := *mv.Renditions[0].URI
	f.waitSegments(append(uris, audioURI), 4, 20*time.Second)
	checkAligned(t, f, uris, audioURI, 2, false)
}

// checkAligned compares the playlists of every rendition segment by segment
// and part by part, then probes the newest probeLast complete segments of
// every rendition (0: all of them) and compares the media they hold. With
// repaired, a rung may have repeated frames over a gap (gapfill.go) and miss
// the one just before a segment boundary: then its segments must start at
// the same time as the others' but may hold one frame less.
func checkAligned(t *testing.T, f *fixture, uris []string, audioURI string, probeLast int, repaired bool) {
	t.Helper()
	// Playlists, all fetched within a few ms: compare what they share.
	pls := map[string]*playlist.Media{}
	for _, u := range append(uris, audioURI) {
		pls[u] = f.media(u)
	}
	ref := pls[uris[0]]
	common := 0
	for i, seg := range ref.Segments {
		msn := ref.MediaSequence + i
		if seg.Gap {
			continue
		}
		for _, u := range append(uris[1:], audioURI) {
			o := segmentByMSN(pls[u], msn)
			if o == nil {
				continue
			}
			if o.Duration != seg.Duration {
				t.Errorf("segment %d: %s lasts %s, %s lasts %s", msn, uris[0], seg.Duration, u, o.Duration)
			}
			if seg.DateTime != nil && o.DateTime != nil && !seg.DateTime.Equal(*o.DateTime) {
				t.Errorf("segment %d: %s starts at %s, %s at %s", msn, uris[0], seg.DateTime, u, o.DateTime)
			}
			if len(seg.Parts) > 0 && len(o.Parts) > 0 {
				if len(o.Parts) != len(seg.Parts) {
					t.Errorf("segment %d: %d parts on %s, %d on %s", msn, len(seg.Parts), uris[0], len(o.Parts), u)
				}
				for k := range min(len(seg.Parts), len(o.Parts)) {
					if seg.Parts[k].Duration != o.Parts[k].Duration {
						t.Errorf("segment %d part %d: %s on %s, %s on %s", msn, k, seg.Parts[k].Duration, uris[0], o.Parts[k].Duration, u)
					}
				}
			}
			common++
		}
	}
	if common < 3*4 {
		t.Fatalf("only %d segment comparisons across renditions; want at least 12", common)
	}

	// Media: the newest complete segments of every rendition, probed.
	last := ref.MediaSequence + len(ref.Segments) - 1
	first := ref.MediaSequence + len(ref.Segments) - realSegments(ref)
	if probeLast > 0 {
		first = last - probeLast + 1
	}
	for msn := first; msn <= last; msn++ {
		var video []segmentMedia
		for _, u := range uris {
			video = append(video, f.probeSegment(pls[u], dir(u), msn, "video"))
		}
		audio := f.probeSegment(pls[audioURI], dir(audioURI), msn, "audio")
		for k, m := range video {
			same := math.Abs(m.start-video[0].start) < 1e-6 && math.Abs(m.end-video[0].end) < 1e-6 && m.frames == video[0].frames
			if repaired {
				same = math.Abs(m.start-video[0].start) < 1e-6 && m.frames >= video[0].frames-1 && m.frames <= video[0].frames+1
			}
			if !same {
				t.Errorf("segment %d: %s covers [%.4f, %.4f) in %d frames, %s [%.4f, %.4f) in %d", msn,
					uris[0], video[0].start, video[0].end, video[0].frames, uris[k], m.start, m.end, m.frames)
			}
		}
		// Audio is cut with the video: the segment holds the AAC frames
		// (1024 samples = 21.3 ms) that start within the video segment.
		const aacFrame = 1024.0 / 48000
		if d := audio.start - video[0].start; d < -1e-6 || d >= aacFrame {
			t.Errorf("segment %d: audio starts %.1f ms after the video; want [0, 21.3) ms", msn, d*1000)
		}
		if d := audio.end - video[0].end; d < -1e-6 || d >= aacFrame {
			t.Errorf("segment %d: audio ends %.1f ms after the video; want [0, 21.3) ms", msn, d*1000)
		}
		t.Logf("segment %d: video [%.4f, %.4f) %d frames on each of %d rungs; audio [%.4f, %.4f)",
			msn, video[0].start, video[0].end, video[0].frames, len(video), audio.start, audio.end)
	}
}

func segmentByMSN(pl *playlist.Media, msn int) *playlist.MediaSegment {
	i := msn - pl.MediaSequence
	if i < 0 || i >= len(pl.Segments) {
		return nil
	}
	return pl.Segments[i]
}

// probeSegment downloads segment msn of a rendition with its init file and
// returns what ffprobe reads in it.
func (f *fixture) probeSegment(pl *playlist.Media, folder string, msn int, kind string) segmentMedia {
	f.t.Helper()
	seg := segmentByMSN(pl, msn)
	if seg == nil || seg.Gap {
		f.t.Fatalf("segment %d not in %s", msn, folder)
	}
	init := f.mustGet(folder + pl.Map.URI)
	body := f.mustGet(folder + seg.URI)
	p := probeConcat(f.t, fmt.Sprintf("%s-%d.mp4", kind, msn), init, body)
	if len(p.Streams) != 1 || p.Streams[0].CodecType != kind || len(p.Packets) == 0 {
		f.t.Fatalf("%s%s: want one %s stream with packets, got %+v", folder, seg.URI, kind, p.Streams)
	}
	first := testutil.F(f.t, p.Packets[0].PTSTime)
	lastPTS := testutil.F(f.t, p.Packets[len(p.Packets)-1].PTSTime)
	step := 1.0 / 30
	if kind == "audio" {
		step = 1024.0 / 48000
	}
	return segmentMedia{start: first, end: lastPTS + step, frames: len(p.Packets)}
}
