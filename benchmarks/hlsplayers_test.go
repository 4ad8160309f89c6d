package benchmarks

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestHLSPlayers is the LL-HLS player-latency harness (`make
// bench-hls-players`; skipped unless PRISM_BENCH_HLS_PLAYERS is set). It
// runs `prism serve --demo` (bin/prism: the default ladder over the 720p30
// demo source) and plays its LL-HLS in headless Chromium with stock players
// as they come:
//
//   - hlsjs: hls.js with its default settings (lowLatencyMode is on by default);
//   - hlsjs-catchup: hls.js with maxLiveSyncPlaybackRate: 1.5 only;
//   - shaka: Shaka Player with streaming.lowLatencyMode: true only.
//
// Each run plays PRISM_BENCH_HLS_SECONDS (60) and samples once a second the
// ingest-to-display latency: Date.now() minus the EXT-X-PROGRAM-DATE-TIME
// of the frame on screen (hls.js playingDate, Shaka getPlayheadTimeAsDate).
// PROGRAM-DATE-TIME is the frame's ingest into Prism, so this is not
// glass-to-glass: the source's capture and encode are not in it. The page
// is served by this test, which proxies /hls/ to Prism to log every request
// (start, time to answer, status): the request timeline. Runs alternate
// between players; the figure of a player is the median of its runs'
// medians. Set PRISM_BENCH_HLS_PLAYERS=1 for all three players or a comma
// list (hlsjs,shaka), PRISM_BENCH_HLS_RUNS (5), and PRISM_BENCH_HLS_OUT
// (build/hlsplayers) for the per-run JSON with samples, events and requests;
// PRISM_BENCH_HLS_DEBUG=1 adds hls.js' own log to it; PRISM_BENCH_HLS_BIN
// runs another build of prism instead of bin/prism.
func TestHLSPlayers(t *testing.T) {
	which := os.Getenv("PRISM_BENCH_HLS_PLAYERS")
	if which == "" {
		t.Skip("set PRISM_BENCH_HLS_PLAYERS=1 (make bench-hls-players) to run the LL-HLS player latency harness")
	}
	players := []string{"hlsjs", "hlsjs-catchup", "shaka"}
	if which != "1" {
		players = strings.Split(which, ",")
	}
	runs := envInt(t, "PRISM_BENCH_HLS_RUNS", 5)
	seconds := envInt(t, "PRISM_BENCH_HLS_SECONDS", 60)
	out := os.Getenv("PRISM_BENCH_HLS_OUT")
	if out == "" {
		out = filepath.Join("..", "build", "hlsplayers")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		"/hls.js":   filepath.Join("..", "outputs", "hls", "browser", "node_modules", "hls.js", "dist", "hls.min.js"),
		"/shaka.js": filepath.Join("..", "outputs", "hls", "browser", "node_modules", "shaka-player", "dist", "shaka-player.compiled.js"),
	}
	for _, p := range scripts {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v: run `make setup` (npm ci in outputs/hls/browser)", err)
		}
	}
	page, err := os.ReadFile(filepath.Join("testdata", "hlsplayers.html"))
	if err != nil {
		t.Fatal(err)
	}

	prism := startDemo(t)
	log := &requestLog{}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(prism) },
		FlushInterval: -1,
	}
	reports := make(chan playerReport, 1)
	mux := http.NewServeMux()
	mux.Handle("/hls/", log.wrap(proxy))
	mux.HandleFunc("/player", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	for path, file := range scripts {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/javascript")
			http.ServeFile(w, r, file)
		})
	}
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		var rep playerReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case reports <- rep:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})
	harness := httptest.NewServer(mux)
	defer harness.Close()

	results := map[string][]runResult{}
	for run := 1; run <= runs; run++ {
		for _, player := range players {
			res := playOnce(t, harness.URL, player, seconds, log, reports)
			res.Run = run
			results[player] = append(results[player], res)
			t.Logf("%s run %d: %s", player, run, res.line())
			name := filepath.Join(out, fmt.Sprintf("%s-run%d.json", player, run))
			if b, err := json.MarshalIndent(res, "", " "); err == nil {
				_ = os.WriteFile(name, b, 0o644)
			}
		}
	}

	var sb strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&sb, "LL-HLS players against `prism serve --demo` (default ladder, 720p30 lavfi source), %d CPUs, load average %s\n",
		cpus(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&sb, "latency = ingest to display (PROGRAM-DATE-TIME): Date.now() minus the PDT of the frame on screen, sampled once a second over %d s of play; not glass-to-glass\n", seconds)
	for _, player := range players {
		rs := results[player]
		var medians []float64
		stalls := 0
		for _, r := range rs {
			if r.Samples > 0 {
				medians = append(medians, r.Median)
			}
			stalls += r.Stalls + r.BufferStalls
		}
		fmt.Fprintf(&sb, "%-14s median of %d run medians: %.3f s, stalls over all runs: %d  (%s)\n", player, len(medians), median(medians), stalls, describe(player))
		for _, r := range rs {
			fmt.Fprintf(&sb, "    run %d: %s\n", r.Run, r.line())
		}
	}
	fmt.Fprintf(&sb, "per-run samples, player events and request timelines: %s/<player>-run<N>.json\n", out)
	t.Log(sb.String())
	fmt.Print(sb.String())
}

