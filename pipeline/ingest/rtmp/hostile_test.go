package rtmp

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/abema/go-mp4"
	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// TestHostile: each hostile client is dropped without a session, within
// its bound, and a legitimate publisher gets through right after it.
func TestHostile(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	testutil.NeedsFFmpeg(t)
	const handshakeTimeout = time.Second
	h := newRecorder(t)
	s := startServer(t, h, func(s *Server) {
		s.HandshakeTimeout = handshakeTimeout
		s.ReadTimeout = 2 * time.Second
		s.MaxConnections = 100
		s.MaxAnalyzeBytes = 4 << 20
	})
	wantPanics := int64(0)
	noNewSession := func(t *testing.T, before int) {
		t.Helper()
		if _, n := h.counts(); n != before {
			t.Fatalf("%d sessions admitted", n-before)
		}
	}

	t.Run("random bytes", func(t *testing.T) {
		_, before := h.counts()
		rng := rand.New(rand.NewPCG(1, 2))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		for i := range 8 {
			c := dial(t, s)
			junk := make([]byte, 16<<10)
			for j := range junk {
				junk[j] = byte(rng.Uint32())
			}
			if i == 0 {
				junk[0] = 3 // a valid version: the junk reaches the chunk parser
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = c.Write(junk)
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				_ = c.SetReadDeadline(start.Add(handshakeTimeout + 2*time.Second))
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						if isTimeout(err) {
							t.Error("a junk connection stayed open")
						}
						break
					}
				}
				mu.Lock()
				slowest = max(slowest, time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
		noNewSession(t, before)
		testutil.Report(t, "8 junk connections closed, the slowest after %s", slowest.Round(time.Millisecond))
		legitPublish(t, s, h)
	})

	t.Run("handshake stops halfway", func(t *testing.T) {
		c := dial(t, s)
		_, _ = c.Write(append([]byte{3}, make([]byte, 1536)...)) // C0+C1, then silence
		took := closedWithin(t, c, handshakeTimeout+2*time.Second)
		if took < handshakeTimeout*8/10 {
			t.Fatalf("closed after %s, before the handshake deadline", took)
		}
		testutil.Report(t, "half handshake closed after %s (HandshakeTimeout %s)", took.Round(time.Millisecond), handshakeTimeout)
		legitPublish(t, s, h)
	})

	for _, size := range []uint32{0x80000000, 0x7fffffff} {
		t.Run("chunk size", func(t *testing.T) {
			c := dial(t, s)
			handshake(t, c)
			body := []byte{byte(size >> 24), byte(size >> 16), byte(size >> 8), byte(size)}
			_, _ = c.Write(chunk0(2, 1, 4, body))
			took := closedWithin(t, c, handshakeTimeout/2)
			testutil.Report(t, "Set Chunk Size %#x: closed after %s", size, took.Round(time.Millisecond))
			legitPublish(t, s, h)
		})
	}

	t.Run("oversized command", func(t *testing.T) {
		c := dial(t, s)
		handshake(t, c)
		_, _ = c.Write(chunk0(3, 20, 0xffffff, make([]byte, 128))) // a 16 MiB AMF0 command
		took := closedWithin(t, c, handshakeTimeout/2)
		testutil.Report(t, "16 MiB AMF command: closed after %s", took.Round(time.Millisecond))
		legitPublish(t, s, h)
	})

	t.Run("analysis byte budget", func(t *testing.T) {
		// An admitted publisher that sends big frames all at DTS 0: the
		// library would buffer them all while it waits for 2 s of media.
		c, err := publishClient(t, s, "budget?key=secret")
		if err != nil {
			t.Fatal(err)
		}
		_, n := h.counts()
		p := h.session(n - 1)
		au := make([]byte, 1<<20)
		au[0], au[1], au[2], au[3], au[4] = 0x00, 0x0f, 0xff, 0xfc, 0x65 // one NALU of 1 MiB - 4
		sent := 0
		for range 16 {
			_ = c.NetConn().SetWriteDeadline(time.Now().Add(3 * time.Second))
			if c.Write(&message.Video{ChunkStreamID: 6, MessageStreamID: 0x1000000, Codec: message.CodecH264,
				IsKeyFrame: true, Type: message.VideoTypeAU, AU: au}) != nil {
				break
			}
			sent++
		}
		p.wait(t)
		if err := p.sess.Err(); !errors.Is(err, ErrBudget) {
			t.Fatalf("session ended with %v, want ErrBudget", err)
		}
		testutil.Report(t, "byte budget 4 MiB: dropped after the client wrote %d MiB", sent)
		legitPublish(t, s, h)
	})

	t.Run("configuration of the other codec", func(t *testing.T) {
		// An H.264 track, then an H.265 legacy configuration: gortmplib's
		// H.264 callback would dereference its nil avcC.
		c, err := publishClient(t, s, "mixed?key=secret")
		if err != nil {
			t.Fatal(err)
		}
		tr := &gortmplib.Track{Codec: &codecs.H264{SPS: testSPS, PPS: testPPS}}
		w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{tr}}
		if err := w.Initialize(); err != nil {
			t.Fatal(err)
		}
		if err := writeSynthetic(w, 3); err != nil {
			t.Fatal(err)
		}
		hvcc := &mp4.HvcC{ConfigurationVersion: 1, NumOfNaluArrays: 1, NaluArrays: []mp4.HEVCNaluArray{
			{NaluType: 32, NumNalus: 1, Nalus: []mp4.HEVCNalu{{Length: 2, NALUnit: []byte{0x40, 0x01}}}},
		}}
		if err := c.Write(&message.Video{ChunkStreamID: 6, MessageStreamID: 0x1000000, Codec: message.CodecH265,
			IsKeyFrame: true, Type: message.VideoTypeConfig, HEVCConfig: hvcc, DTS: 3 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteH264(tr, 3100*time.Millisecond, 3100*time.Millisecond, [][]byte{{0x41, 1}}); err != nil {
			t.Fatal(err)
		}
		_, n := h.counts()
		p := h.session(n - 1)
		testutil.Eventually(t, 5*time.Second, "the frame after the foreign configuration", func() bool {
			pk := p.packets()
			return len(pk) > 0 && pk[len(pk)-1].DTS == 3100*90
		})
		c.Close()
		p.wait(t)
		if n := s.panics.Load(); n != wantPanics {
			t.Fatalf("%d panics", n-wantPanics)
		}
		legitPublish(t, s, h)
	})

	t.Run("handler panic", func(t *testing.T) {
		_, before := h.counts()
		if _, err := pushClip(t, s, "/live/panic?key=secret"); err == nil {
			t.Fatal("publishing into a panicking handler succeeded")
		}
		wantPanics++
		if n := s.panics.Load(); n != wantPanics {
			t.Fatalf("%d panics recovered, want %d", n, wantPanics)
		}
		noNewSession(t, before)
		legitPublish(t, s, h)
	})

	t.Run("500 idle connections", func(t *testing.T) {
		testutil.Eventually(t, 3*time.Second, "earlier connections to close", func() bool { return s.connections() == 0 })
		conns := make([]net.Conn, 500)
		start := time.Now()
		for i := range conns {
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			conns[i] = c
			defer c.Close()
		}
		dialled := time.Since(start)
		// The 400 beyond MaxConnections are closed at once.
		var wg sync.WaitGroup
		var mu sync.Mutex
		closedFast := 0
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout / 2))
				if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					mu.Lock()
					closedFast++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if closedFast != 400 {
			t.Fatalf("%d connections closed at once, want the 400 beyond MaxConnections", closedFast)
		}
		if n := s.connections(); n > 100 {
			t.Fatalf("%d connections served, max 100", n)
		}
		// Still responsive while full: a newcomer is closed at once, not hung.
		extra := dial(t, s)
		closedWithin(t, extra, handshakeTimeout/2)
		// The idle ones time out, and a publisher gets in.
		testutil.Eventually(t, 3*handshakeTimeout, "the idle connections to time out", func() bool { return s.connections() == 0 })
		freed := time.Since(start)
		testutil.Report(t, "500 idle connections: dialled in %s, 400 closed at once, the 100 held freed after %s",
			dialled.Round(time.Millisecond), freed.Round(time.Millisecond))
		legitPublish(t, s, h)
	})

	if n := s.panics.Load(); n != wantPanics {
		t.Fatalf("%d panics recovered, want only the handler's (%d)", n, wantPanics)
	}
}

