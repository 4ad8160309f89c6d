package hls

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// cappedLadder caps two rungs below a 29.97 fps source: they keep source
// frames, so their frames are irregularly spaced on the 90 kHz clock
// (mostly two source frames apart at 15 fps, one or two at 24).
const cappedLadder = `name: hlscaps
gop: 1s
rungs:
  - {name: 360p, height: 360, bitrate: 500k, preset: ultrafast}
  - {name: 240p15, height: 240, bitrate: 200k, preset: ultrafast, fps: 15}
  - {name: 180p24, height: 180, bitrate: 150k, preset: ultrafast, fps: 24}
audio:
  aac: {bitrate: 64k}
  opus: {bitrate: 32k}
`

// TestCappedRungsAreAligned: with rungs capped below a 29.97 fps source,
// segments (and their program date-times) still cover the same media time on
// every rung, as the playlists say and ffprobe finds in the segments. The
// 15 fps rung keeps every other source frame from each IDR, so its parts
// (six source frames) match the uncapped rung's exactly. 24 fps does not
// divide 29.97: its part boundaries can miss a frame, so its parts are only
// reported (as with FFmpeg's fps filter before, which restamped them).
func TestCappedRungsAreAligned(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	l, err := ladder.Parse("caps.yaml", []byte(cappedLadder))
	if err != nil {
		t.Fatal(err)
	}
	job, err := transcode.Start(context.Background(), transcode.Options{
		Input:  transcode.LavfiPrefix + "testsrc2=size=640x360:rate=30000/1001[out0];sine=sample_rate=48000[out1]",
		Ladder: l, Realtime: true})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, job: job, reg: &pipeline.Registry{}}
	f.srv = &Server{Streams: f.reg}
	if err := f.srv.Start(); err != nil {
		_ = job.Close()
		t.Fatal(err)
	}
	if err := f.reg.Add(testStream, job); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hls/", f.srv)
	f.http = httptest.NewServer(mux)
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	f.base = f.http.URL + "/hls/" + testStream + "/"
	defer f.close()

	mv := f.index()
	if len(mv.Variants) != 3 || len(mv.Renditions) != 1 || mv.Renditions[0].URI == nil {
		t.Fatalf("want 3 variants and one audio rendition, got %d and %d", len(mv.Variants), len(mv.Renditions))
	}
	var uris []string
	for _, v := range mv.Variants {
		uris = append(uris, v.URI)
	}
	f.waitSegments(append(uris, *mv.Renditions[0].URI), 5, 30*time.Second)

	pls := map[string]*playlist.Media{}
	for _, u := range uris {
		pls[u] = f.media(u)
	}
	byName := func(name string) string {
		for _, u := range uris {
			if strings.Contains(u, "/"+name+"/") {
				return u
			}
		}
		t.Fatalf("no rendition %s in %v", name, uris)
		return ""
	}
	full := byName("360p")
	ref := pls[full]
	segments := 0
	parts := map[string][2]int{} // compared, differing
	for i, seg := range ref.Segments {
		msn := ref.MediaSequence + i
		if seg.Gap {
			continue
		}
		for _, name := range []string{"240p15", "180p24"} {
			u := byName(name)
			o := segmentByMSN(pls[u], msn)
			if o == nil {
				continue
			}
			segments++
			if o.Duration != seg.Duration {
				t.Errorf("segment %d: %s lasts %s, %s lasts %s", msn, full, seg.Duration, u, o.Duration)
			}
			if seg.DateTime != nil && o.DateTime != nil && !seg.DateTime.Equal(*o.DateTime) {
				t.Errorf("segment %d: %s starts at %s, %s at %s", msn, full, seg.DateTime, u, o.DateTime)
			}
			if len(seg.Parts) != len(o.Parts) && name == "240p15" {
				t.Errorf("segment %d: %d parts on %s, %d on %s", msn, len(seg.Parts), full, len(o.Parts), u)
			}
			for k := range min(len(seg.Parts), len(o.Parts)) {
				c := parts[name]
				c[0]++
				if seg.Parts[k].Duration != o.Parts[k].Duration {
					c[1]++
					if name == "240p15" {
						t.Errorf("segment %d part %d: %s on %s, %s on %s", msn, k, seg.Parts[k].Duration, full, o.Parts[k].Duration, u)
					}
				}
				parts[name] = c
			}
		}
	}
	if segments < 2*4 {
		t.Fatalf("only %d segment comparisons; want at least 8", segments)
	}
	for name, c := range parts {
		testutil.Report(t, "%s against 360p: %d of %d parts differ in duration", name, c[1], c[0])
	}

	// The media: the newest two complete segments start on the same frame
	// on every rung, and hold as many frames as the rung's rate allows.
	last := ref.MediaSequence + len(ref.Segments) - 1
	for msn := last - 1; msn <= last; msn++ {
		var starts []float64
		for _, name := range []string{"360p", "240p15", "180p24"} {
			u := byName(name)
			m := f.probeSegment(pls[u], dir(u), msn, "video")
			starts = append(starts, m.start)
			dur := segmentByMSN(ref, msn).Duration.Seconds()
			fps := map[string]float64{"360p": 30000.0 / 1001, "240p15": 15, "180p24": 24}[name]
			if want := dur * fps; math.Abs(float64(m.frames)-want) > 1.5 {
				t.Errorf("segment %d on %s: %d frames in %.3f s, want about %.1f", msn, u, m.frames, dur, want)
			}
		}
		for k, s := range starts {
			if math.Abs(s-starts[0]) > 1e-6 {
				t.Errorf("segment %d: 360p starts at %.4f, rung %d at %.4f", msn, starts[0], k, s)
			}
		}
		t.Logf("segment %d starts at %.4f on every rung", msn, starts[0])
	}
}
