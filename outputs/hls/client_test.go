package hls

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
)

// recorder keeps every media file a client downloads, in download order.
type recorder struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	files []recorded
}

type recorded struct {
	name string // file name
	body []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := r.rt.RoundTrip(req)
	if err != nil || res.StatusCode != http.StatusOK || !strings.HasSuffix(req.URL.Path, ".mp4") {
		return res, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.files = append(r.files, recorded{req.URL.Path, body})
	r.mu.Unlock()
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

// byStream returns the init file and the parts of one gohlslib stream
// ("video1", "audio2") in download order.
func (r *recorder) byStream(stream string) (init []byte, parts [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.files {
		// The audio2 stream is served from the _audio folder, video1 from
		// a rung's; parts are <msn>.<i>.mp4.
		if (stream == "audio2") != strings.Contains(f.name, "/"+audioDir+"/") {
			continue
		}
		switch base := path.Base(f.name); {
		case base == "init.mp4":
			init = f.body
		case strings.Count(base, ".") == 2:
			parts = append(parts, f.body)
		}
	}
	return init, parts
}

// playback is one gohlslib Client reading a playlist.
type playback struct {
	name   string
	c      *gohlslib.Client
	rec    *recorder
	mu     sync.Mutex
	frames map[string]int // by stream kind: "video", "audio"
	last   map[string]int64
	errs   []string
}

func startPlayback(t *testing.T, name, uri string) *playback {
	t.Helper()
	pb := &playback{name: name, rec: &recorder{rt: &http.Transport{}}, frames: map[string]int{}, last: map[string]int64{}}
	quiet := func(string) {}
	pb.c = &gohlslib.Client{
		URI:                       uri,
		HTTPClient:                &http.Client{Transport: pb.rec},
		OnDownloadPrimaryPlaylist: quiet,
		OnDownloadStreamPlaylist:  quiet,
		OnDownloadSegment:         quiet,
		OnDownloadPart:            quiet,
		OnDecodeError:             func(err error) { pb.fail("decode error: %v", err) },
	}
	pb.c.OnTracks = func(tracks []*gohlslib.Track) error {
		for _, tr := range tracks {
			switch tr.Codec.(type) {
			case *codecs.H264:
				pb.c.OnDataH26x(tr, func(pts, _ int64, _ [][]byte) { pb.frame("video", pts) })
			case *codecs.MPEG4Audio:
				pb.c.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) {
					for range aus {
						pb.frame("audio", pts)
						pts += 1024
					}
				})
			default:
				pb.fail("unexpected track %T", tr.Codec)
			}
		}
		return nil
	}
	if err := pb.c.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return pb
}

func (pb *playback) frame(kind string, pts int64) {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if last, ok := pb.last[kind]; ok && pts <= last {
		pb.errs = append(pb.errs, fmt.Sprintf("%s PTS went from %d to %d", kind, last, pts))
	}
	pb.last[kind] = pts
	pb.frames[kind]++
}

func (pb *playback) fail(format string, args ...any) {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	pb.errs = append(pb.errs, fmt.Sprintf(format, args...))
}

// TestClientReadsEveryRung plays every rung (and the audio through the
// multivariant playlist) with gohlslib's own client for 10 s, in LL-HLS
// mode (preload hints, delta updates), then checks with ffprobe every part
// the clients downloaded and every segment of every playlist.
func TestClientReadsEveryRung(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	f := startFixture(t, Config{}, "", nil)
	defer f.close()

	mv := f.index()
	checkMultivariant(t, mv)
	var pbs []*playback
	for _, v := range mv.Variants {
		pbs = append(pbs, startPlayback(t, v.URI, f.base+v.URI))
	}
	// Through index.m3u8 the client picks the top rung and the audio group.
	pbs = append(pbs, startPlayback(t, "index.m3u8", f.base+"index.m3u8"))
	defer func() {
		for _, pb := range pbs {
			pb.c.Close()
		}
	}()

	const watch = 10 * time.Second
	window := time.NewTimer(watch)
	defer window.Stop()
	waits := make(chan error, len(pbs))
	for _, pb := range pbs {
		go func() { waits <- pb.c.Wait2() }() // returns once Close is called below, at the latest
	}
	select {
	case <-window.C:
	case err := <-waits:
		t.Fatalf("a client stopped early: %v", err)
	}
	for _, pb := range pbs {
		pb.c.Close()
	}
	for range pbs {
		// Close makes every Wait2 return; its error then only says so.
		err := <-waits
		_ = err
	}

	const fps, aacRate = 30.0, 48000.0 / 1024
	for _, pb := range pbs {
		pb.mu.Lock()
		for _, e := range pb.errs {
			t.Errorf("%s: %s", pb.name, e)
		}
		video, audio := pb.frames["video"], pb.frames["audio"]
		pb.mu.Unlock()
		// The client starts at the live edge; allow for a noisy machine.
		if least := int(0.7 * fps * watch.Seconds()); video < least {
			t.Errorf("%s: %d video frames in %s, want at least %d", pb.name, video, watch, least)
		}
		if pb.name == "index.m3u8" {
			if least := int(0.7 * aacRate * watch.Seconds()); audio < least {
				t.Errorf("%s: %d audio frames in %s, want at least %d", pb.name, audio, watch, least)
			}
		}
		t.Logf("%s: %d video frames, %d audio frames", pb.name, video, audio)
		checkParts(t, pb, "video1", "video", video)
		if pb.name == "index.m3u8" {
			checkParts(t, pb, "audio2", "audio", audio)
		}
	}

	// Segments: every complete segment of every playlist, probed one by one.
	for _, uri := range append(variantURIs(mv), *mv.Renditions[0].URI) {
		pl := f.media(uri)
		init := f.mustGet(dir(uri) + pl.Map.URI)
		prevEnd := math.NaN()
		n := 0
		for i, seg := range pl.Segments {
			if seg.Gap {
				continue
			}
			kind, step, want := "video", 1/fps, int(math.Round(seg.Duration.Seconds()*fps))
			if strings.Contains(uri, audioDir) {
				kind, step, want = "audio", 1/aacRate, int(math.Round(seg.Duration.Seconds()*aacRate))
			}
			p := probeConcat(t, fmt.Sprintf("seg%d.mp4", pl.MediaSequence+i), init, f.mustGet(dir(uri)+seg.URI))
			if len(p.Streams) != 1 || p.Streams[0].CodecType != kind {
				t.Fatalf("%s %s: want one %s stream, got %+v", uri, seg.URI, kind, p.Streams)
			}
			if d := len(p.Packets) - want; d < -1 || d > 1 {
				t.Errorf("%s %s: %d packets for %s, want %d", uri, seg.URI, len(p.Packets), seg.Duration, want)
			}
			start := testutil.F(t, p.Packets[0].PTSTime)
			if !math.IsNaN(prevEnd) && math.Abs(start-prevEnd) > step/2 {
				t.Errorf("%s %s: starts at %.4f, the previous segment ended at %.4f", uri, seg.URI, start, prevEnd)
			}
			prevEnd = testutil.F(t, p.Packets[len(p.Packets)-1].PTSTime) + step
			n++
		}
		if n < 5 {
			t.Errorf("%s: only %d complete segments after %s", uri, n, watch)
		}
	}
}

func variantURIs(mv *playlist.Multivariant) []string {
	var out []string
	for _, v := range mv.Variants {
		out = append(out, v.URI)
	}
	return out
}

// checkParts probes init + every part a client downloaded for one stream
// as one fragmented file: each part must parse, the packets must be those
// the client decoded, with no gap or overlap between parts.
func checkParts(t *testing.T, pb *playback, stream, kind string, decoded int) {
	t.Helper()
	init, parts := pb.rec.byStream(stream)
	if init == nil || len(parts) < 20 {
		t.Errorf("%s: init file %v, %d parts of %s downloaded", pb.name, init != nil, len(parts), stream)
		return
	}
	p := probeConcat(t, stream+"-parts.mp4", append([][]byte{init}, parts...)...)
	if len(p.Streams) != 1 || p.Streams[0].CodecType != kind {
		t.Fatalf("%s %s parts: want one %s stream, got %+v", pb.name, stream, kind, p.Streams)
	}
	if len(p.Packets) < decoded {
		t.Errorf("%s %s: ffprobe finds %d packets in %d parts, the client decoded %d", pb.name, stream, len(p.Packets), len(parts), decoded)
	}
	step := 1.0 / 30
	if kind == "audio" {
		step = 1024.0 / 48000
	}
	for i := 1; i < len(p.Packets); i++ {
		d := testutil.F(t, p.Packets[i].PTSTime) - testutil.F(t, p.Packets[i-1].PTSTime)
		if math.Abs(d-step) > step/4 {
			t.Errorf("%s %s: packet %d is %.1f ms after the previous one, want %.1f", pb.name, stream, i, d*1000, step*1000)
			break
		}
	}
}

var codecsRE = regexp.MustCompile(`^avc1\.[0-9a-f]{6}$`)

// checkMultivariant checks the playlist Prism writes itself.
func checkMultivariant(t *testing.T, mv *playlist.Multivariant) {
	t.Helper()
	want := []string{"320x180", "426x240", "640x360"} // ascending bandwidth
	if len(mv.Variants) != len(want) {
		t.Fatalf("%d variants, want %d", len(mv.Variants), len(want))
	}
	if len(mv.Renditions) != 1 || mv.Renditions[0].Type != playlist.MultivariantRenditionTypeAudio ||
		mv.Renditions[0].GroupID != audioGroup || mv.Renditions[0].URI == nil || !mv.Renditions[0].Default {
		t.Fatalf("want one default audio rendition in group %q, got %+v", audioGroup, mv.Renditions)
	}
	for i, v := range mv.Variants {
		if v.Resolution != want[i] {
			t.Errorf("variant %d: RESOLUTION=%s, want %s", i, v.Resolution, want[i])
		}
		if len(v.Codecs) != 2 || !codecsRE.MatchString(v.Codecs[0]) || v.Codecs[1] != "mp4a.40.2" {
			t.Errorf("variant %d: CODECS=%v, want avc1.PPCCLL and mp4a.40.2", i, v.Codecs)
		}
		if v.FrameRate == nil || math.Abs(*v.FrameRate-30) > 0.01 {
			t.Errorf("variant %d: FRAME-RATE=%v, want 30", i, v.FrameRate)
		}
		if v.AverageBandwidth == nil || *v.AverageBandwidth <= 0 || *v.AverageBandwidth > v.Bandwidth {
			t.Errorf("variant %d: AVERAGE-BANDWIDTH=%v with BANDWIDTH=%d", i, v.AverageBandwidth, v.Bandwidth)
		}
		if i > 0 && v.Bandwidth < mv.Variants[i-1].Bandwidth {
			t.Errorf("variants not ordered by bandwidth: %d after %d", v.Bandwidth, mv.Variants[i-1].Bandwidth)
		}
		if v.Audio != audioGroup {
			t.Errorf("variant %d: AUDIO=%q, want %q", i, v.Audio, audioGroup)
		}
	}
}