func describe(player string) string {
	switch player {
	case "hlsjs":
		return "hls.js, default settings"
	case "hlsjs-catchup":
		return "hls.js, maxLiveSyncPlaybackRate: 1.5"
	case "shaka":
		return "Shaka Player, streaming.lowLatencyMode: true"
	}
	return player
}

// startDemo runs bin/prism serve --demo and returns its HTTP base URL once
// the demo stream's LL-HLS is ready.
func startDemo(t *testing.T) *url.URL {
	t.Helper()
	bin := os.Getenv("PRISM_BENCH_HLS_BIN") // another build, to compare
	if bin == "" {
		bin = "../bin/prism"
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: build it first (make build)", bin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	serve := exec.Command(bin, "serve", "--demo", "--http", addr, "--rtmp", "off", "--srt", "off",
		"--data-dir", t.TempDir(), "--webrtc-port", "0", "--stats-interval", "0")
	serve.Stderr = io.Discard
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its worker child goes with it
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Signal(syscall.SIGTERM); _ = serve.Wait() })
	base := "http://" + addr
	waitFor(t, 60*time.Second, "the demo stream on LL-HLS", func() bool {
		return strings.Contains(get(base+"/hls/demo/index.m3u8"), "#EXTM3U")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// playOnce plays the demo stream in a fresh Chromium with one player.
func playOnce(t *testing.T, harness, player string, seconds int, log *requestLog, reports chan playerReport) runResult {
	t.Helper()
	q := url.Values{"player": {player}, "src": {harness + "/hls/demo/index.m3u8"}, "seconds": {strconv.Itoa(seconds)}}
	if os.Getenv("PRISM_BENCH_HLS_DEBUG") != "" {
		q.Set("debug", "1") // hls.js' log lands in the JSON files
	}
	from := log.mark()
	b := testutil.StartBrowser(t, harness+"/player?"+q.Encode())
	defer b.Close()
	var rep playerReport
	select {
	case rep = <-reports:
	case <-b.Exited():
		t.Fatalf("%s: chromium exited before reporting:\n%s", player, b.Output())
	case <-time.After(time.Duration(seconds+120) * time.Second):
		t.Fatalf("%s: no report after %d s:\n%s", player, seconds+120, b.Output())
	}
	b.Close() // its last requests end before the log is read
	return summarize(player, rep, log.since(from))
}

// playerReport is what testdata/hlsplayers.html posts.
type playerReport struct {
	Player        string           `json:"player"`
	Version       string           `json:"version"`
	Config        any              `json:"config"`
	Samples       []sample         `json:"samples"`
	Events        []map[string]any `json:"events"`
	Errors        []map[string]any `json:"errors"`
	Stalls        int              `json:"stalls"`
	BufferStalls  int              `json:"bufferStalls"`
	FirstPlaying  *float64         `json:"firstPlaying"`
	TargetLatency *float64         `json:"targetLatency"`
	Fatal         *string          `json:"fatal"`
	TimedOut      bool             `json:"timedOut"`
	Log           []string         `json:"log,omitempty"`
}

type sample struct {
	T       float64 `json:"t"`
	Latency float64 `json:"latency"`
	Rate    float64 `json:"rate"`
	Ahead   float64 `json:"ahead"`
}

// runResult is one run of one player, as written to the JSON file.
type runResult struct {
	Run          int
	Player       string
	Version      string
	Samples      int
	Median       float64 // ingest to display (PDT), seconds
	Min, Max     float64
	First        float64 // the first sample: where the player started
	StartMS      float64 // page load to the first 'playing'
	Stalls       int     // <video> waiting events after the first playing
	BufferStalls int     // hls.js bufferStalledError
	Target       any
	Fatal        string
	Errors       []string
	Requests     requestSummary
	Report       playerReport
	Timeline     []request
}

func (r runResult) line() string {
	s := fmt.Sprintf("median %.3f s (min %.3f, max %.3f, first %.3f) over %d samples, playing %.1f s after load, stalls %d (waiting) / %d (bufferStalledError), target latency %v; %s",
		r.Median, r.Min, r.Max, r.First, r.Samples, r.StartMS/1000, r.Stalls, r.BufferStalls, r.Target, r.Requests)
	if r.Fatal != "" {
		s += "; FATAL " + r.Fatal
	}
	if len(r.Errors) > 0 {
		s += "; errors " + strings.Join(r.Errors, ", ")
	}
	return s
}

func summarize(player string, rep playerReport, reqs []request) runResult {
	r := runResult{Player: player, Version: rep.Version, Stalls: rep.Stalls, BufferStalls: rep.BufferStalls, Report: rep, Timeline: reqs}
	var lat []float64
	for _, s := range rep.Samples {
		lat = append(lat, s.Latency)
	}
	r.Samples = len(lat)
	if len(lat) > 0 {
		r.First = lat[0]
		r.Median, r.Min, r.Max = median(lat), slices.Min(lat), slices.Max(lat)
	}
	if rep.FirstPlaying != nil {
		r.StartMS = *rep.FirstPlaying
	}
	if rep.TargetLatency != nil {
		r.Target = *rep.TargetLatency
	}
	if rep.Fatal != nil {
		r.Fatal = *rep.Fatal
	}
	if rep.TimedOut {
		r.Fatal += " (timed out)"
	}
	counts := map[string]int{}
	for _, e := range rep.Errors {
		counts[fmt.Sprint(e["details"])]++
	}
	for k, n := range counts {
		r.Errors = append(r.Errors, fmt.Sprintf("%s ×%d", k, n))
	}
	slices.Sort(r.Errors)
	r.Requests = summarizeRequests(reqs)
	return r
}

// request is one proxied request: ms since the harness started.
type request struct {
	StartMS float64 `json:"start_ms"`
	DurMS   float64 `json:"dur_ms"`
	Status  int     `json:"status"`
	Bytes   int64   `json:"bytes"`
	Path    string  `json:"path"` // below /hls/demo/, epoch cut, with the query
}

type requestSummary struct {
	Playlists, Blocking, Parts, Segments int
	BlockP50, BlockMax                   float64 // ms, playlist requests with _HLS_msn
	PartP50, PartMax                     float64 // ms, part requests (preload hints block)
	Refused                              map[int]int
}

func (s requestSummary) String() string {
	return fmt.Sprintf("requests: %d playlists (%d blocking, p50 %.0f ms, max %.0f ms), %d parts (p50 %.0f ms, max %.0f ms), %d segments, non-200 %v",
		s.Playlists, s.Blocking, s.BlockP50, s.BlockMax, s.Parts, s.PartP50, s.PartMax, s.Segments, s.Refused)
}

func summarizeRequests(reqs []request) requestSummary {
	s := requestSummary{Refused: map[int]int{}}
	var block, part []float64
	for _, r := range reqs {
		if r.Status != http.StatusOK {
			s.Refused[r.Status]++
		}
		switch {
		case strings.Contains(r.Path, ".m3u8"):
			s.Playlists++
			if strings.Contains(r.Path, "_HLS_msn") {
				s.Blocking++
				block = append(block, r.DurMS)
			}
		case strings.Contains(r.Path, "_part"):
			s.Parts++
			part = append(part, r.DurMS)
		case strings.Contains(r.Path, "_seg"):
			s.Segments++
		}
	}
	if len(block) > 0 {
		s.BlockP50, s.BlockMax = median(block), slices.Max(block)
	}
	if len(part) > 0 {
		s.PartP50, s.PartMax = median(part), slices.Max(part)
	}
	return s
}

// requestLog records every request the harness proxies to Prism.
type requestLog struct {
	mu    sync.Mutex
	start time.Time
	reqs  []request
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	l.start = time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		begin := time.Now()
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(cw, r)
		if r.Context().Err() != nil {
			cw.status = 499 // the player went away (the proxy says 502)
		}
		path := strings.TrimPrefix(r.URL.Path, "/hls/demo/")
		if i := strings.Index(path, "/"); i == 8 { // the epoch
			path = path[i+1:]
		}
		if r.URL.RawQuery != "" {
			path += "?" + r.URL.RawQuery
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.reqs = append(l.reqs, request{
			StartMS: ms(begin.Sub(l.start)), DurMS: ms(time.Since(begin)),
			Status: cw.status, Bytes: cw.n, Path: path,
		})
	})
}

func (l *requestLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

func (l *requestLog) since(i int) []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs[i:])
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// Flush lets the proxy's FlushInterval through the wrapper.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
