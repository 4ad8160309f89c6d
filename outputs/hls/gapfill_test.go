package hls

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// TestLostPacketsKeepRungsAligned stalls one rung's muxer for 1.5 s with a
// 16-packet reader buffer, so that its reader drops half a second of video
// while the other rungs lose nothing. The gap is repaired by repeating the
// IDR the reader resumes at, and every segment and part, including those
// over the gap, still covers the same media time on every rung.
func TestLostPacketsKeepRungsAligned(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	var once sync.Once
	stalled := make(chan struct{})
	hook := func(rung string, p *pipeline.Packet) {
		if rung == "240p" && p.PTS >= 4*pipeline.VideoClockRate {
			once.Do(func() {
				time.Sleep(1500 * time.Millisecond) // the feeder falls behind
				close(stalled)
			})
		}
	}
	var logs testutil.SyncBuffer
	f := startFixture(t, Config{ReaderBuffer: 16}, "", nil, func(s *Server) {
		s.testHook = hook
		s.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	defer f.close()

	mv := f.index()
	var uris []string
	for _, v := range mv.Variants {
		uris = append(uris, v.URI)
	}
	audioURI := *mv.Renditions[0].URI
	select {
	case <-stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the stall never happened")
	}
	// Three more segments after the stall ended: the gap is in the window.
	target := realSegments(f.media(uris[0])) + 3
	f.waitSegments(append(uris, audioURI), min(target, 7), 20*time.Second)
	if !strings.Contains(logs.String(), "repeating the next IDR over the gap") {
		t.Fatalf("the reader lost nothing, the test proves nothing; logs:\n%s", logs.String())
	}
	checkAligned(t, f, uris, audioURI, 0, true)
}
