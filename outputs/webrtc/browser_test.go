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
		AnswerMS     float64  `json:"answer_ms"`
		ConnectedMS  *float64 `json:"connected_ms"`
		FirstFrameMS *float64 `json:"first_frame_ms"`
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
// player page this package serves: five joins measure the time to the first
// decoded frame after the POST; the last one plays eight seconds and reports
// its getStats. Viewers start on the lowest rung (a low initial bitrate), so
// Chromium also goes through the padding probes and two switches up to
// 360p, which must cost no frames.
func TestBrowserPlayback(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	reports := make(chan []byte, 1)
	cfg := testConfig()
	cfg.ABR.InitialBitrate = 300_000
	srv, hs := startServer(t, job, cfg, nil, func(mux *http.ServeMux) {
		mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			select {
			case reports <- b:
			default:
			}
			w.WriteHeader(http.StatusNoContent)
		})
	})

	const joins, seconds = 5, 8
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
	var ttff []float64
	for _, j := range rep.Joins {
		if j.FirstFrameMS == nil {
			t.Fatalf("a join never decoded a frame: %+v", rep.Joins)
		}
		ttff = append(ttff, *j.FirstFrameMS)
	}
	sort.Float64s(ttff)
	if len(ttff) != joins {
		t.Fatalf("%d joins reported, want %d", len(ttff), joins)
	}
	median := ttff[len(ttff)/2]
	v := rep.Video
	testutil.Report(t, "time to first frame after the POST (ms): %.0f, median %.0f; %dx%d at %.1f fps, %d frames decoded "+
		"(%d dropped, %d lost packets, decoder %s); %d audio packets",
		ttff, median, v.Width, v.Height, v.FPS, v.FramesDecoded, v.FramesDropped, v.PacketsLost, v.Decoder, rep.Audio.PacketsReceived)
	if median > 500 {
		t.Errorf("median time to first frame %.0f ms, want <= 500", median)
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
	st := srv.Stats()
	if kf := st.Streams[0].Keyframes; kf.Requests[keyReasonJoin] != joins {
		t.Errorf("keyframe requests %+v, want %d joins", kf, joins)
	}
	testutil.Eventually(t, 5*time.Second, "the page's sessions to end", func() bool { return srv.Stats().Sessions == 0 })
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
