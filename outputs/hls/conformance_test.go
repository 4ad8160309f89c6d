package hls

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/outputs/hls/hlscheck"
	"github.com/prism-streaming/prism/pipeline"
)

// editSource passes a real job's packets on and, once armed, cuts a
// stretch of real time out of them: every track stops at the same media
// time, and all resume together at the first IDR after outage of wall
// clock, so the timestamps jump by the real gap, as a stalled live source
// or a failover placed after the real outage does. The IDR is the next one
// on the job's GOP grid, as a resuming or new encoder's first one is (a
// forced one would fall mid-GOP). With mark, the first
// packet of each track after the gap carries Discontinuity (a publisher
// change).
type editSource struct {
	pipeline.Source // the job
	fan             pipeline.Fanout
	reader          *pipeline.Reader
	kinds           map[int]pipeline.Kind
	outage          time.Duration
	mark            bool
	anyFrame        bool // resume on any video frame, not an IDR
	armed           atomic.Bool
	resumed         atomic.Bool
	gap             atomic.Int64 // media time cut out, 90 kHz, once resumed
	done            chan struct{}

	// Owned by run.
	phase   int // 0 passing, 1 cut, 2 resumed
	cutAt   time.Time
	cutPTS  int64 // 90 kHz
	resume  int64 // 90 kHz
	marked  map[int]bool
	audioHz int64
}

func newEditSource(job pipeline.Source, outage time.Duration, mark bool) *editSource {
	s := &editSource{Source: job, outage: outage, mark: mark, kinds: map[int]pipeline.Kind{}, marked: map[int]bool{}, done: make(chan struct{})}
	for _, tr := range job.Tracks() {
		s.kinds[tr.ID] = tr.Kind
		if tr.Kind == pipeline.KindAudio && tr.Codec == pipeline.CodecAAC {
			s.audioHz = int64(tr.ClockRate)
		}
	}
	s.reader = job.Subscribe(pipeline.WithBufferSize(8192), pipeline.WithName("edit"))
	go s.run()
	return s
}

// Subscribe implements pipeline.Source: readers get the edited packets.
func (s *editSource) Subscribe(o ...pipeline.ReaderOption) *pipeline.Reader {
	return s.fan.Subscribe(o...)
}

// run is the one goroutine of the source; it ends when the job's fan-out
// closes (the job was closed), closing its own.
func (s *editSource) run() {
	defer close(s.done)
	defer s.fan.Close()
	for {
		p, err := s.reader.Read(context.Background())
		if err != nil {
			return
		}
		if out := s.edit(p); out != nil {
			s.fan.Publish(out, s.kinds[p.Track])
		}
	}
}

// ticks is the packet's time, 90 kHz.
func (s *editSource) ticks(p *pipeline.Packet) int64 {
	if s.kinds[p.Track] == pipeline.KindAudio && s.audioHz > 0 {
		return p.PTS * pipeline.VideoClockRate / s.audioHz
	}
	return p.PTS
}

func (s *editSource) edit(p *pipeline.Packet) *pipeline.Packet {
	video := s.kinds[p.Track] == pipeline.KindVideo
	switch s.phase {
	case 0:
		if !s.armed.Load() {
			return p
		}
		if video && s.cutPTS == 0 {
			s.cutPTS = p.PTS + pipeline.VideoClockRate/10
		}
		if s.cutPTS == 0 || s.ticks(p) < s.cutPTS {
			return p
		}
		s.phase, s.cutAt = 1, time.Now()
		return nil
	case 1:
		if time.Since(s.cutAt) < s.outage {
			return nil
		}
		if !video || (!p.Keyframe && !s.anyFrame) {
			return nil
		}
		s.phase, s.resume = 2, p.PTS
		s.gap.Store(s.resume - s.cutPTS)
		s.resumed.Store(true)
	}
	if s.ticks(p) < s.resume {
		return nil
	}
	if s.mark && !s.marked[p.Track] {
		s.marked[p.Track] = true
		q := *p
		q.Discontinuity = true
		return &q
	}
	return p
}

