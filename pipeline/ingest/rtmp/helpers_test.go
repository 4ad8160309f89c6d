package rtmp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

var tmpDir string

func TestMain(m *testing.M) {
	if os.Getenv("PRISM_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	d, err := os.MkdirTemp("", "prism-rtmp-test")
	if err != nil {
		panic(err)
	}
	tmpDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// published is one admitted session and every packet it carried.
type published struct {
	sess *ingest.Session
	mu   sync.Mutex
	pkts []*pipeline.Packet
	evs  []pipeline.EventRequest // events inside the stream (Session.OnEvent)
	done chan struct{}           // the collector saw the end
}

func (p *published) events() []pipeline.EventRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pipeline.EventRequest(nil), p.evs...)
}

func (p *published) packets() []*pipeline.Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*pipeline.Packet(nil), p.pkts...)
}

// wait waits for the session's end and returns its packets.
func (p *published) wait(t *testing.T) []*pipeline.Packet {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the session did not end")
	}
	return p.packets()
}

// recorder is a test Handler: it admits the stream key "secret" (or, with
// refuse set, what refuse allows) and records every request and session.
type recorder struct {
	key    string
	refuse func(req ingest.Request) error // extra refusals; nil: none

	mu       sync.Mutex
	requests []ingest.Request
	sessions []*published
	wg       sync.WaitGroup
}

func newRecorder(t *testing.T) *recorder {
	h := &recorder{key: "secret"}
	t.Cleanup(h.wg.Wait) // every collector ends: every session was ended
	return h
}

func (h *recorder) Publish(_ context.Context, req ingest.Request) (*ingest.Session, error) {
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	if req.Stream == "panic" {
		panic("handler panic on purpose")
	}
	if h.refuse != nil {
		if err := h.refuse(req); err != nil {
			return nil, err
		}
	}
	if req.Key != h.key {
		return nil, fmt.Errorf("%w: wrong key for %s", ingest.ErrUnauthorized, req.Stream)
	}
	sess := ingest.NewSession(req)
	p := &published{sess: sess, done: make(chan struct{})}
	sess.OnEvent(func(ev pipeline.EventRequest) {
		p.mu.Lock()
		p.evs = append(p.evs, ev)
		p.mu.Unlock()
	})
	rd := sess.Subscribe(pipeline.Lossless(), pipeline.WithBufferSize(1<<14))
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(p.done)
		for {
			pkt, err := rd.Read(context.Background())
			if err != nil {
				return
			}
			p.mu.Lock()
			p.pkts = append(p.pkts, pkt)
			p.mu.Unlock()
		}
	}()
	h.mu.Lock()
	h.sessions = append(h.sessions, p)
	h.mu.Unlock()
	return sess, nil
}

func (h *recorder) counts() (requests, sessions int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.requests), len(h.sessions)
}

func (h *recorder) lastRequest() ingest.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests[len(h.requests)-1]
}

func (h *recorder) session(i int) *published {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[i]
}

func startServer(t *testing.T, h ingest.Handler, mod func(*Server)) *Server {
	t.Helper()
	s := &Server{
		Address:      "127.0.0.1:0",
		Handler:      h,
		Log:          testutil.Logger(t),
		RefusalDelay: func() time.Duration { return 0 },
	}
	if mod != nil {
		mod(s)
	}
	if err := s.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func rtmpURL(s *Server, path string) string {
	scheme := "rtmp"
	if s.TLSConfig != nil {
		scheme = "rtmps"
	}
	return scheme + "://" + s.Addr().String() + path
}

// runFFmpeg runs the FFmpeg CLI and returns its error and output.
func runFFmpeg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Tool(t, "ffmpeg"), append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func hasEncoder(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command(testutil.Tool(t, "ffmpeg"), "-hide_banner", "-encoders").Output()
	return err == nil && bytes.Contains(out, []byte(" "+name+" "))
}

var (
	clipOnce sync.Once
	clipPath string
	clipErr  string
)

// clip is a 2 s 320x240 H.264 (with B-frames) + AAC FLV file, encoded once:
// the legitimate publishers of the hostile tests push it with -c copy, so
// they cost no encoding.
func clip(t *testing.T) string {
	t.Helper()
	testutil.NeedsFFmpeg(t)
	clipOnce.Do(func() {
		p := filepath.Join(tmpDir, "clip.flv")
		out, err := runFFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2",
			"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
			"-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30", "-pix_fmt", "yuv420p",
			"-c:a", "aac", "-b:a", "64k", "-f", "flv", "-y", p)
		if err != nil {
			clipErr = fmt.Sprintf("%v: %s", err, out)
			return
		}
		clipPath = p
	})
	if clipPath == "" {
		t.Fatalf("making the clip: %s", clipErr)
	}
	return clipPath
}

// pushClip publishes the clip as fast as FFmpeg reads it.
func pushClip(t *testing.T, s *Server, path string) (string, error) {
	t.Helper()
	return runFFmpeg(t, "-i", clip(t), "-c", "copy", "-f", "flv", rtmpURL(s, path))
}

// legitPublish pushes the clip as stream "ok" and checks that it arrived
// whole: the proof that the server still serves after a hostile client.
func legitPublish(t *testing.T, s *Server, h *recorder) {
	t.Helper()
	_, before := h.counts()
	out, err := pushClip(t, s, "/live/ok?key=secret")
	if err != nil {
		t.Fatalf("legitimate publisher failed: %v\n%s", err, out)
	}
	_, after := h.counts()
	if after != before+1 {
		t.Fatalf("legitimate publisher: %d sessions, want %d", after, before+1)
	}
	p := h.session(after - 1)
	pkts := p.wait(t)
	if err := p.sess.Err(); err != nil {
		t.Fatalf("legitimate session ended with %v", err)
	}
	var video, audio int
	for _, pk := range pkts {
		if pk.Track == 0 {
			video++
		} else {
			audio++
		}
	}
	if video != 60 || audio < 80 {
		t.Fatalf("legitimate session carried %d video and %d audio packets, want 60 and about 86", video, audio)
	}
}

