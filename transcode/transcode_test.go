package transcode

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/outputs/file"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode/ladder"
)

const threeRungs = `name: test
gop: 1s
rungs:
  - {name: 360p, height: 360, bitrate: 600k, preset: veryfast}
  - {name: 270p, height: 270, bitrate: 350k, preset: veryfast}
  - {name: 180p, height: 180, bitrate: 200k, preset: veryfast}
audio:
  aac: {bitrate: 96k}
  opus: {bitrate: 64k}
`

func mustLadder(t *testing.T, yaml string) *ladder.Ladder {
	t.Helper()
	l, err := ladder.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// runToFiles transcodes input through l into one MP4 per track in dir and
// also returns every packet, read by a separate lossless reader.
func runToFiles(t *testing.T, input string, l *ladder.Ladder, dir string) (*Transcoder, map[int][]*pipeline.Packet) {
	t.Helper()
	job, err := Start(context.Background(), Options{Input: input, Ladder: l})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for _, tr := range job.Tracks() {
		w := &file.MP4Writer{Path: filepath.Join(dir, tr.Name+".mp4"), Tracks: []pipeline.Track{tr}}
		r := job.Subscribe(pipeline.WithTracks(tr.ID), pipeline.Lossless())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(context.Background(), r); err != nil {
				errs <- err
			}
		}()
	}
	packets := map[int][]*pipeline.Packet{}
	all := job.Subscribe(pipeline.Lossless())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			p, err := all.Read(context.Background())
			if err != nil {
				return
			}
			packets[p.Track] = append(packets[p.Track], p)
		}
	}()
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return job, packets
}

// TestLadderIsSwitchable is the foundation's contract: every rung has its
// size and bitrate, IDRs on the same PTS with SPS/PPS in front, no B-frames,
// audio and video start together, and nothing is lost at the end.
func TestLadderIsSwitchable(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	dir := t.TempDir()
	const seconds, fps = 6.0, 30
	src := testutil.TestClip(t, dir, 854, 480, fps, seconds)
	job, packets := runToFiles(t, src, mustLadder(t, threeRungs), dir)

	in := testutil.FFprobe(t, src, false)
	inDur := testutil.F(t, in.Streams[0].Duration)
	frame := 1.0 / fps
	want := map[string][3]int{"360p": {640, 360, 600_000}, "270p": {480, 270, 350_000}, "180p": {320, 180, 200_000}}
	var keyPTS [][]float64
	var videoStart float64
	for _, tr := range job.Tracks() {
		if tr.Kind != pipeline.KindVideo {
			continue
		}
		w := want[tr.Name]
		p := testutil.FFprobe(t, filepath.Join(dir, tr.Name+".mp4"), true)
		s := p.Streams[0]
		if s.Width != w[0] || s.Height != w[1] {
			t.Errorf("%s: size %dx%d, want %dx%d", tr.Name, s.Width, s.Height, w[0], w[1])
		}
		if s.HasBFrames != 0 {
			t.Errorf("%s: has_b_frames=%d, want 0", tr.Name, s.HasBFrames)
		}
		dur := testutil.F(t, s.Duration)
		if math.Abs(dur-inDur) > frame+1e-6 {
			t.Errorf("%s: duration %.4fs, input %.4fs: more than one frame apart", tr.Name, dur, inDur)
		}
		var bytes int
		var keys []float64
		for _, pk := range p.Packets {
			var n int
			if _, err := fmt.Sscan(pk.Size, &n); err != nil {
				t.Fatalf("%s: packet size %q: %v", tr.Name, pk.Size, err)
			}
			bytes += n
			if len(pk.Flags) > 0 && pk.Flags[0] == 'K' {
				keys = append(keys, testutil.F(t, pk.PTSTime))
			}
		}
		rate := float64(bytes*8) / dur
		if dev := rate/float64(w[2]) - 1; math.Abs(dev) > 0.15 {
			t.Errorf("%s: bitrate %.0f, target %d: %+.1f%% off", tr.Name, rate, w[2], dev*100)
		}
		testutil.Report(t, "%s: %dx%d %.0f kbit/s (target %d), %.3fs, keyframes at %v", tr.Name, s.Width, s.Height, rate/1000, w[2]/1000, dur, keys)
		keyPTS = append(keyPTS, keys)
		videoStart = testutil.F(t, s.StartTime)
	}
	// One IDR per GOP second, at the same PTS on every rung.
	if len(keyPTS[0]) != int(seconds) {
		t.Errorf("keyframes %v: want one per second", keyPTS[0])
	}
	for i := 1; i < len(keyPTS); i++ {
		if fmt.Sprint(keyPTS[i]) != fmt.Sprint(keyPTS[0]) {
			t.Errorf("keyframes differ across rungs: %v vs %v", keyPTS[0], keyPTS[i])
		}
	}
	for _, name := range []string{"aac", "opus"} {
		p := testutil.FFprobe(t, filepath.Join(dir, name+".mp4"), false)
		start := testutil.F(t, p.Streams[0].StartTime)
		if math.Abs(start-videoStart) > frame {
			t.Errorf("%s starts at %.4fs, video at %.4fs: more than one frame apart", name, start, videoStart)
		}
		target := map[string]float64{"aac": 96_000, "opus": 64_000}[name]
		if rate := testutil.F(t, p.Streams[0].BitRate); math.Abs(rate/target-1) > 0.15 {
			t.Errorf("%s: bitrate %.0f, target %.0f", name, rate, target)
		}
		if dur := testutil.F(t, p.Streams[0].Duration); math.Abs(dur-inDur) > 2*1024.0/48000 {
			// Encoder priming and the last partial frame: at most two AAC frames.
			t.Errorf("%s: duration %.4fs, input %.4fs", name, dur, inDur)
		}
	}

	// In the packet stream itself: every keyframe is an IDR carrying SPS and
	// PPS, the same PTS set on every rung, and DTS never goes backwards.
	var sets []string
	for _, tr := range job.Tracks() {
		if tr.Kind != pipeline.KindVideo {
			continue
		}
		var keys []int64
		last := int64(math.MinInt64)
		for _, p := range packets[tr.ID] {
			if p.DTS <= last {
				t.Fatalf("%s: DTS %d after %d", tr.Name, p.DTS, last)
			}
			last = p.DTS
			if p.Keyframe {
				sps, pps := pipeline.ParameterSets(p.Data)
				if !pipeline.IsIDR(p.Data) || sps == nil || pps == nil {
					t.Errorf("%s: keyframe at %d is not an IDR with SPS/PPS", tr.Name, p.PTS)
				}
				keys = append(keys, p.PTS)
			} else if pipeline.IsIDR(p.Data) {
				t.Errorf("%s: IDR at %d not flagged as keyframe", tr.Name, p.PTS)
			}
			if p.Ingest.IsZero() {
				t.Fatalf("%s: packet without ingest time", tr.Name)
			}
		}
		sets = append(sets, fmt.Sprint(keys))
	}
	for _, s := range sets[1:] {
		if s != sets[0] {
			t.Errorf("keyframe PTS differ across rungs: %s vs %s", sets[0], s)
		}
	}
	st := job.Stats()
	if len(st.Stages) == 0 || st.Stages[0].Frames == 0 {
		t.Errorf("stage stats missing: %+v", st.Stages)
	}
	for _, s := range st.Stages {
		t.Logf("stage %-14s frames %5d dropped %d busy %8s latency p50 %s p95 %s", s.Name, s.Frames, s.Dropped, s.Busy.Round(time.Millisecond), s.LatencyP50, s.LatencyP95)
	}
}

