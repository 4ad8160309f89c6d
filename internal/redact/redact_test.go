package redact

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtmp://user:hunter2@cam.example/live/x":                "rtmp://user:REDACTED@cam.example/live/x",
		"srt://10.0.0.1:9000?passphrase=abcdefghij&latency=200": "srt://10.0.0.1:9000?latency=200&passphrase=REDACTED",
		"https://cdn.example/hls/x.m3u8?token=abc&sig=def":      "https://cdn.example/hls/x.m3u8?sig=REDACTED&token=REDACTED",
		"https://sfu.example/whip?api_key=k":                    "https://sfu.example/whip?api_key=REDACTED",
		"rtsp://user@cam.example/stream1":                       "rtsp://user@cam.example/stream1",
		"lavfi:testsrc2":                                        "lavfi:testsrc2",
		"/srv/media/x.mp4":                                      "/srv/media/x.mp4",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	in := `cannot open input: rtmp://u:s3cr3t@cam.example/live/x: Connection refused (Cannot open connection tcp://cam.example:1935?tcp_nodelay=0); also srt://h:1?passphrase=p4ssphr4se`
	got := Text(in)
	for _, secret := range []string{"s3cr3t", "p4ssphr4se"} {
		if strings.Contains(got, secret) {
			t.Errorf("%q still holds %q", got, secret)
		}
	}
	if !strings.Contains(got, "Connection refused") || !strings.Contains(got, "tcp://cam.example:1935?tcp_nodelay=0") {
		t.Errorf("lost the message: %q", got)
	}
}

func TestHandlerMasksLogs(t *testing.T) {
	var buf strings.Builder
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil))).With("input", "rtmp://u:pw1@h/live")
	log.Warn("cannot open srt://h:1?passphrase=pw2", "error", errors.New("dial rtsp://a:pw3@h/x: refused"),
		slog.Group("g", "url", "https://h/x?token=pw4"), "n", 3)
	out := buf.String()
	for _, secret := range []string{"pw1", "pw2", "pw3", "pw4"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line holds %s: %s", secret, out)
		}
	}
	if !strings.Contains(out, "n=3") || !strings.Contains(out, "refused") {
		t.Errorf("lost content: %s", out)
	}
}
