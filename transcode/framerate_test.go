package transcode

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/outputs/file"
	"github.com/prism-streaming/prism/pipeline"
)

// capLadder has one uncapped rung and one per frame-rate cap. A cap at or
// above the source rate leaves that rung at the source rate.
const capLadder = `name: caps
gop: 1s
keyframe_min_interval: 300ms
rungs:
  - {name: full, width: 192, height: 108, bitrate: 150k, preset: ultrafast}
  - {name: c15, width: 160, height: 90, bitrate: 60k, preset: ultrafast, fps: 15}
  - {name: c24, width: 160, height: 90, bitrate: 60k, preset: ultrafast, fps: 24}
  - {name: c25, width: 160, height: 90, bitrate: 60k, preset: ultrafast, fps: 25}
  - {name: c30, width: 192, height: 108, bitrate: 60k, preset: ultrafast, fps: 30}
audio: {aac: {bitrate: 64k}, opus: {bitrate: 32k}}
`

// capRun is what one transcode of capLadder gave: per video track, the PTS
// of every packet and of its keyframes, and the MP4 it wrote.
type capRun struct {
	job  *Transcoder
	pts  map[int][]int64
	keys map[int][]int64
	mp4  map[int]string
}

// runCapped transcodes seconds of input at 1x (so that a keyframe request
// lands while the encoders run) into one MP4 per video rung, and asks for a
// keyframe once the first rung passes forceAt of media time.
func runCapped(t *testing.T, input string, seconds float64, forceAt time.Duration) capRun {
	t.Helper()
	dir := t.TempDir()
	job, err := Start(context.Background(), Options{Input: input, Ladder: mustLadder(t, capLadder),
		Duration: time.Duration(seconds * float64(time.Second)), Realtime: true, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	run := capRun{job: job, pts: map[int][]int64{}, keys: map[int][]int64{}, mp4: map[int]string{}}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var video []int
	for _, tr := range job.Tracks() {
		if tr.Kind != pipeline.KindVideo {
			continue
		}
		video = append(video, tr.ID)
		run.mp4[tr.ID] = filepath.Join(dir, tr.Name+".mp4")
		w := &file.MP4Writer{Path: run.mp4[tr.ID], Tracks: []pipeline.Track{tr}}
		r := job.Subscribe(pipeline.WithTracks(tr.ID), pipeline.Lossless())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(context.Background(), r); err != nil {
				errs <- err
			}
		}()
	}
	all := job.Subscribe(pipeline.WithTracks(video...), pipeline.Lossless())
	wg.Add(1)
	go func() {
		defer wg.Done()
		first, forced := int64(-1), false
		for {
			p, err := all.Read(context.Background())
			if err != nil {
				return
			}
			run.pts[p.Track] = append(run.pts[p.Track], p.PTS)
			if p.Keyframe {
				run.keys[p.Track] = append(run.keys[p.Track], p.PTS)
			}
			if p.Track == video[0] {
				if first < 0 {
					first = p.PTS
				}
				if !forced && p.PTS-first >= ticks90k(forceAt) {
					job.RequestKeyframe(pipeline.KeyframePLI)
					forced = true
				}
			}
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
	return run
}

// TestCappedRungsStayAligned is the frame-rate matrix: sources at 25,
// 29.97, 30, 50 and 59.94 fps and an MP4 whose AAC priming starts it at
// -21 ms, each through an uncapped rung and caps of 15, 24, 25 and 30.
// Every rung, capped or not, must put its IDRs (GOP boundaries and a forced
// one) at identical PTS, as ffprobe reads them from the files; a capped rung
// keeps source frames with their source PTS, and as many as its cap allows.
func TestCappedRungsStayAligned(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	const seconds = 3.0
	dir := t.TempDir()
	mp4 := filepath.Join(dir, "aac.mp4")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30000/1001:duration=4",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-shortest", mp4)
	cases := []struct {
		name  string
		input string
		fps   float64
	}{
		{"25", LavfiPrefix + "testsrc2=size=320x180:rate=25", 25},
		{"29.97", LavfiPrefix + "testsrc2=size=320x180:rate=30000/1001", 30000.0 / 1001},
		{"30", LavfiPrefix + "testsrc2=size=320x180:rate=30", 30},
		{"50", LavfiPrefix + "testsrc2=size=320x180:rate=50", 50},
		{"59.94", LavfiPrefix + "testsrc2=size=320x180:rate=60000/1001", 60000.0 / 1001},
		{"mp4-aac-29.97", mp4, 30000.0 / 1001},
	}
	t.Run("matrix", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				checkCapped(t, runCapped(t, c.input, seconds, 1200*time.Millisecond), c.fps, seconds)
			})
		}
	})
}

