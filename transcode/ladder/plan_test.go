package ladder

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

// testLadder builds a valid ladder of KeepAspect-width rungs of the given heights.
func testLadder(heights ...int) *Ladder {
	l := &Ladder{Name: "test"}
	for _, h := range heights {
		l.Rungs = append(l.Rungs, Rung{Name: strconv.Itoa(h) + "p", Height: h, Bitrate: 1_000_000})
	}
	l.ApplyDefaults()
	return l
}

type size struct{ w, h int }

func planSizes(p []PlannedRung) []size {
	var s []size
	for _, r := range p {
		s = append(s, size{r.OutWidth, r.OutHeight})
	}
	return s
}

func TestPlanSizes(t *testing.T) {
	tests := []struct {
		name        string
		ladder      *Ladder
		srcW, srcH  int
		want        []size
		wantSkipped []string
		wantIndexes []int
	}{{
		name:   "1080p source keeps every rung",
		ladder: testLadder(1080, 720, 480, 360),
		srcW:   1920, srcH: 1080,
		want:        []size{{1920, 1080}, {1280, 720}, {854, 480}, {640, 360}},
		wantIndexes: []int{0, 1, 2, 3},
	}, {
		name:   "720p source skips 1080p",
		ladder: testLadder(1080, 720, 480, 360),
		srcW:   1280, srcH: 720,
		want:        []size{{1280, 720}, {854, 480}, {640, 360}},
		wantSkipped: []string{"1080p"},
		wantIndexes: []int{1, 2, 3},
	}, {
		name:   "854x480 source",
		ladder: testLadder(720, 480, 360, 240),
		srcW:   854, srcH: 480,
		// 240*854/480 = 427 is odd; FFmpeg's av_rescale rounds 213.5 up: 428.
		want:        []size{{854, 480}, {640, 360}, {428, 240}},
		wantSkipped: []string{"720p"},
		wantIndexes: []int{1, 2, 3},
	}, {
		name:   "odd 853x480 source: rounding up to 854 is not an upscale",
		ladder: testLadder(480, 360),
		srcW:   853, srcH: 480,
		want:        []size{{854, 480}, {640, 360}},
		wantIndexes: []int{0, 1},
	}, {
		name:   "portrait phone source",
		ladder: testLadder(1080, 720),
		srcW:   1080, srcH: 1920,
		want:        []size{{608, 1080}, {406, 720}},
		wantIndexes: []int{0, 1},
	}, {
		name: "keep-aspect height from a fixed width",
		ladder: &Ladder{Name: "w", Rungs: []Rung{
			{Name: "w426", Width: 426, Height: KeepAspect, Bitrate: 1},
			{Name: "w1280", Width: 1280, Height: KeepAspect, Bitrate: 1},
		}},
		srcW: 640, srcH: 360,
		want:        []size{{426, 240}},
		wantSkipped: []string{"w1280"},
		wantIndexes: []int{0},
	}, {
		name: "explicit size larger in one dimension only",
		ladder: &Ladder{Name: "e", Rungs: []Rung{
			{Name: "wide", Width: 1920, Height: 480, Bitrate: 1},
			{Name: "fits", Width: 640, Height: 480, Bitrate: 1},
		}},
		srcW: 1280, srcH: 720,
		want:        []size{{640, 480}},
		wantSkipped: []string{"wide"},
		wantIndexes: []int{1},
	}, {
		name: "upscale",
		ladder: func() *Ladder {
			l := testLadder(1080, 720)
			l.Rungs[0].Upscale = true
			return l
		}(),
		srcW: 1280, srcH: 720,
		want:        []size{{1920, 1080}, {1280, 720}},
		wantIndexes: []int{0, 1},
	}, {
		name:   "tiny source keeps sizes at least 2",
		ladder: &Ladder{Name: "t", Rungs: []Rung{{Name: "t", Width: KeepAspect, Height: 2, Bitrate: 1, Upscale: true}}},
		srcW:   1, srcH: 1000,
		want:        []size{{2, 2}},
		wantIndexes: []int{0},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ladder.ApplyDefaults()
			planned, skipped, err := tt.ladder.Plan(tt.srcW, tt.srcH, 30)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if got := planSizes(planned); !equalSlices(got, tt.want) {
				t.Errorf("sizes = %v; want %v", got, tt.want)
			}
			var indexes []int
			for _, p := range planned {
				indexes = append(indexes, p.Index)
				if p.Name != tt.ladder.Rungs[p.Index].Name {
					t.Errorf("planned %q has Index %d, which is %q", p.Name, p.Index, tt.ladder.Rungs[p.Index].Name)
				}
			}
			if !equalSlices(indexes, tt.wantIndexes) {
				t.Errorf("indexes = %v; want %v", indexes, tt.wantIndexes)
			}
			var names []string
			for _, s := range skipped {
				names = append(names, s.Name)
				want := "larger than the " + strconv.Itoa(tt.srcW) + "x" + strconv.Itoa(tt.srcH) + " source (set upscale: true to encode it)"
				if s.Reason != want {
					t.Errorf("reason = %q; want %q", s.Reason, want)
				}
			}
			if !equalSlices(names, tt.wantSkipped) {
				t.Errorf("skipped = %v; want %v", names, tt.wantSkipped)
			}
		})
	}
}