// Hand-made RTMP, for the hostile clients.

// handshake does a plain RTMP handshake as a client.
func handshake(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	c1 := make([]byte, 1537)
	c1[0] = 3
	if _, err := c.Write(c1); err != nil {
		t.Fatal(err)
	}
	s := make([]byte, 1+1536+1536)
	if _, err := io.ReadFull(c, s); err != nil {
		t.Fatalf("reading S0S1S2: %v", err)
	}
	if _, err := c.Write(s[1 : 1+1536]); err != nil { // C2 echoes S1
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
}

// chunk0 is a type-0 chunk header on chunk stream csid, followed by body.
func chunk0(csid byte, typ byte, length int, body []byte) []byte {
	b := []byte{csid & 0x3F, 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), typ, 0, 0, 0, 0}
	return append(b, body...)
}

// closedWithin reports how long the server took to close c (reading and
// discarding what it sends), failing after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	if isTimeout(err) {
		t.Fatalf("the server kept the connection open for more than %s", limit)
	}
	return time.Since(start)
}

func dial(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nalTypes lists the NALU types of an Annex-B H.264 or H.265 AU.
func nalTypes(t *testing.T, data []byte, hevc bool) []int {
	t.Helper()
	if !bytes.HasPrefix(data, []byte{0, 0, 0, 1}) {
		t.Fatalf("not Annex-B with 4-byte start codes: % x", data[:min(8, len(data))])
	}
	var types []int
	for _, n := range bytes.Split(data[4:], []byte{0, 0, 0, 1}) {
		if len(n) == 0 {
			continue
		}
		if hevc {
			types = append(types, int(n[0]>>1)&0x3F)
		} else {
			types = append(types, int(n[0])&0x1F)
		}
	}
	return types
}

func contains(list []int, v ...int) bool {
	for _, x := range v {
		found := false
		for _, y := range list {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

// checkMonotonic fails unless each track's DTS never decreases and PTS >= DTS.
func checkMonotonic(t *testing.T, pkts []*pipeline.Packet) {
	t.Helper()
	last := map[int]int64{}
	for i, p := range pkts {
		if l, ok := last[p.Track]; ok && p.DTS < l {
			t.Fatalf("packet %d of track %d: DTS %d after %d", i, p.Track, p.DTS, l)
		}
		if p.PTS < p.DTS {
			t.Fatalf("packet %d of track %d: PTS %d < DTS %d", i, p.Track, p.PTS, p.DTS)
		}
		last[p.Track] = p.DTS
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Made-up media for the gortmplib publishers: valid configurations (so
// the tracks map) and frames the listener forwards without decoding.
var (
	testSPS       = []byte{0x67, 0x64, 0x00, 0x0c, 0xac, 0x3b, 0x50, 0xb0, 0x4b, 0x42, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3d, 0x08} // 352x288
	testPPS       = []byte{0x68, 0xee, 0x3c, 0x80}
	testAV1SeqHdr = []byte{8, 0, 0, 0, 66, 167, 191, 228, 96, 13, 0, 64} // 1920x804
	testAAC       = &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 44100, ChannelConfig: 2}
)

// writeSynthetic writes seconds of 30 fps video (a keyframe a second) and
// 20 ms audio frames on w's tracks, in timestamp order.
func writeSynthetic(w *gortmplib.Writer, seconds int) error {
	frame := time.Second / 30
	audioStep := 20 * time.Millisecond
	if w.Tracks[len(w.Tracks)-1].Codec.ID() == uint32(message.CodecMPEG4Audio) {
		audioStep = time.Second * 1024 / 44100
	}
	var vt, at time.Duration
	for i := 0; i < seconds*30; {
		for _, tr := range w.Tracks {
			var err error
			switch tr.Codec.(type) {
			case *codecs.H264:
				if at < vt {
					continue
				}
				nalu := []byte{0x41, 0x9a, byte(i)}
				if i%30 == 0 {
					nalu = []byte{0x65, 0x88, byte(i)}
				}
				err = w.WriteH264(tr, vt, vt, [][]byte{nalu})
			case *codecs.AV1:
				if at < vt {
					continue
				}
				tu := [][]byte{{0x30, 0x10, byte(i)}} // OBU_FRAME, no size field
				if i%30 == 0 {
					tu = append([][]byte{testAV1SeqHdr}, tu...)
				}
				err = w.WriteAV1(tr, vt, tu)
			case *codecs.Opus:
				if at >= vt {
					continue
				}
				err = w.WriteOpus(tr, at, []byte{0xfc, 0xff, 0xfe}) // CELT FB 20 ms, stereo
			case *codecs.MPEG4Audio:
				if at >= vt {
					continue
				}
				err = w.WriteMPEG4Audio(tr, at, []byte{0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c})
			}
			if err != nil {
				return err
			}
		}
		if at < vt {
			at += audioStep
		} else {
			vt += frame
			i++
		}
	}
	return nil
}

// publishClient connects gortmplib's client as a publisher of streamKey
// ("cam?key=secret").
func publishClient(t *testing.T, s *Server, streamKey string) (*gortmplib.Client, error) {
	t.Helper()
	c := &gortmplib.Client{URL: mustURL(t, "rtmp://"+s.Addr().String()+"/live#"+streamKey), Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(c.Close)
	return c, nil
}
