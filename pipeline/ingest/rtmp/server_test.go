package rtmp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// TestPublishH264AAC is OBS's case: live H.264 + AAC, key in the query.
func TestPublishH264AAC(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	testutil.NeedsFFmpeg(t)
	h := newRecorder(t)
	s := startServer(t, h, nil)

	start := time.Now()
	out, err := runFFmpeg(t, "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
		"-c:a", "aac", "-t", "3", "-f", "flv", rtmpURL(s, "/live/cam?key=secret&region=eu"))
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	if _, n := h.counts(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	p := h.session(0)
	req := p.sess.Request
	if req.Protocol != ingest.RTMP || req.Stream != "cam" || req.Key != "secret" || req.Query.Encode() != "region=eu" {
		t.Fatalf("request %+v", req)
	}
	if a, ok := req.Remote.(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		t.Fatalf("remote %v", req.Remote)
	}
	pkts := p.wait(t)
	if err := p.sess.Err(); err != nil {
		t.Fatalf("session ended with %v, want nil (ffmpeg unpublishes)", err)
	}

	tracks := p.sess.Tracks()
	if len(tracks) != 2 {
		t.Fatalf("tracks %+v", tracks)
	}
	v, a := tracks[0], tracks[1]
	if v.Kind != pipeline.KindVideo || v.Codec != pipeline.CodecH264 || v.ClockRate != 90000 || v.Width != 640 || v.Height != 360 {
		t.Fatalf("video track %+v", v)
	}
	if !contains(nalTypes(t, v.Extradata, false), 7, 8) {
		t.Fatalf("video extradata is not Annex-B SPS+PPS: % x", v.Extradata)
	}
	if a.Kind != pipeline.KindAudio || a.Codec != pipeline.CodecAAC || a.ClockRate != 48000 || a.SampleRate != 48000 || a.Channels != 1 || len(a.Extradata) < 2 {
		t.Fatalf("audio track %+v", a)
	}

	var video, audio []*pipeline.Packet
	for _, pk := range pkts {
		if pk.Track == 0 {
			video = append(video, pk)
		} else {
			audio = append(audio, pk)
		}
	}
	if len(video) < 60 {
		t.Fatalf("%d video packets, want >= 60", len(video))
	}
	if len(audio) < 100 {
		t.Fatalf("%d audio packets, want >= 100 (3 s of 1024-sample frames)", len(audio))
	}
	first := nalTypes(t, video[0].Data, false)
	if !video[0].Keyframe || !contains(first, 7, 8, 5) {
		t.Fatalf("first video packet: keyframe %v, NALUs %v; want a keyframe with SPS, PPS, IDR", video[0].Keyframe, first)
	}
	checkMonotonic(t, pkts)
	var keys []int
	for i, pk := range video {
		types := nalTypes(t, pk.Data, false)
		if pk.Keyframe != contains(types, 5) {
			t.Fatalf("video packet %d: keyframe %v with NALUs %v", i, pk.Keyframe, types)
		}
		if pk.Keyframe {
			if !contains(types, 7, 8) {
				t.Fatalf("keyframe %d lacks SPS/PPS: %v", i, types)
			}
			keys = append(keys, i)
		}
	}
	for i := 1; i < len(keys); i++ {
		if d := keys[i] - keys[i-1]; d != 30 {
			t.Fatalf("keyframes at %v: want every 30 frames", keys)
		}
	}
	span := float64(video[len(video)-1].DTS-video[0].DTS) / 90000
	if span < 2.8 || span > 3.1 {
		t.Fatalf("video spans %.2f s, want about 3", span)
	}
	if d := audio[1].Duration; d != 1024 {
		t.Fatalf("AAC packet duration %d, want 1024", d)
	}
	testutil.Report(t, "H.264+AAC live push: %d video (%d keyframes), %d audio packets, %.2f s of video, publish took %s",
		len(video), len(keys), len(audio), span, time.Since(start).Round(10*time.Millisecond))
}

// TestPublishHEVC is Enhanced RTMP: FFmpeg 7.1's flv muxer writes hvc1.
func TestPublishHEVC(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	testutil.NeedsFFmpeg(t)
	if !hasEncoder(t, "libx265") {
		t.Skip("this FFmpeg has no libx265")
	}
	h := newRecorder(t)
	s := startServer(t, h, nil)
	out, err := runFFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30:min-keyint=30:scenecut=0",
		"-t", "3", "-f", "flv", rtmpURL(s, "/live/hevc?key=secret"))
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	p := h.session(0)
	pkts := p.wait(t)
	if err := p.sess.Err(); err != nil {
		t.Fatalf("session ended with %v", err)
	}
	tracks := p.sess.Tracks()
	if len(tracks) != 1 || tracks[0].Codec != pipeline.CodecH265 || tracks[0].Width != 320 || tracks[0].Height != 240 {
		t.Fatalf("tracks %+v", tracks)
	}
	if !contains(nalTypes(t, tracks[0].Extradata, true), 32, 33, 34) {
		t.Fatalf("extradata is not VPS+SPS+PPS")
	}
	if len(pkts) < 60 || !pkts[0].Keyframe {
		t.Fatalf("%d packets, first keyframe %v", len(pkts), len(pkts) > 0 && pkts[0].Keyframe)
	}
	checkMonotonic(t, pkts)
	keys := 0
	for i, pk := range pkts {
		types := nalTypes(t, pk.Data, true)
		if pk.Keyframe {
			keys++
			if !contains(types, 32, 33, 34) {
				t.Fatalf("keyframe %d lacks VPS/SPS/PPS: %v", i, types)
			}
		}
	}
	if keys < 2 {
		t.Fatalf("%d keyframes in %d packets", keys, len(pkts))
	}
	testutil.Report(t, "H.265 E-RTMP push: %d packets, %d keyframes, %dx%d", len(pkts), keys, tracks[0].Width, tracks[0].Height)
}

