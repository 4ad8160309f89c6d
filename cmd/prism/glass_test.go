package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/internal/testutil"
)

// latencySamples is what the player page posts to ?glass= (its
// window.prismLatency): seconds per displayed frame.
type latencySamples struct {
	WebRTC struct {
		Capture []float64 `json:"capture"`
	} `json:"webrtc"`
	HLS struct {
		Capture []float64 `json:"capture"`
		Ingest  []float64 `json:"ingest"`
	} `json:"hls"`
}

// startDemo runs `prism serve --demo` with args on a free HTTP port,
// without RTMP, SRT or stats, until the test ends; it returns once
// /readyz answers 200 (within wait), with the HTTP address.
func startDemo(t *testing.T, wait time.Duration, args ...string) string {
	t.Helper()
	addr := freePort(t)
	args = append([]string{"serve", "--demo", "--http", addr, "--data-dir", t.TempDir(),
		"--webrtc-port", "0", "--rtmp", "off", "--srt", "off", "--stats-interval", "0"}, args...)
	srv := exec.Command(prismBin, args...)
	var srvErr testutil.SyncBuffer
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		if t.Failed() {
			t.Logf("prism serve:\n%s", srvErr.String())
		}
	})
	testutil.Eventually(t, wait, "the demo stream", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return addr
}