func TestPlanSkipReason(t *testing.T) {
	_, skipped, err := testLadder(1080, 720).Plan(1280, 720, 30)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 1 || skipped[0].Reason != "larger than the 1280x720 source (set upscale: true to encode it)" {
		t.Errorf("skipped = %+v", skipped)
	}
}

func TestPlanFPS(t *testing.T) {
	tests := []struct {
		rungFPS, srcFPS, want float64
	}{
		{0, 60, 60},
		{30, 60, 30},
		{60, 29.97, 29.97},
		{30, 30, 30},
		{30, 0, 30}, // source rate not known yet: the cap stands
		{0, 0, 0},
	}
	for _, tt := range tests {
		l := testLadder(360)
		l.Rungs[0].FPS = tt.rungFPS
		planned, _, err := l.Plan(1280, 720, tt.srcFPS)
		if err != nil {
			t.Fatal(err)
		}
		if got := planned[0].OutFPS; got != tt.want {
			t.Errorf("rung fps %v, source %v: OutFPS = %v; want %v", tt.rungFPS, tt.srcFPS, got, tt.want)
		}
	}
}

func TestPlanAllSkipped(t *testing.T) {
	planned, skipped, err := testLadder(1080, 720).Plan(640, 360, 30)
	if !errors.Is(err, ErrNoRungs) {
		t.Fatalf("Plan = %v; want ErrNoRungs", err)
	}
	if !strings.Contains(err.Error(), "640x360") {
		t.Errorf("error %q does not name the source size", err)
	}
	if planned != nil || len(skipped) != 2 {
		t.Errorf("planned %d, skipped %d; want 0 and 2", len(planned), len(skipped))
	}
}

func TestPlanBadInput(t *testing.T) {
	l := testLadder(720)
	for _, src := range []struct {
		w, h int
		fps  float64
	}{{0, 720, 30}, {1280, -1, 30}, {1 << 20, 720, 30}, {1280, 720, -1}, {1280, 720, math.NaN()}, {1280, 720, math.Inf(1)}} {
		if _, _, err := l.Plan(src.w, src.h, src.fps); err == nil || errors.Is(err, ErrNoRungs) {
			t.Errorf("Plan(%d, %d, %v) = %v; want an input error", src.w, src.h, src.fps, err)
		}
	}
	bad := &Ladder{Name: "bad"} // no rungs
	if _, _, err := bad.Plan(1280, 720, 30); !errors.Is(err, ErrInvalid) {
		t.Errorf("Plan on an invalid ladder = %v; want ErrInvalid", err)
	}
}

func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
