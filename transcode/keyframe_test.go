package transcode

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// rungFigures are one rung's bytes and IDRs inside the measured window.
type rungFigures struct {
	bytes, idrs int
}

// runKeyframeWindow transcodes 10 s of lavfi media through the three-rung
// ladder as fast as it goes (a lossless reader paces it) and measures each
// rung over [2 s, 10 s) of media time. When every > 0 it asks for a
// keyframe for reason pli each time the media time advances by every, the
// way Chromium asks under steady loss. Requests follow media time, not the
// wall clock, so the run is the same on a loaded machine.
func runKeyframeWindow(t *testing.T, every time.Duration) (map[string]rungFigures, pipeline.KeyframeStats) {
	t.Helper()
	job, err := Start(context.Background(), Options{Input: LavfiPrefix + "testsrc2=size=640x360:rate=30",
		Ladder: mustLadder(t, threeRungs), Duration: 10 * time.Second, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r := job.Subscribe(pipeline.Lossless())
	const from, to = 2 * pipeline.VideoClockRate, 10 * pipeline.VideoClockRate
	step := ticks90k(every)
	next := step
	figures := map[string]rungFigures{}
	for {
		p, err := r.Read(context.Background())
		if err != nil {
			break
		}
		tr := job.Tracks()[p.Track]
		if tr.Kind != pipeline.KindVideo {
			continue
		}
		if step > 0 && p.Track == 0 && p.PTS >= next {
			job.RequestKeyframe(pipeline.KeyframePLI)
			next += step
		}
		if p.PTS < from || p.PTS >= to {
			continue
		}
		f := figures[tr.Name]
		f.bytes += len(p.Data)
		if p.Keyframe {
			f.idrs++
		}
		figures[tr.Name] = f
	}
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	return figures, job.Stats().Keyframes
}

// TestKeyframeBudgetUnderLossyViewer is issue 11's check, with real
// encoders: a viewer with 5 % loss sending a PLI every 150 ms changes every
// rung's bitrate by under 10 % and its IDR count by at most the budget
// (window / keyframe_min_interval: 8 s / 0.5 s).
func TestKeyframeBudgetUnderLossyViewer(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	quiet, _ := runKeyframeWindow(t, 0)
	lossy, kf := runKeyframeWindow(t, 150*time.Millisecond)
	const budget = 8 * 2 // the window over the default minimum interval, half the 1 s GOP
	if len(quiet) != 3 || len(lossy) != 3 {
		t.Fatalf("rungs measured: %v and %v, want 3", quiet, lossy)
	}
	for name, q := range quiet {
		l := lossy[name]
		change := float64(l.bytes-q.bytes) / float64(q.bytes)
		testutil.Report(t, "%s: %.0f → %.0f kbit/s (%+.1f %%), IDRs %d → %d in 8 s, with a PLI every 150 ms",
			name, float64(q.bytes*8)/8e3, float64(l.bytes*8)/8e3, 100*change, q.idrs, l.idrs)
		if math.Abs(change) >= 0.10 {
			t.Errorf("%s: bitrate changed by %+.1f %%, want under 10 %%", name, 100*change)
		}
		if q.idrs != 8 {
			t.Errorf("%s: %d IDRs in 8 s without requests, want one per GOP", name, q.idrs)
		}
		if extra := l.idrs - q.idrs; extra < 1 || extra > budget {
			t.Errorf("%s: %d extra IDRs, want 1..%d", name, extra, budget)
		}
	}
	testutil.Report(t, "keyframe budget: %d pli requests, %d forced, %d coalesced", kf.Requests[pipeline.KeyframePLI], kf.Forced, kf.Coalesced)
	if kf.Forced+kf.Coalesced != kf.Requests[pipeline.KeyframePLI] || kf.Forced == 0 {
		t.Errorf("keyframe stats %+v: every request is forced or coalesced", kf)
	}
}