// playDemo serves the demo stream (the stamped source) with ladder, plays
// the player page in Chromium for seconds and returns its samples and the
// transcoder's speed then (media time / uptime: under 1 means it fell
// behind real time, which the stamp counts and PDT does not).
func playDemo(t *testing.T, ladder string, seconds int) (latencySamples, float64) {
	t.Helper()
	addr := startDemo(t, 30*time.Second, "--ladder", ladder)
	got := make(chan latencySamples, 1)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		var s latencySamples
		if r.Method == http.MethodPost && json.NewDecoder(r.Body).Decode(&s) == nil {
			select {
			case got <- s:
			default:
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer collector.Close()
	testutil.StartBrowser(t, fmt.Sprintf("http://%s/?stream=demo&glass=%s&seconds=%d", addr, collector.URL+"/glass", seconds))
	select {
	case s := <-got:
		speed := math.NaN()
		if resp, err := http.Get("http://" + addr + "/api/v1/streams/demo"); err == nil {
			var info api.StreamInfo
			if json.NewDecoder(resp.Body).Decode(&info) == nil {
				speed = info.Stats.Speed
			}
			resp.Body.Close()
		}
		return s, speed
	case <-time.After(time.Duration(seconds)*time.Second + 60*time.Second):
		t.Fatal("no samples from the player page")
		return latencySamples{}, 0
	}
}

// quantile of v (sorted copy), q in [0, 1]; NaN when v is empty.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

// TestGlassToGlass plays the stamped demo source on the player page in
// Chromium over WebRTC and LL-HLS at once: the page reads the capture time
// back from the displayed frames of both, and the figures are plausible.
// Capture precedes ingest, so capture-to-display is at least
// ingest-to-display, by the little the source is made ahead of being read.
func TestGlassToGlass(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the transcoder and Chromium")
	}
	// One 360p rung at the default ladder's lowest bitrate: the stamp has to
	// survive scaling from 720p and a low bitrate.
	ladder := writeFile(t, t.TempDir(), "l.yaml", `name: glass
rungs:
  - {name: 360p, height: 360, bitrate: 450k, preset: veryfast}
`)
	s, speed := playDemo(t, ladder, 20)
	rtc, hlsCap, hlsIngest := s.WebRTC.Capture, s.HLS.Capture, s.HLS.Ingest
	testutil.Report(t, "glass to glass on the player page (360p, 2-core machine, under load): WebRTC capture to display (picture stamp) median %.3f s p95 %.3f s (%d frames); "+
		"LL-HLS capture to display (picture stamp) median %.3f s p95 %.3f s (%d frames), ingest to display (PROGRAM-DATE-TIME) median %.3f s; transcoder speed %.2fx",
		quantile(rtc, .5), quantile(rtc, .95), len(rtc), quantile(hlsCap, .5), quantile(hlsCap, .95), len(hlsCap), quantile(hlsIngest, .5), speed)
	// 20 s at 30 fps, less the start: a stamp must read on most frames.
	if len(rtc) < 150 || len(hlsCap) < 150 || len(hlsIngest) < 150 {
		t.Fatalf("too few samples: WebRTC %d, LL-HLS %d (PDT %d)", len(rtc), len(hlsCap), len(hlsIngest))
	}
	// The page reads the stamp by drawing the video when the browser says
	// a frame is presented, and may draw the next frame already: a reading
	// can be up to a frame (1/30 s) early, never more.
	const frame = 1.0 / 30
	for name, v := range map[string][]float64{"WebRTC": rtc, "LL-HLS": hlsCap} {
		if lo, hi := quantile(v, 0), quantile(v, .5); lo <= -frame || hi > 8 {
			t.Errorf("%s capture to display: min %.3f s, median %.3f s: want over -%.3f s (a frame) and a median under 8 s", name, lo, hi, frame)
		}
	}
	// Both LL-HLS readings are to the frame: the stamp's, as above, and the
	// PROGRAM-DATE-TIME one (hls.js maps currentTime through its
	// fragment's date), so their medians may cross by up to two frames
	// (CI: −0.059 s, once, with a median 1 s either way).
	if d := quantile(hlsCap, .5) - quantile(hlsIngest, .5); d < -2*frame || d > 0.5 {
		t.Errorf("LL-HLS: capture to display is %.3f s more than ingest to display: want -%.3f (two frames) to 0.5 s", d, 2*frame)
	}
}

// TestBenchGlass is `make bench-glass`: the default ladder (or
// PRISM_BENCH_GLASS_LADDER) from the demo source, played on the player page for PRISM_BENCH_GLASS seconds; prints
// each measure's median and p95, and how the capture-to-ingest offset (the
// stamp's own error) moved from the first minute to the last.
func TestBenchGlass(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("PRISM_BENCH_GLASS"))
	if secs <= 0 {
		t.Skip("set PRISM_BENCH_GLASS=<seconds> (make bench-glass)")
	}
	ladder := cmp.Or(os.Getenv("PRISM_BENCH_GLASS_LADDER"), "default")
	s, speed := playDemo(t, ladder, secs)
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nglass to glass, demo source (720p30, picture stamp), ladder %s, %d s on the player page (WebRTC and LL-HLS at once, hls.js lowLatencyMode, maxLiveSyncPlaybackRate 1.5)\n", ladder, secs)
	fmt.Fprintf(&b, "%-45s %8s %8s %8s %7s\n", "measure", "median", "p95", "max", "frames")
	row := func(name string, v []float64) {
		fmt.Fprintf(&b, "%-45s %7.3fs %7.3fs %7.3fs %7d\n", name, quantile(v, .5), quantile(v, .95), quantile(v, 1), len(v))
	}
	row("WebRTC capture to display (picture stamp)", s.WebRTC.Capture)
	row("LL-HLS capture to display (picture stamp)", s.HLS.Capture)
	row("LL-HLS ingest to display (PROGRAM-DATE-TIME)", s.HLS.Ingest)
	// Frames whose both measures exist: the difference is capture to
	// ingest, how far the stamp runs ahead of Prism's own clock.
	n := min(len(s.HLS.Capture), len(s.HLS.Ingest))
	if n >= 60 {
		diff := func(from, to int) float64 {
			d := make([]float64, 0, to-from)
			for i := from; i < to; i++ {
				d = append(d, s.HLS.Capture[len(s.HLS.Capture)-n+i]-s.HLS.Ingest[len(s.HLS.Ingest)-n+i])
			}
			return quantile(d, .5)
		}
		w := min(n/2, 1800) // a minute of frames, or half the run
		fmt.Fprintf(&b, "capture to ingest (LL-HLS stamp minus PDT, median): first %d frames %.3f s, last %d frames %.3f s\n", w, diff(0, w), w, diff(n-w, n))
	}
	fmt.Fprintf(&b, "transcoder speed at the end (media time / uptime; under 1: behind real time, counted by the stamp, not by PDT): %.2fx\n", speed)
	t.Log(b.String())
	fmt.Print(b.String())
	testutil.Report(t, "WebRTC capture to display (picture stamp) median %.3f s p95 %.3f s; LL-HLS capture to display (picture stamp) median %.3f s p95 %.3f s; LL-HLS ingest to display (PROGRAM-DATE-TIME) median %.3f s",
		quantile(s.WebRTC.Capture, .5), quantile(s.WebRTC.Capture, .95), quantile(s.HLS.Capture, .5), quantile(s.HLS.Capture, .95), quantile(s.HLS.Ingest, .5))
	if len(s.WebRTC.Capture) == 0 || len(s.HLS.Capture) == 0 {
		t.Errorf("no picture stamp read: WebRTC %d, LL-HLS %d samples", len(s.WebRTC.Capture), len(s.HLS.Capture))
	}
}
