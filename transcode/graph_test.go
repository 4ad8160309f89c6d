package transcode

import (
	"strings"
	"testing"

	"github.com/prism-streaming/prism/transcode/ladder"
)

func planned(name string, w, h int, fps float64) ladder.PlannedRung {
	return ladder.PlannedRung{Rung: ladder.Rung{Name: name}, OutWidth: w, OutHeight: h, OutFPS: fps}
}

func TestGraphString(t *testing.T) {
	for _, ca := range []struct {
		name    string
		rungs   []ladder.PlannedRung
		cascade bool
		want    string
	}{
		{"single", []ladder.PlannedRung{planned("a", 640, 360, 30)}, true,
			"[in]scale=w=640:h=360:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o0]"},
		{"direct", []ladder.PlannedRung{planned("a", 1280, 720, 30), planned("b", 640, 360, 30)}, false,
			"[in]split=2[in_0][in_1];" +
				"[in_0]scale=w=1280:h=720:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o0];" +
				"[in_1]scale=w=640:h=360:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o1]"},
		{"cascade", []ladder.PlannedRung{planned("a", 1280, 720, 30), planned("b", 854, 480, 30), planned("c", 640, 360, 30)}, true,
			"[in]scale=w=1280:h=720:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[r0];[r0]split=2[o0][r0_1];" +
				"[r0_1]scale=w=854:h=480:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[r1];[r1]split=2[o1][r1_1];" +
				"[r1_1]scale=w=640:h=360:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o2]"},
		{"a capped rung cascades without a filter of its own", []ladder.PlannedRung{planned("a", 640, 360, 15), planned("b", 1280, 720, 30)}, true,
			"[in]scale=w=1280:h=720:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[r1];[r1]split=2[o1][r1_1];" +
				"[r1_1]scale=w=640:h=360:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o0]"},
		{"a higher rate cascades from a capped rung", []ladder.PlannedRung{planned("a", 1280, 720, 15), planned("b", 640, 360, 30)}, true,
			"[in]scale=w=1280:h=720:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[r0];[r0]split=2[o0][r0_1];" +
				"[r0_1]scale=w=640:h=360:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o1]"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			v := &videoFilter{rungs: ca.rungs, cascade: ca.cascade}
			if got := v.graphString(1920, 1080); got != ca.want {
				t.Errorf("graph\n got %s\nwant %s", got, ca.want)
			}
		})
	}
}

// TestGraphStringCLI: the benchmark's FFmpeg CLI baseline has no keyframe
// cursor, so its capped rungs end in an fps filter, after the scale (the
// same scaling work as Prism's) and after the split that feeds smaller rungs
// every frame.
func TestGraphStringCLI(t *testing.T) {
	v := &videoFilter{rungs: []ladder.PlannedRung{planned("a", 1280, 720, 15), planned("b", 640, 360, 30)}, cascade: true, cliFPS: true, sourceFPS: 30}
	want := "[in]scale=w=1280:h=720:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[r0];[r0]split=2[o0_all][r0_1];" +
		"[o0_all]fps=fps=15[o0];" +
		"[r0_1]scale=w=640:h=360:flags=bicubic,format=pix_fmts=yuv420p,settb=1/90000[o1]"
	if got := v.graphString(1920, 1080); got != want {
		t.Errorf("graph\n got %s\nwant %s", got, want)
	}
}

// TestGraphStringCUDA: the mixed path uploads the source once, scales every
// rung with scale_cuda (cascaded from the GPU frame of the next larger
// rung) and downloads each rung once, for its own encoder only.
func TestGraphStringCUDA(t *testing.T) {
	v := &videoFilter{rungs: []ladder.PlannedRung{planned("a", 1280, 720, 30), planned("b", 854, 480, 30), planned("c", 640, 360, 30)},
		cascade: true, scaling: scalingPlan{cuda: true, device: 1}}
	want := "[in]format=pix_fmts=yuv420p,hwupload_cuda=device=1[cin];" +
		"[cin]scale_cuda=w=1280:h=720:interp_algo=bicubic:format=yuv420p[r0];[r0]split=2[dl0][r0_1];[dl0]hwdownload,format=pix_fmts=yuv420p,settb=1/90000[o0];" +
		"[r0_1]scale_cuda=w=854:h=480:interp_algo=bicubic:format=yuv420p[r1];[r1]split=2[dl1][r1_1];[dl1]hwdownload,format=pix_fmts=yuv420p,settb=1/90000[o1];" +
		"[r1_1]scale_cuda=w=640:h=360:interp_algo=bicubic:format=yuv420p,hwdownload,format=pix_fmts=yuv420p,settb=1/90000[o2]"
	if got := v.graphString(1920, 1080); got != want {
		t.Errorf("graph\n got %s\nwant %s", got, want)
	}
	// A source whose aspect changed is letterboxed, which only the CPU
	// graph can do (FFmpeg 7.1 has no pad_cuda).
	v.initW, v.initH = 1920, 1080
	if got := v.graphString(1440, 1080); strings.Contains(got, "cuda") || !strings.Contains(got, "pad=") {
		t.Errorf("letterboxed graph should run on the CPU: %s", got)
	}
}
