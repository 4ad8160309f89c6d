package srt

import (
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/prism-streaming/prism/internal/testutil"
)

// probe returns the streams ffprobe finds in a TS file.
func probe(t *testing.T, path string) []map[string]any {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var res struct{ Streams []map[string]any }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res.Streams
}

// TestFFmpegPublish: FFmpeg publishes 3 s of live H.264 and AAC; the
// session gets one mpegts track carrying, in whole TS packets, what FFmpeg
// muxed (its -progress total_size; this FFmpeg has no tee muxer), ffprobe
// finds the streams in what arrived, and the session ends cleanly when
// FFmpeg exits.
func TestFFmpegPublish(t *testing.T) {
	leakCheck(t)
	needFFmpeg(t)
	s := startServer(t, newHandler(map[string]string{"cam": "secret"}), nil)
	dir := t.TempDir()
	progress := filepath.Join(dir, "progress.txt")
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() { // ends with FFmpeg (-t 3, killed at 60 s)
		out, err := runFFmpeg("-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine",
			"-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
			"-c:a", "aac", "-t", "3", "-progress", progress, "-f", "mpegts", s.url("publish:cam:secret", ""))
		done <- result{out, err}
	}()
	p := s.h.next(t, 15*time.Second)
	if p.req.Stream != "cam" || p.req.Key != "secret" || p.req.Protocol != "srt" || len(p.req.Query) != 0 || p.req.Remote == nil {
		t.Fatalf("request %+v", p.req)
	}
	testutil.Eventually(t, 10*time.Second, "Stats to show the publisher", func() bool {
		st := s.Stats()
		return len(st) == 1 && st[0].Stream == "cam" && st[0].Bytes > 0 && st[0].PacketsReceived > 0
	})
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("ffmpeg did not exit")
	}
	if res.err != nil {
		t.Fatalf("ffmpeg: %v\n%s", res.err, res.out)
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("session ended with %v, want nil", err)
	}
	p.check(t)
	testutil.Eventually(t, 5*time.Second, "Stats to drop the publisher", func() bool { return len(s.Stats()) == 0 })

	sent := muxedBytes(t, progress)
	p.mu.Lock()
	got, packets, maxSize := p.data, p.packets, p.maxSize
	p.mu.Unlock()
	t.Logf("FFmpeg muxed %d bytes; the session got %d bytes in %d packets (largest %d, ~%d SRT payloads)", sent, len(got), packets, maxSize, len(got)/1316)
	// The tail is short by what FFmpeg had not sent when it closed (live
	// SRT does not linger): FFmpeg's own SRT listener, run by hand, got
	// the same byte count as the session.
	if len(got) < sent*85/100 || len(got) > sent {
		t.Fatalf("received %d bytes, FFmpeg muxed %d", len(got), sent)
	}
	if got[0] != tsSync {
		t.Fatalf("first byte %#x", got[0])
	}
	if maxSize > coalesceBytes+2*1500 || packets >= len(got)/1316 {
		t.Fatalf("%d packets of at most %d bytes: not coalesced", packets, maxSize)
	}
	recv := filepath.Join(dir, "received.ts")
	if err := os.WriteFile(recv, got, 0o600); err != nil {
		t.Fatal(err)
	}
	var video, audio bool
	for _, st := range probe(t, recv) {
		switch st["codec_type"] {
		case "video":
			video = st["codec_name"] == "h264" && st["width"] == 640.0 && st["height"] == 360.0
		case "audio":
			audio = st["codec_name"] == "aac"
		}
	}
	if !video || !audio {
		t.Fatalf("ffprobe of the received TS: %v, want H.264 640x360 and AAC", probe(t, recv))
	}
}

