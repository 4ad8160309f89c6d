package transcode

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

const tinyLadder = `name: t
rungs:
  - {name: a, height: 180, bitrate: 200k, preset: ultrafast}
`

// countFrames runs job to its end and counts video packets.
func countFrames(t *testing.T, job *Transcoder) int {
	t.Helper()
	r := job.Subscribe(pipeline.Lossless(), pipeline.WithTracks(0))
	n := 0
	for {
		if _, err := r.Read(context.Background()); err != nil {
			break
		}
		n++
	}
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHLSInput pulls an HLS playlist over HTTP, as from a CDN or encoder.
func TestHLSInput(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	dir := t.TempDir()
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=3",
		"-f", "lavfi", "-i", "sine=sample_rate=48000:duration=3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
		"-c:a", "aac", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", filepath.Join(dir, "index.m3u8"))
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	job, err := Start(context.Background(), Options{Input: srv.URL + "/index.m3u8", Ladder: mustLadder(t, tinyLadder)})
	if err != nil {
		t.Fatal(err)
	}
	if n := countFrames(t, job); n < 88 || n > 90 {
		t.Errorf("%d frames from 3 s at 30 fps", n)
	}
	srv.CloseClientConnections()
}

func freeLocalPort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestLiveNetworkInputs pulls SRT and RTMP from an FFmpeg CLI publisher that
// listens, sending 3 s in real time.
func TestLiveNetworkInputs(t *testing.T) {
	for _, ca := range []struct {
		name, network, format, listen, pull string
	}{
		{"srt", "udp", "mpegts", "srt://127.0.0.1:%d?mode=listener", "srt://127.0.0.1:%d"},
		{"rtmp", "tcp", "flv", "rtmp://127.0.0.1:%d/live/x", "rtmp://127.0.0.1:%d/live/x"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			defer testutil.CheckGoroutines(t)()
			port := freeLocalPort(t, ca.network)
			url := func(f string) string { return sprintf(f, port) }
			args := []string{"-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=3",
				"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-f", ca.format}
			if ca.name == "rtmp" {
				args = append(args, "-listen", "1")
			}
			pub := exec.Command(testutil.Tool(t, "ffmpeg"), append(args, url(ca.listen))...)
			if err := pub.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = pub.Process.Kill(); _ = pub.Wait() }()
			var job *Transcoder
			testutil.Eventually(t, 5*time.Second, "connecting to the publisher", func() bool {
				var err error
				job, err = Start(context.Background(), Options{Input: url(ca.pull), Ladder: mustLadder(t, tinyLadder)})
				return err == nil
			})
			// Live input: frames arrive at the source pace; allow for the
			// first frames sent before the connection was up.
			if n := countFrames(t, job); n < 45 {
				t.Errorf("%d frames over %s", n, ca.name)
			}
		})
	}
}

func sprintf(f string, port int) string {
	out := ""
	for i := 0; i < len(f); i++ {
		if f[i] == '%' && i+1 < len(f) && f[i+1] == 'd' {
			out += strconv.Itoa(port)
			i++
			continue
		}
		out += string(f[i])
	}
	return out
}