// startEditFixture is startFixture over an editSource wrapping the job.
func startEditFixture(t *testing.T, outage time.Duration, mark bool, routes func(*http.ServeMux), log *slog.Logger) (*fixture, *editSource) {
	t.Helper()
	job := startJob(t, "")
	src := newEditSource(job, outage, mark)
	f := &fixture{t: t, job: job, reg: &pipeline.Registry{}}
	f.srv = &Server{Streams: f.reg, Log: log}
	if err := f.srv.Start(); err != nil {
		_ = job.Close()
		t.Fatal(err)
	}
	if err := f.reg.Add(testStream, src); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hls/", f.srv)
	if routes != nil {
		routes(mux)
	}
	f.http = httptest.NewServer(mux)
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	f.base = f.http.URL + "/hls/" + testStream + "/"
	return f, src
}

// browserRoutes serves the hls.js test player and collects its report.
func browserRoutes(t *testing.T, reports chan<- browserReport) func(*http.ServeMux) {
	t.Helper()
	if _, err := os.Stat(hlsJS); err != nil {
		t.Fatalf("hls.js is not installed (%v): run `make test`, which runs `npm ci` in outputs/hls/browser", err)
	}
	page, err := os.ReadFile(filepath.Join("testdata", "player.html"))
	if err != nil {
		t.Fatal(err)
	}
	return func(mux *http.ServeMux) {
		mux.HandleFunc("/player", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(page)
		})
		mux.HandleFunc("/hls.js", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/javascript")
			http.ServeFile(w, r, hlsJS)
		})
		mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
			var rep browserReport
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
	}
}

// TestConformanceSteady checks every playlist of a plain live stream,
// plain and blocking reloads, for 12 s.
func TestConformanceSteady(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	f := startFixture(t, Config{}, "", nil)
	defer f.close()
	f.index()
	c := hlscheck.New(f.client)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	if err := c.Poll(ctx, f.base+"index.m3u8"); err != nil {
		t.Fatal(err)
	}
	expectConformant(t, c, 4, 0)
}

// expectConformant fails on any problem the checker found and unless it
// checked the renditions of the test ladder (3 rungs and audio) over at
// least segments segments each and discontinuities tagged segments.
func expectConformant(t *testing.T, c *hlscheck.Checker, segments, discontinuities int) {
	t.Helper()
	st := c.Stats()
	t.Logf("checked %s; BANDWIDTH %v", st, c.Bandwidth())
	for _, p := range c.Problems() {
		t.Error(p)
	}
	if n := len(c.Renditions()); n != 4 {
		t.Errorf("%d renditions checked, want 4", n)
	}
	if st.BlockingReloads == 0 || st.Parts == 0 || st.Segments < 4*segments {
		t.Errorf("checked too little: %s", st)
	}
	if st.Discontinuities < 4*discontinuities {
		t.Errorf("saw %d discontinuities over 4 renditions, want %d each", st.Discontinuities, discontinuities)
	}
}

// TestStallPlaysOn: the source stops delivering for 3 s of real time and
// resumes after the real gap with an IDR. The playlists stay conformant
// (the jump becomes a discontinuity: target durations unchanged, no part
// over PART-TARGET, PROGRAM-DATE-TIME jumping by the real gap), and hls.js
// plays on across it without a fatal error.
func TestStallPlaysOn(t *testing.T) {
	testJumpPlaysOn(t, 3*time.Second, false)
}

// TestFailoverPlaysOn: a publisher change, marked Discontinuity, with the
// new publisher's media placed after the real 2 s outage.
func TestFailoverPlaysOn(t *testing.T) {
	testJumpPlaysOn(t, 2*time.Second, true)
}