// muxedBytes is the last total_size FFmpeg's -progress wrote.
func muxedBytes(t *testing.T, progress string) int {
	t.Helper()
	b, err := os.ReadFile(progress)
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_size="); ok {
			if n, err = strconv.Atoi(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n <= 0 {
		t.Fatalf("no total_size in %s", b)
	}
	return n
}

// TestFFmpegAccessControlStreamID: the SRT access-control streamid, as
// FFmpeg sends it URL-encoded.
func TestFFmpegAccessControlStreamID(t *testing.T) {
	leakCheck(t)
	needFFmpeg(t)
	s := startServer(t, newHandler(map[string]string{"cam2": "secret"}), nil)
	sid := url.QueryEscape("#!::r=cam2,m=publish,u=alice,s=secret")
	out, err := runFFmpeg("-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-c:v", "libx264", "-preset", "ultrafast",
		"-t", "1", "-f", "mpegts", s.url(sid, ""))
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	p := s.h.next(t, 5*time.Second)
	if p.req.Stream != "cam2" || p.req.Key != "secret" || p.req.Query.Get("u") != "alice" || len(p.req.Query) != 1 {
		t.Fatalf("request %+v", p.req)
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("session ended with %v", err)
	}
	p.check(t)
	if p.bytes() < 10*tsPacketSize {
		t.Fatalf("only %d bytes", p.bytes())
	}
}

// TestFFmpegPassphrase: a stream with a passphrase takes FFmpeg with it;
// a wrong one and none are refused with REJ_BADSECRET before the handler
// is asked; a caller that encrypts to a stream without one gets
// REJ_UNSECURE.
func TestFFmpegPassphrase(t *testing.T) {
	leakCheck(t)
	needFFmpeg(t)
	const pass = "0123456789abcdef"
	s := startServer(t, newHandler(map[string]string{"enc": "k", "plain": "k"}), func(s *Server) {
		s.Passphrase = func(stream string) string {
			if stream == "enc" {
				return pass
			}
			return ""
		}
	})
	publish := func(extra string) (string, error) {
		return runFFmpeg("-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-c:v", "libx264", "-preset", "ultrafast",
			"-t", "1", "-f", "mpegts", s.url("publish:enc:k", extra))
	}
	if out, err := publish("&passphrase=" + pass + "&pbkeylen=16"); err != nil {
		t.Fatalf("ffmpeg with the passphrase: %v\n%s", err, out)
	}
	p := s.h.next(t, 5*time.Second)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("session ended with %v", err)
	}
	p.check(t)
	if p.bytes() < 10*tsPacketSize {
		t.Fatalf("only %d bytes decrypted", p.bytes())
	}
	calls := s.h.callCount()
	for i, extra := range []string{"&passphrase=0123456789abcdeX&pbkeylen=16", ""} {
		if out, err := publish(extra); err == nil {
			t.Fatalf("ffmpeg %q was let in:\n%s", extra, out)
		}
		testutil.Eventually(t, 5*time.Second, "REJ_BADSECRET in the log", func() bool {
			return strings.Count(s.logs.String(), "reject=REJ_BADSECRET") == i+1
		})
	}
	if n := s.h.callCount(); n != calls {
		t.Fatalf("the handler was asked %d times for callers without the passphrase", n-calls)
	}
	if strings.Contains(s.logs.String(), "0123456789abcde") {
		t.Fatal("a passphrase is in the log")
	}
	if _, err := dial(s, "publish:plain:k", pass); rejectOf(err) != gosrt.REJ_UNSECURE {
		t.Fatalf("encrypting to a stream without a passphrase: %v, want REJ_UNSECURE", err)
	}
}

// TestRefusals: each refusal reaches the caller as its reject code (read
// from gosrt's dialer), credential refusals wait RefusalDelay, and the
// server keeps admitting afterwards.
func TestRefusals(t *testing.T) {
	leakCheck(t)
	var delayed atomic.Int32
	h := newHandler(map[string]string{"cam": "secret", "boom": "k"})
	h.panicOn = "boom"
	s := startServer(t, h, func(s *Server) {
		s.MaxStreamIDLen = 128
		s.RefusalDelay = func() time.Duration { delayed.Add(1); return 0 }
		s.Passphrase = func(stream string) string {
			if stream == "enc" {
				return "0123456789abcdef"
			}
			return ""
		}
	})
	live, err := dial(s, "publish:cam:secret", "")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	first := h.next(t, 5*time.Second)

	for _, ca := range []struct {
		name, streamid, passphrase string
		want                       gosrt.RejectionReason
		handler, delay             bool // asks the handler; waits RefusalDelay
	}{
		{"wrong key", "publish:cam:nope", "", gosrt.REJX_UNAUTHORIZED, true, true},
		{"no key", "publish:cam", "", gosrt.REJX_UNAUTHORIZED, true, true},
		{"unknown stream", "publish:nocam:x", "", gosrt.REJX_NOTFOUND, true, true},
		{"second publisher", "publish:cam:secret", "", gosrt.REJX_CONFLICT, true, true},
		{"access-control second publisher", "#!::r=cam,m=publish,s=secret", "", gosrt.REJX_CONFLICT, true, true},
		{"invalid name", "publish:bad.name:x", "", gosrt.REJX_NOTFOUND, false, false},
		{"mode play", "play:cam:secret", "", gosrt.REJX_BAD_MODE, false, false},
		{"access-control default mode", "#!::r=cam,s=secret", "", gosrt.REJX_BAD_MODE, false, false},
		{"no streamid", "", "", gosrt.REJX_BAD_REQUEST, false, false},
		{"no mode", "cam", "", gosrt.REJX_BAD_REQUEST, false, false},
		{"too long", "publish:cam:" + strings.Repeat("k", 200), "", gosrt.REJX_BAD_REQUEST, false, false},
		{"no passphrase", "publish:enc:k", "", gosrt.REJ_BADSECRET, false, true},
		{"wrong passphrase", "publish:enc:k", "0123456789abcdeX", gosrt.REJ_BADSECRET, false, true},
		{"unexpected passphrase", "publish:cam:secret", "0123456789abcdef", gosrt.REJ_UNSECURE, false, true},
		{"handler panics", "publish:boom:k", "", gosrt.REJ_PEER, true, false},
	} {
		t.Run(ca.name, func(t *testing.T) {
			calls, delays := h.callCount(), delayed.Load()
			c, err := dial(s, ca.streamid, ca.passphrase)
			if err == nil {
				c.Close()
				t.Fatal("admitted")
			}
			if got := rejectOf(err); got != ca.want {
				t.Fatalf("%v: reject %s, want %s", err, rejectName(got), rejectName(ca.want))
			}
			if asked := h.callCount() != calls; asked != ca.handler {
				t.Fatalf("handler asked: %v, want %v", asked, ca.handler)
			}
			if waited := delayed.Load() != delays; waited != ca.delay {
				t.Fatalf("refusal delayed: %v, want %v", waited, ca.delay)
			}
		})
	}
	s.logged(t, "streamid=publish:<stream>")
	s.logged(t, "recovered a panic")
	if strings.Contains(s.logs.String(), "secret") {
		t.Fatalf("a key is in the log:\n%s", s.logs.String())
	}

	// The stream is free again once its publisher leaves.
	live.Close()
	if err := first.wait(t, 5*time.Second); err != nil {
		t.Fatalf("first session ended with %v", err)
	}
	publishGoSRT(t, s, "cam", "secret", tsClip(t))
}

