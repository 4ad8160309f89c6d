package hls

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// testLadder is a small three-rung ladder at ultrafast, cheap enough to
// run in real time on a shared 2-core machine.
const testLadder = `name: hlstest
gop: 1s
rungs:
  - {name: 360p, height: 360, bitrate: 500k, preset: ultrafast}
  - {name: 240p, height: 240, bitrate: 300k, preset: ultrafast}
  - {name: 180p, height: 180, bitrate: 150k, preset: ultrafast}
audio:
  aac: {bitrate: 64k}
  opus: {bitrate: 32k}
`

const testInput = transcode.LavfiPrefix + "testsrc2=size=640x360:rate=30[out0];sine=sample_rate=48000[out1]"

const testStream = "live"

// fixture is a real job in a registry, served by a Server behind httptest.
type fixture struct {
	t      testing.TB
	job    *transcode.Transcoder
	reg    *pipeline.Registry
	srv    *Server
	http   *httptest.Server
	client *http.Client
	base   string // URL of /hls/<stream>/
}

// startFixture starts a job over ladderYAML (testLadder when empty); routes
// adds handlers next to the server's, before runs before Start.
func startFixture(t testing.TB, conf Config, ladderYAML string, routes func(*http.ServeMux, *Server), before ...func(*Server)) *fixture {
	t.Helper()
	job := startJob(t, ladderYAML)
	f := &fixture{t: t, job: job, reg: &pipeline.Registry{}}
	f.srv = &Server{Streams: f.reg, Config: conf}
	for _, b := range before {
		b(f.srv)
	}
	if err := f.srv.Start(); err != nil {
		_ = job.Close()
		t.Fatal(err)
	}
	if err := f.reg.Add(testStream, job); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hls/", f.srv)
	if routes != nil {
		routes(mux, f.srv)
	}
	f.http = httptest.NewServer(mux)
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	f.base = f.http.URL + "/hls/" + testStream + "/"
	return f
}

// startJob starts a real-time job over the lavfi test source and
// ladderYAML (testLadder when empty).
func startJob(t testing.TB, ladderYAML string) *transcode.Transcoder {
	t.Helper()
	if ladderYAML == "" {
		ladderYAML = testLadder
	}
	l, err := ladder.Parse("test.yaml", []byte(ladderYAML))
	if err != nil {
		t.Fatal(err)
	}
	job, err := transcode.Start(context.Background(), transcode.Options{Input: testInput, Ladder: l, Realtime: true})
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// close stops everything the fixture started, in dependency order.
func (f *fixture) close() {
	f.client.CloseIdleConnections()
	f.reg.Remove(testStream)
	f.srv.Close()
	f.http.Close()
	if err := f.job.Close(); err != nil {
		f.t.Errorf("job: %v", err)
	}
}

// get fetches a URL (absolute, or relative to the stream's folder).
func (f *fixture) get(u string) (*http.Response, []byte) {
	f.t.Helper()
	if !strings.HasPrefix(u, "http") {
		u = f.base + u
	}
	res, err := f.client.Get(u)
	if err != nil {
		f.t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatalf("GET %s: %v", u, err)
	}
	return res, b
}

// mustGet fetches a URL and fails unless it answers 200.
func (f *fixture) mustGet(u string) []byte {
	f.t.Helper()
	res, b := f.get(u)
	if res.StatusCode != http.StatusOK {
		f.t.Fatalf("GET %s: %d %s", u, res.StatusCode, b)
	}
	return b
}

// index waits for the multivariant playlist and parses it. Like a player,
// it asks again after a 503 (a stream that has no complete segment yet).
func (f *fixture) index() *playlist.Multivariant {
	f.t.Helper()
	var res *http.Response
	var b []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, b = f.get("index.m3u8")
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" || time.Now().After(deadline) {
			break
		}
	}
	if res.StatusCode != http.StatusOK {
		f.t.Fatalf("GET index.m3u8: %d %s", res.StatusCode, b)
	}
	pl, err := playlist.Unmarshal(b)
	if err != nil {
		f.t.Fatalf("index.m3u8: %v\n%s", err, b)
	}
	mv, ok := pl.(*playlist.Multivariant)
	if !ok {
		f.t.Fatalf("index.m3u8 is not a multivariant playlist:\n%s", b)
	}
	return mv
}

// media fetches and parses a media playlist (URI relative to the stream).
func (f *fixture) media(uri string) *playlist.Media {
	f.t.Helper()
	b := f.mustGet(uri)
	var pl playlist.Media
	if err := pl.Unmarshal(b); err != nil {
		f.t.Fatalf("%s: %v\n%s", uri, err, b)
	}
	return &pl
}

// realSegments counts the segments of pl that are not EXT-X-GAP.
func realSegments(pl *playlist.Media) int {
	n := 0
	for _, s := range pl.Segments {
		if !s.Gap {
			n++
		}
	}
	return n
}

// waitSegments waits until every playlist has at least n real segments.
func (f *fixture) waitSegments(uris []string, n int, timeout time.Duration) {
	f.t.Helper()
	testutil.Eventually(f.t, timeout, fmt.Sprintf("%d segments on every playlist", n), func() bool {
		for _, u := range uris {
			if realSegments(f.media(u)) < n {
				return false
			}
		}
		return true
	})
}

// dir returns the folder part of a URI relative to the stream folder.
func dir(uri string) string { return uri[:strings.LastIndex(uri, "/")+1] }

// probeConcat writes the concatenation of parts to a file and probes it
// with packets: fMP4 fragments appended to their init segment are a valid
// file, so every fragment is parsed by ffprobe.
func probeConcat(t testing.TB, name string, parts ...[]byte) *testutil.Probe {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if err := os.WriteFile(path, all, 0o644); err != nil {
		t.Fatal(err)
	}
	return testutil.FFprobe(t, path, true)
}
