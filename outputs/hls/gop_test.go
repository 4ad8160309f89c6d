package hls

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// TestForcedKeyframesAtStartKeepSegmentsOneGOP: two keyframes forced right
// after the output subscribes (viewers or a follower joining) must not be
// taken for the GOP: segments stay one ladder GOP long.
func TestForcedKeyframesAtStartKeepSegmentsOneGOP(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	// No keyframe budget spacing, so the two forced IDRs land a few frames apart.
	f := startFixture(t, Config{}, strings.Replace(testLadder, "gop: 1s", "gop: 1s\nkeyframe_min_interval: 0s", 1), nil)
	defer f.close()
	f.job.RequestKeyframe(pipeline.KeyframeJoin)
	time.Sleep(100 * time.Millisecond) // the second forced IDR a few frames after the first
	f.job.RequestKeyframe(pipeline.KeyframeJoin)

	mv := f.index()
	uri := mv.Variants[0].URI
	f.waitSegments([]string{uri}, 3, 15*time.Second)
	pl := f.media(uri)
	if pl.TargetDuration != 1 {
		t.Errorf("target duration %d, want 1 (the ladder's GOP)", pl.TargetDuration)
	}
	for i, seg := range pl.Segments {
		if seg.Gap || i == 0 {
			continue // the first segment may start at a forced IDR
		}
		if d := seg.Duration.Seconds(); math.Abs(d-1) > 0.05 && i < len(pl.Segments)-1 {
			t.Errorf("segment %d lasts %.3fs, want one GOP (1s)", i, d)
		}
	}
}