// TestOpusAV1 publishes E-RTMP AV1 + Opus with gortmplib's client (FFmpeg
// 7.1's flv muxer has no Opus, and this FFmpeg no AV1 encoder).
func TestOpusAV1(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	h := newRecorder(t)
	s := startServer(t, h, nil)
	c, err := publishClient(t, s, "av1?key=secret")
	if err != nil {
		t.Fatal(err)
	}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{{Codec: &codecs.AV1{}}, {Codec: &codecs.Opus{IDHeader: &opus.IDHeader{ChannelCount: 2, PreSkip: 312, InputSampleRate: 48000}}}}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := writeSynthetic(w, 3); err != nil {
		t.Fatal(err)
	}
	_ = c.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "deleteStream", CommandID: 4, Arguments: []any{nil, float64(1)}})
	p := h.session(0)
	pkts := p.wait(t)
	if err := p.sess.Err(); err != nil {
		t.Fatalf("session ended with %v", err)
	}
	tr := p.sess.Tracks()
	if len(tr) != 2 || tr[0].Codec != pipeline.CodecAV1 || tr[0].Width != 1920 || tr[0].Height != 804 ||
		tr[1].Codec != pipeline.CodecOpus || tr[1].ClockRate != 48000 || tr[1].Channels != 2 {
		t.Fatalf("tracks %+v", tr)
	}
	checkMonotonic(t, pkts)
	var video, audio, keys int
	for _, pk := range pkts {
		if pk.Track == 0 {
			video++
			if pk.Keyframe {
				keys++
			}
		} else {
			audio++
			if pk.Duration != 960 {
				t.Fatalf("Opus packet of %d samples, want 960", pk.Duration)
			}
		}
	}
	if video != 90 || keys != 3 || audio < 145 || !pkts[0].Keyframe {
		t.Fatalf("%d video (%d keyframes), %d audio packets", video, keys, audio)
	}
}