// TestRefusals: nothing is read past a refused publish, and the reason
// reaches the publisher.
func TestRefusals(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	testutil.NeedsFFmpeg(t)
	h := newRecorder(t)
	h.refuse = func(req ingest.Request) error {
		if req.Stream == "busy" {
			return fmt.Errorf("%w: %s", ingest.ErrConflict, req.Stream)
		}
		return nil
	}
	const delay = 300 * time.Millisecond
	s := startServer(t, h, func(s *Server) { s.RefusalDelay = func() time.Duration { return delay } })

	for _, tc := range []struct {
		name, path string
		handler    bool   // the handler is asked
		says       string // in FFmpeg's output
	}{
		{"wrong key", "/live/cam?key=wrong", true, "authentication failed"},
		{"no key", "/live/cam", true, "authentication failed"},
		{"two keys", "/live/cam?key=secret&token=x", false, "authentication failed"},
		{"other app", "/app/cam?key=secret", false, ingest.ErrNotFound.Error()},
		{"bad stream name", "/live/bad.name?key=secret", false, ingest.ErrNotFound.Error()},
		{"nested path", "/live/a/b?key=secret", false, ingest.ErrNotFound.Error()},
		{"conflict", "/live/busy?key=secret", true, ingest.ErrConflict.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := h.counts()
			start := time.Now()
			out, err := pushClip(t, s, tc.path)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("ffmpeg succeeded:\n%s", out)
			}
			if !strings.Contains(out, tc.says) {
				t.Fatalf("ffmpeg's output lacks %q:\n%s", tc.says, out)
			}
			if after, _ := h.counts(); (after == before+1) != tc.handler {
				t.Fatalf("handler asked %d times, want %v", after-before, tc.handler)
			}
			if tc.handler && h.lastRequest().Key == "secret" && tc.name != "conflict" {
				t.Fatalf("handler saw key %q", h.lastRequest().Key)
			}
			if took < delay {
				t.Fatalf("refused after %s, before the refusal delay %s", took, delay)
			}
		})
	}
	t.Run("play", func(t *testing.T) {
		out, err := runFFmpeg(t, "-i", rtmpURL(s, "/live/cam?key=secret"), "-t", "1", "-f", "null", "-")
		if err == nil || !strings.Contains(out, "play is not served") {
			t.Fatalf("play: %v\n%s", err, out)
		}
	})
	if _, n := h.counts(); n != 0 {
		t.Fatalf("%d sessions admitted", n)
	}
	if s.connections() != 0 {
		testutil.Eventually(t, 2*time.Second, "refused connections to close", func() bool { return s.connections() == 0 })
	}
}

// TestKick: Session.Close disconnects the publisher.
func TestKick(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	testutil.NeedsFFmpeg(t)
	h := newRecorder(t)
	s := startServer(t, h, nil)
	done := make(chan error, 1)
	go func() {
		_, err := runFFmpeg(t, "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-c:v", "libx264",
			"-preset", "ultrafast", "-g", "30", "-t", "20", "-f", "flv", rtmpURL(s, "/live/kick?key=secret"))
		done <- err
	}()
	testutil.Eventually(t, 15*time.Second, "a session with tracks", func() bool {
		_, n := h.counts()
		return n == 1 && h.session(0).sess.Tracks() != nil
	})
	p := h.session(0)
	kicked := time.Now()
	p.sess.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ffmpeg exited cleanly after the kick")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ffmpeg kept publishing after the kick")
	}
	p.wait(t)
	if err := p.sess.Err(); err != nil {
		t.Fatalf("kicked session ended with %v, want nil", err)
	}
	testutil.Eventually(t, 2*time.Second, "the connection to close", func() bool { return s.connections() == 0 })
	testutil.Report(t, "kick: publisher gone %s after Session.Close", time.Since(kicked).Round(time.Millisecond))
}

