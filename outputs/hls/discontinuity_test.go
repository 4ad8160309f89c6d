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
