package benchmarks

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestIngestLatency is the push-ingest benchmark (`make bench-ingest`; it
// is skipped unless PRISM_BENCH_INGEST=1): the FFmpeg CLI pushes 720p30
// H.264 + AAC over RTMP to `prism serve` (bin/prism) running the default
// ladder, a pion WHEP viewer and ffprobe-free LL-HLS load watch it, and the
// figures are read from the node's /metrics after 30 s:
//
//   - publisher AU in → LL-HLS part downloadable (prism_hls_part_latency_seconds)
//   - publisher AU in → the frame's last RTP packet handed to the WebRTC
//     viewer's track (prism_webrtc_send_latency_seconds); loopback adds
//     well under a millisecond to reach the viewer.
//
// "Publisher AU in" is when the RTMP listener had the whole access unit:
// the publisher's encoder and its network are not in these figures.
func TestIngestLatency(t *testing.T) {
	if os.Getenv("PRISM_BENCH_INGEST") == "" {
		t.Skip("set PRISM_BENCH_INGEST=1 (make bench-ingest) to run the ingest latency benchmark")
	}
	bin, err := filepath.Abs("../bin/prism")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: build it first (make build)", bin)
	}
	free := func(network string) string {
		if network == "udp" {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			return c.LocalAddr().String()
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	httpAddr, rtmpAddr := free("tcp"), free("tcp")
	dir := t.TempDir()
	serve := exec.Command(bin, "serve", "--http", httpAddr, "--rtmp", rtmpAddr, "--srt", "off", "--data-dir", dir,
		"--webrtc-port", "0", "--stats-interval", "0")
	serve.Stderr = io.Discard
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = serve.Process.Signal(syscall.SIGTERM); _ = serve.Wait() }()
	base := "http://" + httpAddr
	waitFor(t, 30*time.Second, "prism serve", func() bool { return get(base+"/healthz") != "" })

	push := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "60", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-b:v", "3M",
		"-c:a", "aac", "-b:a", "128k", "-f", "flv", "rtmp://"+rtmpAddr+"/live/bench")
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = push.Process.Kill(); _ = push.Wait() }()
	waitFor(t, 30*time.Second, "the pushed stream on LL-HLS", func() bool {
		return strings.Contains(get(base+"/hls/bench/index.m3u8"), "#EXTM3U")
	})
	viewer := testutil.StartWHEPViewer(t, base+"/whep/bench")
	// An LL-HLS client's blocking reloads, as a player would make them.
	stopHLS := make(chan struct{})
	defer close(stopHLS)
	go func() { // owned here: stops when the test returns
		for {
			select {
			case <-stopHLS:
				return
			default:
			}
			_ = get(base + "/hls/bench/index.m3u8")
			time.Sleep(200 * time.Millisecond)
		}
	}()
	time.Sleep(30 * time.Second) // the measurement window: a benchmark, not a timed assertion
	metrics := get(base + "/metrics")
	var lines []string
	for _, name := range []string{"prism_hls_part_latency_seconds", "prism_webrtc_send_latency_seconds", `prism_stage_latency_seconds{quantile="0.95",stage="encode-720p"`} {
		sc := bufio.NewScanner(strings.NewReader(metrics))
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), name) && strings.Contains(sc.Text(), `stream="bench"`) {
				lines = append(lines, sc.Text())
			}
		}
	}
	if len(lines) < 4 {
		t.Fatalf("latency metrics missing:\n%s", strings.Join(lines, "\n"))
	}
	report := fmt.Sprintf("push ingest latency, RTMP 720p30 H.264+AAC (FFmpeg CLI, -re) through the default ladder on this machine (%d CPUs), 30 s window, 1 WHEP viewer (%d video packets):\n  %s\n",
		cpus(), viewer.Video.Load(), strings.Join(lines, "\n  "))
	t.Log(report)
	fmt.Print(report)
}

func cpus() int {
	n := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n = strings.Count(string(b), "processor\t:")
	}
	return n
}

func get(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	return string(b)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