func testJumpPlaysOn(t *testing.T, outage time.Duration, mark bool) {
	defer testutil.CheckGoroutines(t)()
	reports := make(chan browserReport, 1)
	var logs testutil.SyncBuffer
	f, src := startEditFixture(t, outage, mark, browserRoutes(t, reports), slog.New(slog.NewTextHandler(&logs, nil)))
	defer func() { <-src.done }()
	defer f.close()
	f.index()

	c := hlscheck.New(f.client)
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s\nchecker: %s %q", logs.String(), c.Stats(), c.Problems())
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var polled error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		polled = c.Poll(ctx, f.base+"index.m3u8")
	}()

	q := url.Values{"src": {f.base + "index.m3u8"}, "seconds": {"20"}}
	b := testutil.StartBrowser(t, f.http.URL+"/player?"+q.Encode())
	defer b.Close()
	// Cut once the player has had time to start and the checker to see a
	// few segments of the steady stream.
	testutil.Eventually(t, 30*time.Second, "segments before the cut", func() bool { return c.Stats().Segments >= 4*4 })
	src.armed.Store(true)
	testutil.Eventually(t, 30*time.Second, "the source to resume", src.resumed.Load)
	// Three segments after the jump, then the player's report.
	after := c.Stats().Segments
	testutil.Eventually(t, 30*time.Second, "segments after the jump", func() bool { return c.Stats().Segments >= after+4*3 })

	var rep browserReport
	select {
	case rep = <-reports:
	case <-b.Exited():
		t.Fatalf("chromium exited before reporting:\n%s", b.Output())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no report from the browser after 2 minutes:\n%s", b.Output())
	}
	cancel()
	wg.Wait()
	if polled != nil {
		t.Fatal(polled)
	}

	t.Logf("hls.js %s: played %.1f s in %.1f s, %d stalls, errors %+v", rep.HLSVersion, rep.Played, rep.PlayingFor, rep.Stalls, rep.Errors)
	if !rep.Supported {
		t.Fatalf("this Chromium cannot play H.264/AAC through MSE: %+v", rep.Errors)
	}
	if rep.Fatal != nil {
		t.Fatalf("hls.js fatal error: %s (all errors: %+v)", *rep.Fatal, rep.Errors)
	}
	if rep.TimedOut || rep.Played < 10 {
		t.Errorf("hls.js did not play on: played %.1f s in %.1f s", rep.Played, rep.PlayingFor)
	}
	expectConformant(t, c, 6, 1)
	if !strings.Contains(logs.String(), "new span after a discontinuity") {
		t.Errorf("the feeder saw no jump; logs:\n%s", logs.String())
	}
	// PROGRAM-DATE-TIME jumps by the real gap across the discontinuity
	// (the outage and the wait for the next IDR, which a real-time job
	// timestamps with the wall clock), less what the span before it was
	// stretched by to end its segment: at most a GOP (1 s here).
	gap := ticksDuration(src.gap.Load())
	jumps := c.PDTJumps()
	if len(jumps) == 0 {
		t.Error("no discontinuity seen with PROGRAM-DATE-TIME on both sides")
	}
	for u, js := range jumps {
		for _, j := range js {
			t.Logf("%s: PROGRAM-DATE-TIME jumps by %v over a media gap of %v", u, j, gap)
			if j < gap-1100*time.Millisecond || j > gap+100*time.Millisecond || j < outage-time.Second {
				t.Errorf("%s: PROGRAM-DATE-TIME jumps by %v across the discontinuity, want %v less at most a GOP", u, j, gap)
			}
		}
	}
}

// TestJumpWithoutIDR: the source resumes after a 1.5 s gap on a frame that
// is no IDR. The feeder drops the video up to the next IDR and starts the
// new span there (and the audio with it); the playlists stay conformant.
func TestJumpWithoutIDR(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	var logs testutil.SyncBuffer
	f, src := startEditFixture(t, 1500*time.Millisecond, false, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	src.anyFrame = true // before armed: run reads it only once armed
	defer func() { <-src.done }()
	defer f.close()
	f.index()
	c := hlscheck.New(f.client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var polled error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		polled = c.Poll(ctx, f.base+"index.m3u8")
	}()
	testutil.Eventually(t, 30*time.Second, "segments before the cut", func() bool { return c.Stats().Segments >= 4*3 })
	src.armed.Store(true)
	testutil.Eventually(t, 30*time.Second, "the source to resume", src.resumed.Load)
	after := c.Stats().Segments
	testutil.Eventually(t, 30*time.Second, "segments after the jump", func() bool { return c.Stats().Segments >= after+4*3 })
	cancel()
	wg.Wait()
	if polled != nil {
		t.Fatal(polled)
	}
	expectConformant(t, c, 6, 1)
	if !strings.Contains(logs.String(), "without an IDR") || !strings.Contains(logs.String(), "new span after a discontinuity") {
		t.Errorf("the feeder did not wait for an IDR; logs:\n%s", logs.String())
	}
}