// TestPendingBound: handshakes beyond MaxPending, while the handler is
// slow to decide, are refused as overloaded at once.
func TestPendingBound(t *testing.T) {
	leakCheck(t)
	h := newHandler(map[string]string{"slow": "k"})
	h.gate = make(chan struct{})
	s := startServer(t, h, func(s *Server) { s.MaxPending = 2 })
	errs := make(chan error, 2)
	for range 2 {
		go func() { // returns when the handler decides (after the gate opens)
			_, err := dial(s, "publish:slow:wrong", "")
			errs <- err
		}()
	}
	testutil.Eventually(t, 5*time.Second, "two handshakes pending", func() bool { return h.callCount() == 0 && len(s.pending) == 2 })
	if _, err := dial(s, "publish:slow:wrong", ""); rejectOf(err) != gosrt.REJX_OVERLOAD {
		t.Fatalf("third handshake: %v, want REJX_OVERLOAD", err)
	}
	close(h.gate)
	for range 2 {
		if err := <-errs; rejectOf(err) != gosrt.REJX_UNAUTHORIZED {
			t.Fatalf("pending handshake: %v, want REJX_UNAUTHORIZED", err)
		}
	}
}

// TestRefusalDelay: the default-style delay holds a wrong key's answer back.
func TestRefusalDelay(t *testing.T) {
	leakCheck(t)
	const d = 300 * time.Millisecond
	s := startServer(t, newHandler(map[string]string{"cam": "secret"}), func(s *Server) {
		s.RefusalDelay = func() time.Duration { return d }
	})
	start := time.Now()
	_, err := dial(s, "publish:cam:nope", "")
	if rejectOf(err) != gosrt.REJX_UNAUTHORIZED {
		t.Fatalf("%v, want REJX_UNAUTHORIZED", err)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("refused after %s, before the %s delay", el, d)
	}
}

// TestSessionEnds: the node closing the session disconnects the caller; a
// caller that sends nothing ends with ErrIdle; Close ends the sessions with
// ErrServerClosed.
func TestSessionEnds(t *testing.T) {
	leakCheck(t)
	h := newHandler(map[string]string{"cam": "secret", "idle": "k", "last": "k"})
	s := startServer(t, h, func(s *Server) { s.ReadTimeout = 500 * time.Millisecond })

	c, err := dial(s, "publish:cam:secret", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := h.next(t, 5*time.Second)
	readErr := make(chan error, 1)
	go func() { // returns when the connection ends
		_, err := c.Read(make([]byte, 1500))
		readErr <- err
	}()
	if err := p.sess.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("read data from the server")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the caller was not disconnected")
	}
	if err := p.wait(t, 5*time.Second); err != nil {
		t.Fatalf("kicked session ended with %v, want nil", err)
	}

	idle, err := dial(s, "publish:idle:k", "")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := h.next(t, 5*time.Second).wait(t, 5*time.Second); !errors.Is(err, ErrIdle) {
		t.Fatalf("idle session ended with %v, want ErrIdle", err)
	}

	last, err := dial(s, "publish:last:k", "")
	if err != nil {
		t.Fatal(err)
	}
	defer last.Close()
	p = h.next(t, 5*time.Second)
	s.Close()
	if err := p.wait(t, 5*time.Second); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("session ended with %v, want ErrServerClosed", err)
	}
}

// TestInitialize: a server needs a handler and a free address.
func TestInitialize(t *testing.T) {
	leakCheck(t)
	if err := (&Server{Address: "127.0.0.1:0"}).Initialize(); err == nil {
		t.Fatal("no handler accepted")
	}
	s := startServer(t, newHandler(nil), nil)
	if err := (&Server{Address: s.Addr().String(), Handler: newHandler(nil)}).Initialize(); err == nil {
		t.Fatal("a taken port accepted")
	}
}
