// Package testutil holds helpers shared by Prism's tests: polling waits
// (never bare sleeps), goroutine leak checks, and media made with the FFmpeg
// CLI from lavfi sources so no media file is committed.
package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Eventually polls cond every 20 ms until it is true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckGoroutines records the goroutine count and returns a function that
// fails the test if, within a few seconds, the count has not come back.
func CheckGoroutines(t testing.TB) func() {
	t.Helper()
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutines leaked: %d at start, %d now\n%s", base, runtime.NumGoroutine(), buf[:n])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Tool returns the path of an FFmpeg CLI tool, failing the test if it is
// missing: `make test` puts the cached FFmpeg build on PATH.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH (run the tests through `make test`, which sets it up): %v", name, err)
	}
	return p
}

// FFmpeg runs the FFmpeg CLI with args and fails the test on error.
func FFmpeg(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command(Tool(t, "ffmpeg"), append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestClip writes a clip of a testsrc2 pattern with a sine tone, H.264 and
// AAC in MP4, and returns its path.
func TestClip(t testing.TB, dir string, width, height, fps int, seconds float64) string {
	t.Helper()
	path := filepath.Join(dir, "clip_"+strconv.Itoa(width)+"x"+strconv.Itoa(height)+".mp4")
	d := strconv.FormatFloat(seconds, 'f', -1, 64)
	FFmpeg(t,
		"-f", "lavfi", "-i", "testsrc2=size="+strconv.Itoa(width)+"x"+strconv.Itoa(height)+":rate="+strconv.Itoa(fps)+":duration="+d,
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration="+d,
		"-c:v", "libx264", "-preset", "ultrafast", "-g", strconv.Itoa(2*fps), "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "96k", "-shortest", path)
	return path
}

// Probe is the part of ffprobe's JSON output the tests read.
type Probe struct {
	Streams []struct {
		Index      int    `json:"index"`
		CodecName  string `json:"codec_name"`
		CodecType  string `json:"codec_type"`
		Profile    string `json:"profile"`
		Width      int    `json:"width"`
		Height     int    `json:"height"`
		HasBFrames int    `json:"has_b_frames"`
		StartTime  string `json:"start_time"`
		Duration   string `json:"duration"`
		RFrameRate string `json:"r_frame_rate"`
		BitRate    string `json:"bit_rate"`
		SampleRate string `json:"sample_rate"`
		Channels   int    `json:"channels"`
	} `json:"streams"`
	Packets []struct {
		StreamIndex int    `json:"stream_index"`
		PTSTime     string `json:"pts_time"`
		DTSTime     string `json:"dts_time"`
		Size        string `json:"size"`
		Flags       string `json:"flags"`
	} `json:"packets"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

// FFprobe runs ffprobe on path, with packets when packets is true.
func FFprobe(t testing.TB, path string, packets bool) *Probe {
	t.Helper()
	args := []string{"-v", "error", "-of", "json", "-show_streams", "-show_format"}
	if packets {
		args = append(args, "-show_packets")
	}
	cmd := exec.Command(Tool(t, "ffprobe"), append(args, path)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, stderr.String())
	}
	var p Probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	return &p
}

// F parses an ffprobe number ("6.000000"), or fails the test.
func F(t testing.TB, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return v
}

// RSS returns this process's resident set size in bytes, after returning
// the Go heap's free memory to the OS so that C allocations dominate.
func RSS(t testing.TB) int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// Report logs a measured figure and, when PRISM_REPORT_DIR is set (`make
// test` sets it), appends it to report.txt there, so that a test run ends
// with the figures it measured, not only "ok".
func Report(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	dir := os.Getenv("PRISM_REPORT_DIR")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("report: %v", err)
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "report.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Logf("report: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s: %s\n", t.Name(), msg)
}
