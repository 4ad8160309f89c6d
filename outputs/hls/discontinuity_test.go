package hls

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
)

// TestDiscontinuityTags: a segment that starts after a source change
// carries EXT-X-DISCONTINUITY; once it leaves the window the sequence
// counts it.
func TestDiscontinuityTags(t *testing.T) {
	var d discontinuities
	pl := func(first int) *playlist.Media {
		m := &playlist.Media{Version: 9, TargetDuration: 1, MediaSequence: first}
		for i := range 4 {
			m.Segments = append(m.Segments, &playlist.MediaSegment{Duration: 1e9, URI: fmt.Sprintf("seg%d.mp4", first+i)})
		}
		return m
	}
	m := pl(10)
	d.mark(m)
	if m.DiscontinuitySequence != nil {
		t.Fatal("a stream without source changes has no discontinuity sequence")
	}
	d.add(12)
	d.add(12)
	m = pl(10)
	d.mark(m)
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	if strings.Count(out, "#EXT-X-DISCONTINUITY\n") != 1 || !strings.Contains(out, "#EXT-X-DISCONTINUITY-SEQUENCE:0") ||
		strings.Index(out, "#EXT-X-DISCONTINUITY\n") > strings.Index(out, "seg12.mp4") {
		t.Fatalf("segment 12 should carry the tag:\n%s", out)
	}
	m = pl(13) // segment 12 scrolled out
	d.mark(m)
	if *m.DiscontinuitySequence != 1 || m.Segments[0].Discontinuity {
		t.Fatalf("after the window moved: sequence %d, first segment tagged %v", *m.DiscontinuitySequence, m.Segments[0].Discontinuity)
	}
}

// TestDiscontinuityOnTheParts: the segment being written after a source
// change has EXT-X-DISCONTINUITY in front of its parts from its first
// listing on, so that it is in the same discontinuity sequence before and
// after it completes (hls.js: "discontinuity sequence mismatch").
func TestDiscontinuityOnTheParts(t *testing.T) {
	const body = `#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MEDIA-SEQUENCE:24
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PART:DURATION=0.2,URI="24.0.mp4",INDEPENDENT=YES
#EXTINF:1,
24.mp4
#EXT-X-PART:DURATION=0.2,URI="25.0.mp4",INDEPENDENT=YES
#EXTINF:1,
25.mp4
#EXT-X-PART:DURATION=0.2,URI="26.0.mp4",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="26.1.mp4"
`
	var pl playlist.Media
	if err := pl.Unmarshal([]byte(body)); err != nil {
		t.Fatal(err)
	}
	var d discontinuities
	if got := string(d.markTail([]byte(body), &pl)); got != body {
		t.Errorf("no source change: the playlist changed:\n%s", got)
	}
	d.add(26)
	got := string(d.markTail([]byte(body), &pl))
	want := strings.Replace(body, "25.mp4\n", "25.mp4\n#EXT-X-DISCONTINUITY\n", 1)
	if got != want {
		t.Errorf("segment 26 after a source change:\n%s\nwant\n%s", got, want)
	}
	var back playlist.Media
	if err := back.Unmarshal([]byte(got)); err != nil {
		t.Fatalf("the marked playlist does not parse: %v", err)
	}

	// Only the hint listed yet: the tag goes in front of it.
	hintOnly := strings.Replace(body, "#EXT-X-PART:DURATION=0.2,URI=\"26.0.mp4\",INDEPENDENT=YES\n", "", 1)
	got = string(d.markTail([]byte(hintOnly), &pl))
	if want := strings.Replace(hintOnly, "25.mp4\n", "25.mp4\n#EXT-X-DISCONTINUITY\n", 1); got != want {
		t.Errorf("hint only:\n%s\nwant\n%s", got, want)
	}
}
