package benchmarks

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/prism-streaming/prism/deploy/ladders"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// clipDir holds media made for this package run; benchmarks run several
// times, so it outlives each one.
var (
	clipDir  string
	clipPath string
)

func TestMain(m *testing.M) {
	// Keep benchmark output to the result lines.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	var err error
	if clipDir, err = os.MkdirTemp("", "prism-bench"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(clipDir)
	os.Exit(code)
}

// benchClip makes a 4 s 1080p30 clip once per package run.
func benchClip(b testing.TB) string {
	if clipPath == "" {
		clipPath = testutil.TestClip(b, clipDir, 1920, 1080, 30, 4)
	}
	return clipPath
}

func mobileLadder(b testing.TB) *ladder.Ladder {
	data, err := ladders.Get("mobile")
	if err != nil {
		b.Fatal(err)
	}
	l, err := ladder.Parse("mobile.yaml", data)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkLadder and BenchmarkFFmpegCLI run the same 4 s 1080p30 clip
// through the mobile ladder; compare their fps in one `go test -bench` run:
//
//	make bench-go   (go test -run '^$' -bench . -benchtime 3x ./benchmarks/)
func BenchmarkLadder(b *testing.B) {
	clip, l := benchClip(b), mobileLadder(b)
	b.ResetTimer()
	frames := 0
	for i := 0; i < b.N; i++ {
		job, err := transcode.Start(context.Background(), transcode.Options{Input: clip, Ladder: l})
		if err != nil {
			b.Fatal(err)
		}
		if err := job.Wait(); err != nil {
			b.Fatal(err)
		}
		frames += int(job.Stats().Tracks[0].Frames)
	}
	b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "fps")
}

func BenchmarkFFmpegCLI(b *testing.B) {
	clip, l := benchClip(b), mobileLadder(b)
	job, err := transcode.Start(context.Background(), transcode.Options{Input: clip, Ladder: l})
	if err != nil {
		b.Fatal(err)
	}
	job.Close()
	args := transcode.FFmpegArgs(clip, l, job.Rungs(), job.SourceFPS(), job.HasAudio(), false)
	ffmpeg := testutil.Tool(b, "ffmpeg")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
	b.ReportMetric(float64(120*b.N)/b.Elapsed().Seconds(), "fps")
}

// TestCascadeScalingQuality: Prism scales each rung from the next larger one.
// The frames must be indistinguishable from scaling each rung from the
// source (PSNR well above 45 dB) on a sharp synthetic pattern, the worst case.
func TestCascadeScalingQuality(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.mkv")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30:duration=1", "-c:v", "rawvideo", "-pix_fmt", "yuv420p", src)
	re := regexp.MustCompile(`PSNR y:([0-9.]+)`)
	for _, ca := range []struct{ name, cascade, direct string }{
		{"480p", "scale=1280:720:flags=bicubic,scale=854:480:flags=bicubic", "scale=854:480:flags=bicubic"},
		{"360p", "scale=1280:720:flags=bicubic,scale=854:480:flags=bicubic,scale=640:360:flags=bicubic", "scale=640:360:flags=bicubic"},
	} {
		out, err := exec.Command(testutil.Tool(t, "ffmpeg"), "-hide_banner", "-i", src, "-filter_complex",
			"[0:v]split[a][b];[a]"+ca.cascade+"[c];[b]"+ca.direct+"[d];[c][d]psnr", "-f", "null", "-").CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		m := re.FindSubmatch(out)
		if m == nil {
			t.Fatalf("no PSNR in output:\n%s", out)
		}
		psnr, _ := strconv.ParseFloat(string(m[1]), 64)
		testutil.Report(t, "%s: cascade vs direct luma PSNR %.1f dB", ca.name, psnr)
		if psnr < 45 {
			t.Errorf("%s: cascaded scaling differs visibly from direct scaling: PSNR %.1f dB", ca.name, psnr)
		}
	}
}