// TestForcedKeyframeIsAligned: a keyframe request lands on the same frame on
// every rung.
func TestForcedKeyframeIsAligned(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	l := mustLadder(t, `name: t
gop: 10s
keyframe_min_interval: 500ms
rungs:
  - {name: a, height: 180, bitrate: 200k, preset: ultrafast}
  - {name: b, height: 90, bitrate: 100k, preset: ultrafast}
`)
	job, err := Start(context.Background(), Options{
		Input: LavfiPrefix + "testsrc2=size=320x180:rate=30", Ladder: l, Duration: 4 * time.Second, Realtime: true})
	if err != nil {
		t.Fatal(err)
	}
	r := job.Subscribe(pipeline.Lossless())
	keys := map[int][]int64{}
	var forced bool
	for {
		p, err := r.Read(context.Background())
		if err != nil {
			break
		}
		if p.Keyframe {
			keys[p.Track] = append(keys[p.Track], p.PTS)
		}
		if !forced && p.PTS > 90000 {
			job.RequestKeyframe(pipeline.KeyframePLI)
			job.RequestKeyframe(pipeline.KeyframeJoin) // coalesced with the first
			forced = true
		}
	}
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(keys[0]) != 2 || fmt.Sprint(keys[0]) != fmt.Sprint(keys[1]) {
		t.Fatalf("want the first frame and one forced IDR on both rungs at the same PTS, got %v", keys)
	}
	kf := job.Stats().Keyframes
	if kf.Forced != 1 || kf.Coalesced != 1 || kf.Requests[pipeline.KeyframePLI] != 1 || kf.Requests[pipeline.KeyframeJoin] != 1 {
		t.Errorf("keyframe stats %+v: want one forced, one coalesced, one pli and one join", kf)
	}
	if tr := job.Stats().Tracks; tr[0].Keyframes != 2 || tr[1].Keyframes != 2 {
		t.Errorf("track stats %+v: want 2 keyframes per rung", tr)
	}
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.mp4")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	random := filepath.Join(dir, "random.mp4")
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i*7919 + i>>3)
	}
	if err := os.WriteFile(random, b, 0o644); err != nil {
		t.Fatal(err)
	}
	clip := testutil.TestClip(t, dir, 320, 180, 30, 2)
	whole, _ := os.ReadFile(clip)
	truncated := filepath.Join(dir, "truncated.mp4")
	if err := os.WriteFile(truncated, whole[:len(whole)/2], 0o644); err != nil {
		t.Fatal(err)
	}

	l := mustLadder(t, `name: t
rungs:
  - {name: a, height: 180, bitrate: 200k, preset: ultrafast}
`)
	for _, ca := range []struct {
		name, input string
		want        error
	}{
		{"missing file", filepath.Join(dir, "nope.mp4"), ErrOpenInput},
		{"zero-length file", empty, ErrOpenInput},
		{"random bytes", random, ErrOpenInput},
		{"truncated mp4", truncated, ErrOpenInput},
		{"unknown scheme", "gopher://example.invalid/x", ErrOpenInput},
	} {
		t.Run(ca.name, func(t *testing.T) {
			defer testutil.CheckGoroutines(t)()
			job, err := Start(context.Background(), Options{Input: ca.input, Ladder: l})
			if err == nil {
				err = job.Wait()
			}
			if !errors.Is(err, ca.want) && !errors.Is(err, ErrNoVideo) && !errors.Is(err, ErrDecode) {
				t.Fatalf("got %v, want %v", err, ca.want)
			}
			t.Logf("%v", err)
		})
	}
	t.Run("every rung larger than the source", func(t *testing.T) {
		defer testutil.CheckGoroutines(t)()
		big := mustLadder(t, "name: t\nrungs:\n  - {name: a, height: 720, bitrate: 2M}\n")
		_, err := Start(context.Background(), Options{Input: clip, Ladder: big})
		if !errors.Is(err, ErrLadder) {
			t.Fatalf("got %v, want ErrLadder", err)
		}
		t.Logf("%v", err)
	})
}