func checkCapped(t *testing.T, run capRun, srcFPS, seconds float64) {
	t.Helper()
	var ref *pipeline.Track
	var refKeys string
	for _, tr := range run.job.Tracks() {
		if tr.Kind != pipeline.KindVideo {
			continue
		}
		// ffprobe: the IDR PTS set and the frame count of the file.
		p := testutil.FFprobe(t, run.mp4[tr.ID], true)
		var keys []string
		for _, pk := range p.Packets {
			if strings.HasPrefix(pk.Flags, "K") {
				keys = append(keys, pk.PTSTime)
			}
		}
		got := strings.Join(keys, " ")
		want := math.Min(tr.FPS, srcFPS) * seconds
		testutil.Report(t, "%s (%.3f fps): %d frames (cap allows %.0f), IDRs at %s", tr.Name, tr.FPS, len(p.Packets), want, got)
		if n := float64(len(p.Packets)); math.Abs(n-want) > seconds+1 {
			t.Errorf("%s: %.0f frames in %.0f s, want %.0f within one a second", tr.Name, n, seconds, want)
		}
		if ref == nil {
			tr := tr
			ref, refKeys = &tr, got
			// GOP boundaries at 0, 1 and 2 s and the forced one at about
			// 1.5 s: a forced IDR off the cap grids is the hard case.
			if len(keys) < 4 {
				t.Errorf("%s: IDRs at %s: want the GOP boundaries and a forced one", tr.Name, got)
			}
			continue
		}
		if got != refKeys {
			t.Errorf("IDRs differ: %s at %s, %s at %s", ref.Name, refKeys, tr.Name, got)
		}
		if fmt.Sprint(run.keys[tr.ID]) != fmt.Sprint(run.keys[ref.ID]) {
			t.Errorf("keyframe packets differ: %s at %v, %s at %v", ref.Name, run.keys[ref.ID], tr.Name, run.keys[tr.ID])
		}
		// A capped rung shows source frames at their own time: a subset of
		// the uncapped rung's PTS, no hole longer than a cap slot and a
		// source frame.
		src := int64(math.Round(pipeline.VideoClockRate / srcFPS))
		slot := int64(math.Round(pipeline.VideoClockRate / math.Min(tr.FPS, srcFPS)))
		for i, pts := range run.pts[tr.ID] {
			if _, ok := slices.BinarySearch(run.pts[ref.ID], pts); !ok {
				t.Errorf("%s: frame at %d is not a source frame", tr.Name, pts)
				break
			}
			if i > 0 && pts-run.pts[tr.ID][i-1] > slot+src+1 {
				t.Errorf("%s: %d ticks between frames at %d, cap slot %d", tr.Name, pts-run.pts[tr.ID][i-1], pts, slot)
				break
			}
		}
	}
}