// TestRTMPS publishes over TLS.
func TestRTMPS(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	testutil.NeedsFFmpeg(t)
	h := newRecorder(t)
	s := startServer(t, h, func(s *Server) { s.TLSConfig = selfSigned(t) })
	out, err := pushClip(t, s, "/live/tls?key=secret")
	if err != nil {
		t.Fatalf("ffmpeg over rtmps: %v\n%s", err, out)
	}
	p := h.session(0)
	if n := len(p.wait(t)); n < 100 || p.sess.Err() != nil {
		t.Fatalf("%d packets, err %v", n, p.sess.Err())
	}
	// A plain RTMP client on the TLS port is dropped.
	c := dial(t, s)
	_, _ = c.Write(append([]byte{3}, make([]byte, 1536)...))
	closedWithin(t, c, 5*time.Second)
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, stream, key, query string
		err                    error
	}{
		{"rtmp://h/live/cam?key=k", "cam", "k", "", nil},
		{"rtmp://h:1935/live/cam?token=t&x=1", "cam", "t", "x=1", nil},
		{"rtmp://h/live//cam?key=k", "cam", "k", "", nil}, // OBS server URL with a trailing slash
		{"rtmp://h/live/cam", "cam", "", "", nil},
		{"rtmp://h/live/cam?key=a&key=b", "", "", "", ingest.ErrUnauthorized},
		{"rtmp://h/live", "", "", "", ingest.ErrNotFound},
		{"rtmp://h/app/cam", "", "", "", ingest.ErrNotFound},
		{"rtmp://h/live/c%2Fm", "", "", "", ingest.ErrNotFound},
		{"rtmp://h/live/" + strings.Repeat("a", 65), "", "", "", ingest.ErrNotFound},
		{"rtmp://h/live/cam?key=%zz", "", "", "", ingest.ErrNotFound},
	} {
		stream, key, q, err := ParseURL(mustURL(t, tc.in))
		if !errors.Is(err, tc.err) || (tc.err == nil && (stream != tc.stream || key != tc.key || q.Encode() != tc.query)) {
			t.Errorf("ParseURL(%q) = %q, %q, %q, %v", tc.in, stream, key, q.Encode(), err)
		}
		if err != nil && strings.Contains(err.Error(), "zz") {
			t.Errorf("ParseURL(%q): the error quotes the query: %v", tc.in, err)
		}
	}
	if _, _, _, err := ParseURL(nil); !errors.Is(err, ingest.ErrNotFound) {
		t.Errorf("ParseURL(nil) = %v", err)
	}
}

func TestClock(t *testing.T) {
	c := clock{rate: 90000}
	ms := time.Millisecond
	p, d := c.convert(1000*ms, 960*ms)
	if p != 90000 || d != 86400 {
		t.Fatalf("convert = %d, %d", p, d)
	}
	// A step back is held at the last DTS; PTS never goes below DTS.
	if p, d = c.convert(900*ms, 900*ms); d != 86400 || p != 86400 {
		t.Fatalf("step back: %d, %d", p, d)
	}
	// The 32-bit millisecond counter wraps: timestamps go on.
	c = clock{rate: 48000}
	_, d1 := c.convert(wrap-20*ms, wrap-20*ms)
	_, d2 := c.convert(5*ms, 5*ms)
	if d2-d1 != 25*48 {
		t.Fatalf("across the wrap: %d then %d", d1, d2)
	}
	if got := ticks(49*24*time.Hour, 90000); got != 49*24*3600*90000 {
		t.Fatalf("ticks overflowed: %d", got)
	}
}

func TestAccessUnit(t *testing.T) {
	w := &videoWriter{}
	w.setParam([]byte{0x67, 1})
	w.setParam([]byte{0x68, 2})
	// A keyframe without parameter sets gets the current ones after its AUD.
	out, key, ok := w.accessUnit([][]byte{{0x09, 0xf0}, {0x65, 3}})
	if !ok || !key || len(out) != 4 || out[0][0] != 0x09 || out[1][0] != 0x67 || out[2][0] != 0x68 || out[3][0] != 0x65 {
		t.Fatalf("keyframe: %x %v %v", out, key, ok)
	}
	// New parameter sets in an AU replace the stored ones, once.
	out, _, _ = w.accessUnit([][]byte{{0x67, 9}, {0x68, 9}, {0x65, 3}})
	if len(out) != 3 || !bytes.Equal(out[0], []byte{0x67, 9}) || !bytes.Equal(w.sps, []byte{0x67, 9}) {
		t.Fatalf("new SPS: %x", out)
	}
	if out, key, ok = w.accessUnit([][]byte{{0x41, 1}, {}}); !ok || key || len(out) != 1 {
		t.Fatalf("non-key: %x %v %v", out, key, ok)
	}
	if _, _, ok = w.accessUnit([][]byte{{0x67, 7}, {0x68, 8}}); ok {
		t.Fatal("a configuration-only AU was written")
	}
}
