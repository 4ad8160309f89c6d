package hls

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// defaultPlaySeconds is how long TestBrowserDefaultHLSJS plays; latency is
// sampled over the second half.
const defaultPlaySeconds = 20

// TestBrowserDefaultHLSJS plays the stream with hls.js as it comes (no
// configuration: a player that never speeds up to catch up), so that where
// it starts is where it stays: the first playlist it gets decides its
// latency for good. It must play near the live edge, without stalling.
func TestBrowserDefaultHLSJS(t *testing.T) {
	defer testutil.CheckGoroutines(t)()

	reports := make(chan browserReport, 1)
	routes := browserRoutes(t, reports) // before the fixture: fails without hls.js
	f := startFixture(t, Config{}, "", func(mux *http.ServeMux, _ *Server) { routes(mux) })
	defer f.close()
	f.index() // the stream is ready: hls.js starts at once

	q := url.Values{"src": {f.base + "index.m3u8"}, "seconds": {strconv.Itoa(defaultPlaySeconds)}, "config": {"default"}}
	b := testutil.StartBrowser(t, f.http.URL+"/player?"+q.Encode())
	defer b.Close() // before the deferred goroutine check

	var rep browserReport
	select {
	case rep = <-reports:
	case <-b.Exited():
		t.Fatalf("chromium exited before reporting:\n%s", b.Output())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no report from the browser after 2 minutes:\n%s", b.Output())
	}
	p50, p95 := quantile(rep.Latency, 0.5), quantile(rep.Latency, 0.95)
	t.Logf("hls.js %s (default settings): played %.1f s in %.1f s, %d stalls (%d bufferStalledError), max rate %.2f, target latency %v, errors %+v",
		rep.HLSVersion, rep.Played, rep.PlayingFor, rep.Stalls, rep.BufferStalls, rep.MaxRate, deref(rep.TargetLatency), rep.Errors)
	testutil.Report(t, "hls.js default settings, ingest to display (PROGRAM-DATE-TIME): p50 %.3f s, p95 %.3f s over %d samples, %d stalls, %.1f s of playback lost",
		p50, p95, len(rep.Latency), rep.Stalls, max(0, rep.PlayingFor-rep.Played))

	switch {
	case !rep.Supported:
		t.Fatalf("this Chromium cannot play H.264/AAC through MSE: %+v", rep.Errors)
	case rep.Fatal != nil:
		t.Fatalf("hls.js fatal error: %s (all errors: %+v)", *rep.Fatal, rep.Errors)
	case rep.TimedOut:
		t.Fatalf("playback did not last %d s: %+v", defaultPlaySeconds, rep)
	case len(rep.Latency) < 10:
		t.Fatalf("only %d latency samples: no EXT-X-PROGRAM-DATE-TIME mapping?", len(rep.Latency))
	}
	if rep.MaxRate != 1 {
		t.Errorf("hls.js played at up to %.2fx: not its default settings", rep.MaxRate)
	}
	// hls.js' defaults start PART-HOLD-BACK (0.6 s) behind the edge and
	// never catch up, so the latency is where it started plus whatever
	// time playback lost. On a loaded 2-core machine Chromium loses seconds
	// (played < playing time) without a stall event; that time is taken
	// out, what is left is where the player started. The bound leaves a
	// loaded machine room for a slow start.
	lost := max(0, rep.PlayingFor-rep.Played)
	if start := p50 - lost; start > 2.5 {
		t.Errorf("ingest-to-display latency p50 %.3f s with hls.js' default settings, %.3f s without the %.1f s playback lost: started too far from the live edge", p50, start, lost)
	}
	// Each stall raises hls.js' target latency by a second for good. One is
	// allowed for a loaded machine, where the transcoder itself falls
	// behind (bench-hls-players shows it in the request timeline).
	if rep.BufferStalls > 1 {
		t.Errorf("hls.js stalled %d times (bufferStalledError)", rep.BufferStalls)
	}
}