// TestCapTakesSlotsAndIDRs: the cursor of a capped rung keeps one frame per
// slot of the cap's grid, counted from the clock's epoch, plus every IDR
// even off the grid, and makes the same IDR decisions as an uncapped rung.
func TestCapTakesSlotsAndIDRs(t *testing.T) {
	for _, ca := range []struct {
		src, cap float64
		jitter   bool // millisecond timestamps, as RTMP carries them
	}{
		{30, 15, false}, {30000.0 / 1001, 15, false}, {30, 24, false}, {25, 24, false},
		{60000.0 / 1001, 30, false}, {50, 25, false}, {30, 15, true}, {60, 24, true},
	} {
		t.Run(fmt.Sprintf("%.3f-to-%v-jitter-%v", ca.src, ca.cap, ca.jitter), func(t *testing.T) {
			c := newKeyframeClock(90000, 9000)
			full, capped := newRungCursor(c, ca.src, ca.src), newRungCursor(c, ca.cap, ca.src)
			if full.capNum != 0 || capped.capNum == 0 {
				t.Fatalf("cap set on the wrong cursor: %+v %+v", full, capped)
			}
			const start = 123456
			pts := func(n int) int64 {
				sec := float64(n) / ca.src
				if ca.jitter {
					return start + int64(math.Round(sec*1000))*90
				}
				return start + int64(math.Round(sec*pipeline.VideoClockRate))
			}
			n := int(10 * ca.src)
			var kept []int64
			var keys int
			forcedAt := -1
			for i := range n {
				p := pts(i)
				c.observe(p)
				if i == int(2.5*ca.src)+1 {
					c.force(pipeline.KeyframePLI) // lands on this frame: none took it yet
					forcedAt = i
				}
				_, fullKey := full.take(p)
				keep, key := capped.take(p)
				if key != fullKey {
					t.Fatalf("frame %d (pts %d): IDR on the uncapped rung %v, on the capped one %v", i, p, fullKey, key)
				}
				if key && !keep {
					t.Fatalf("frame %d: an IDR dropped", i)
				}
				if i == forcedAt && !key {
					t.Fatalf("frame %d: the forced IDR is missing", i)
				}
				if keep {
					kept = append(kept, p)
				}
				if key {
					keys++
				}
			}
			want := 10 * ca.cap
			if got := float64(len(kept)); math.Abs(got-want) > 10+1 {
				t.Errorf("kept %v frames in 10 s, cap %v", got, ca.cap)
			}
			if keys != 11 {
				t.Errorf("%d IDRs, want 10 GOP boundaries and one forced", keys)
			}
			slot := pipeline.VideoClockRate / ca.cap
			for i := 1; i < len(kept); i++ {
				if d := float64(kept[i] - kept[i-1]); d > slot+pipeline.VideoClockRate/ca.src+100 {
					t.Fatalf("%v ticks between kept frames %d and %d, slot %v", d, i-1, i, slot)
				}
			}
		})
	}
}

// TestCapPatternRepeatsEveryGOP: 29.97 fps capped to 15 keeps every other
// source frame counted from each GOP's IDR, for minutes: a grid counted from
// the first frame would slip to the odd frames after 33 s (15 slots a second
// against 14.985 frame pairs), and LL-HLS parts of six source frames would
// no longer start on a frame the capped rung has.
func TestCapPatternRepeatsEveryGOP(t *testing.T) {
	c := newKeyframeClock(90000, 45000)
	k := newRungCursor(c, 15, 30000.0/1001)
	idr := 0
	for i := range 30 * 120 {
		pts := int64(i) * 3003
		c.observe(pts)
		keep, key := k.take(pts)
		if key {
			idr = i
		}
		if want := (i-idr)%2 == 0; keep != want {
			t.Fatalf("frame %d (%d after the IDR): kept %v", i, i-idr, keep)
		}
	}
}

// TestCapSurvivesTimeSteppingBack: should a PTS ever go back, a capped
// rung carries on at its cap instead of dropping every frame until the
// timestamps catch up with where they were.
func TestCapSurvivesTimeSteppingBack(t *testing.T) {
	c := newKeyframeClock(10*90000, 45000)
	k := newRungCursor(c, 15, 30)
	kept := 0
	for i := range 60 {
		pts := int64(i) * 3000
		if i >= 30 {
			pts -= 5 * 90000 // back 5 s, mid-GOP
		}
		c.observe(pts)
		if keep, _ := k.take(pts); keep && i >= 30 {
			kept++
		}
	}
	if kept != 15 {
		t.Errorf("kept %d of the 30 frames after the step back, want 15", kept)
	}
}
