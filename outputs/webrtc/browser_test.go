package webrtc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// browserReport is what player.html POSTs to ?report=.
type browserReport struct {
	Joins []struct {
		AnswerMS         float64  `json:"answer_ms"`
		ConnectedMS      *float64 `json:"connected_ms"`
		FirstFrameMS     *float64 `json:"first_frame_ms"`     // first decoded (getStats)
		FirstPresentedMS *float64 `json:"first_presented_ms"` // first presented (requestVideoFrameCallback)
		FirstAudioMS     *float64 `json:"first_audio_ms"`
	} `json:"joins"`
	Video struct {
		FramesDecoded    int     `json:"frames_decoded"`
		FramesDropped    int     `json:"frames_dropped"`
		FPS              float64 `json:"fps"`
		Width            int     `json:"width"`
		Height           int     `json:"height"`
		PacketsLost      int     `json:"packets_lost"`
		KeyFramesDecoded int     `json:"key_frames_decoded"`
		Decoder          string  `json:"decoder"`
	} `json:"video"`
	Audio struct {
		PacketsReceived int `json:"packets_received"`
	} `json:"audio"`
	Messages []map[string]any `json:"messages"`
	Errors   []string         `json:"errors"`
}

// TestBrowserPlayback plays the stream in headless Chromium with the
// player page this package serves: ten joins measure the time from the POST
// to the first presented frame (median at most 400 ms) and to the first
// audio packet; the last one plays eight seconds and reports its getStats.
// Viewers start on the lowest rung (a low initial bitrate), so Chromium
// also goes through the padding probes and two switches up to 360p, which
// must cost no frames.
func TestBrowserPlayback(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	reports := make(chan []byte, 1)
	cfg := testConfig()
	cfg.ABR.InitialBitrate = 300_000
	srv, hs := startServer(t, job, cfg, nil, func(mux *http.ServeMux) {
		mux.HandleFunc("/report", pageReports(reports))
	})

	const joins, seconds = 10, 8
	url := fmt.Sprintf("%s/whep-player?stream=test&report=/report&seconds=%d&joins=%d", hs.URL, seconds, joins)
	b := testutil.StartBrowser(t, url)

	var raw []byte
	select {
	case raw = <-reports:
	case <-time.After(75 * time.Second):
		t.Fatalf("no report from the page within 75 s; Chromium said:\n%s", tail(b.Output(), 3000))
	}
	var rep browserReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("report %s: %v", raw, err)
	}
	t.Logf("report: %s", raw)
	if len(rep.Errors) > 0 {
		t.Fatalf("page errors %v; Chromium said:\n%s", rep.Errors, tail(b.Output(), 3000))
	}
	if len(rep.Joins) != joins {
		t.Fatalf("%d joins reported, want %d", len(rep.Joins), joins)
	}
	var presented, decoded, audioAfter []float64
	for _, j := range rep.Joins {
		if j.FirstFrameMS == nil || j.FirstPresentedMS == nil || j.FirstAudioMS == nil {
			t.Fatalf("a join never presented a frame or got audio: %s", raw)
		}
		presented = append(presented, *j.FirstPresentedMS)
		decoded = append(decoded, *j.FirstFrameMS)
		audioAfter = append(audioAfter, *j.FirstAudioMS-*j.FirstPresentedMS)
	}
	st := srv.Stats()
	kf := st.Streams[0].Keyframes
	srv.mu.Lock()
	cached, waited := srv.streams["test"].startedCached.Load(), srv.streams["test"].startedWaiting.Load()
	srv.mu.Unlock()
	med := median(presented)
	v := rep.Video
	testutil.Report(t, "first presented frame after the POST (ms), %d joins in order: %.0f, median %.0f (first decoded: median %.0f); "+
		"first audio minus first frame (ms): %.0f; started on a cached keyframe %d, waiting for one %d (keyframe requests %v, passed on %d); "+
		"last join: %dx%d at %.1f fps, %d frames decoded (%d dropped, %d lost packets, decoder %s); %d audio packets",
		joins, presented, med, median(decoded), audioAfter, cached, waited, kf.Requests, kf.Forwarded,
		v.Width, v.Height, v.FPS, v.FramesDecoded, v.FramesDropped, v.PacketsLost, v.Decoder, rep.Audio.PacketsReceived)
	if med > 400 {
		t.Errorf("median time to the first presented frame %.0f ms, want <= 400", med)
	}
	// Audio flows from connect on, not from the first picture: its first
	// packet is there within a 20 ms packet (and a getStats poll) of it.
	if m := median(audioAfter); m > 50 {
		t.Errorf("first audio %.0f ms after the first frame (median), want it with the frame", m)
	}
	// The last session started on 180p; probes move it up (to 360p within
	// the 8 s unless the machine is busy enough to look congested), and
	// Chromium decodes the size the server says it sends.
	var ups []string
	var last map[string]any
	for _, m := range rep.Messages {
		if m["type"] == "rung" {
			last = m
			if m["reason"] == ReasonProbe {
				ups = append(ups, m["rung"].(string))
			}
		}
	}
	t.Logf("moves up by probe in the last session: %v", ups)
	if len(ups) == 0 {
		t.Errorf("no move up by probe: want 180p -> 270p (-> 360p)")
	}
	if last == nil || float64(v.Width) != last["width"] || float64(v.Height) != last["height"] {
		t.Errorf("decoded %dx%d, but the server's last rung message was %v", v.Width, v.Height, last)
	}
	if v.FramesDropped > 5 || v.PacketsLost > 0 {
		t.Errorf("%d frames dropped, %d packets lost: switches and padding must be clean", v.FramesDropped, v.PacketsLost)
	}
	if v.FPS < 25 {
		t.Errorf("%.1f fps decoded, want ~30", v.FPS)
	}
	if rep.Audio.PacketsReceived < seconds*50*9/10 {
		t.Errorf("%d audio packets, want ~50 per second", rep.Audio.PacketsReceived)
	}
	if kf.Requests[keyReasonJoin] != joins || cached+waited != joins {
		t.Errorf("keyframe requests %+v, %d+%d starts: want %d joins", kf, cached, waited, joins)
	}
	testutil.Eventually(t, 5*time.Second, "the page's sessions to end", func() bool { return srv.Stats().Sessions == 0 })
}

func median(xs []float64) float64 {
	xs = append([]float64(nil), xs...)
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// pageReports is the handler a test page POSTs its report to: the first
// body goes to reports, later ones are dropped.
func pageReports(reports chan<- []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case reports <- b:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