// TestResolutionChangeCarriesOn: a source that switches from 640x360 to
// 320x240 mid-stream keeps producing every rung at its own size.
func TestResolutionChangeCarriesOn(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	dir := t.TempDir()
	a, b, joined := filepath.Join(dir, "a.ts"), filepath.Join(dir, "b.ts"), filepath.Join(dir, "ab.ts")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=2", "-c:v", "libx264", "-preset", "ultrafast", a)
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
		"-output_ts_offset", "2", b)
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if err := os.WriteFile(joined, append(ab, bb...), 0o644); err != nil {
		t.Fatal(err)
	}

	l := mustLadder(t, `name: t
rungs:
  - {name: a, height: 360, bitrate: 500k, preset: ultrafast}
  - {name: b, height: 180, bitrate: 200k, preset: ultrafast}
`)
	job, packets := runToFiles(t, joined, l, dir)
	for _, tr := range job.Tracks() {
		n := len(packets[tr.ID])
		if n < 110 {
			t.Errorf("%s: %d frames, want ~120 across both parts", tr.Name, n)
		}
		p := testutil.FFprobe(t, filepath.Join(dir, tr.Name+".mp4"), false)
		if p.Streams[0].Width != tr.Width || p.Streams[0].Height != tr.Height {
			t.Errorf("%s: %dx%d, want %dx%d", tr.Name, p.Streams[0].Width, p.Streams[0].Height, tr.Width, tr.Height)
		}
	}
	if job.vfilter.rebuild != 1 {
		t.Errorf("filter graph rebuilt %d times, want 1", job.vfilter.rebuild)
	}
}

// TestStartStopNoLeak starts and stops a job 50 times: goroutines return to
// the baseline and memory does not grow.
func TestStartStopNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("50 cycles")
	}
	l := mustLadder(t, `name: t
rungs:
  - {name: a, height: 180, bitrate: 200k, preset: ultrafast}
  - {name: b, height: 90, bitrate: 100k, preset: ultrafast}
`)
	input := LavfiPrefix + "testsrc2=size=320x180:rate=30[out0];sine=sample_rate=48000[out1]"
	cycle := func() {
		job, err := Start(context.Background(), Options{Input: input, Ladder: l})
		if err != nil {
			t.Fatal(err)
		}
		r := job.Subscribe()
		for i := 0; i < 20; i++ { // let every stage run
			if _, err := r.Read(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if err := job.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ { // warm up allocator pools and FFmpeg's static tables
		cycle()
	}
	check := testutil.CheckGoroutines(t)
	var rss []int64
	for i := 0; i < 50; i++ {
		cycle()
		if i == 9 || i == 49 {
			rss = append(rss, testutil.RSS(t))
		}
	}
	check()
	growth := rss[1] - rss[0]
	testutil.Report(t, "RSS after 10 cycles %d MB, after 50 %d MB (growth %+d KB)", rss[0]>>20, rss[1]>>20, growth>>10)
	limit := int64(8 << 20)
	if raceEnabled {
		limit = 24 << 20
	}
	if growth > limit {
		t.Errorf("RSS grew by %d KB over 40 start/stop cycles", growth>>10)
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

var _ = sort.Ints
