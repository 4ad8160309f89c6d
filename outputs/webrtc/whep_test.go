package webrtc

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestWHEPPlayback: a pion viewer plays a running ladder for more than five
// seconds; FFmpeg decodes every frame at the source rate and at the size of
// the rung the server chose; audio flows; a pin over the data channel moves
// the viewer to another rung at an IDR without a decode error; a second
// viewer pinned with ?rung= gets that rung; DELETE ends a session.
func TestWHEPPlayback(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	cfg := testConfig()
	// Bandwidth adaptation has its own tests; here a CPU-starved loopback
	// must not move the viewer off the rung whose size is checked.
	cfg.ABR.Enabled = false
	srv, hs := startServer(t, job, cfg, nil)

	v := newViewer(t, viewerOptions{decode: true, dataChannel: true})
	defer v.close(false)
	joined := time.Now()
	v.mustConnect(t, hs.URL, "test")
	testutil.Eventually(t, 5*time.Second, "the first frame", func() bool { return len(v.snapshot()) > 0 })
	t.Logf("first frame %s after the POST", v.snapshot()[0].arrival.Sub(joined).Round(time.Millisecond))
	testutil.Eventually(t, 15*time.Second, "5.5 s of video", func() bool {
		f := v.snapshot()
		return len(f) > 1 && f[len(f)-1].arrival.Sub(f[0].arrival) >= 5500*time.Millisecond
	})

	frames := v.snapshot()
	span := frames[len(frames)-1].arrival.Sub(frames[0].arrival)
	fps := float64(len(frames)-1) / span.Seconds()
	var wrongSize int
	for _, f := range frames {
		if f.width != 640 || f.height != 360 {
			wrongSize++
		}
	}
	// RTP timestamps advance by one source frame (3000 ticks at 90 kHz).
	var irregular int
	for i := 1; i < len(frames); i++ {
		if frames[i].ts-frames[i-1].ts != 3000 {
			irregular++
		}
	}
	st := srv.Stats()
	t.Logf("%d frames in %s: %.1f fps; audio packets %d; viewer %+v", len(frames), span.Round(time.Millisecond), fps,
		v.audioPackets.Load(), st.Viewers)
	if fps < 27 || fps > 33 {
		t.Errorf("received %.1f fps, want the source's 30", fps)
	}
	if wrongSize > 0 || st.Viewers[0].Rung != "360p" {
		t.Errorf("%d frames not 640x360; server says rung %q", wrongSize, st.Viewers[0].Rung)
	}
	if irregular > 0 {
		t.Errorf("%d frames whose RTP timestamp did not advance by 3000", irregular)
	}
	if audio := v.audioPackets.Load(); audio < int64(span.Seconds()*50*0.9) {
		t.Errorf("%d audio packets in %s, want ~50/s", audio, span)
	}
	checkClean(t, v)

	// Pin 270p over the data channel: the next frames are 480x270, decoded
	// cleanly, on the same timeline.
	<-v.dcOpen
	if err := v.dc.SendText(`{"type":"pin","rung":"270p"}`); err != nil {
		t.Fatal(err)
	}
	pinned := len(v.snapshot())
	testutil.Eventually(t, 5*time.Second, "frames of the pinned rung", func() bool {
		f := v.snapshot()
		return len(f) > pinned+30 && f[len(f)-1].width == 480 && f[len(f)-1].height == 270
	})
	after := v.snapshot()[pinned:]
	switchAt := -1
	for i, f := range after {
		if f.width == 480 {
			switchAt = i
			break
		}
	}
	if !after[switchAt].idr {
		t.Errorf("the first 270p frame is not an IDR")
	}
	for _, f := range after[switchAt:] {
		if f.width != 480 || f.height != 270 {
			t.Fatalf("frame %dx%d after the switch to 270p", f.width, f.height)
		}
	}
	checkClean(t, v)
	st = srv.Stats()
	if st.Switches.Reasons[ReasonPin] != 1 || st.Switches.Down != 1 || !st.Viewers[0].Pinned {
		t.Errorf("switch stats %+v, viewer %+v: want one pin switch down", st.Switches, st.Viewers[0])
	}
	if !hasMessage(v, "rungs") || !hasMessage(v, "rung") {
		t.Errorf("data channel messages %v: want a rungs list and a rung change", v.messages)
	}

	// A burst of PLIs from the viewer passes at most two requests on to the
	// job (one now, one at the end of keyframe_min_interval), not twenty.
	before := srv.Stats().Streams[0].Keyframes
	ssrc := uint32(v.pc.GetReceivers()[0].Track().SSRC())
	for range 20 {
		if err := v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 2*time.Second, "the PLIs to arrive", func() bool {
		return srv.Stats().Streams[0].Keyframes.Requests[keyReasonPLI] == before.Requests[keyReasonPLI]+20
	})
	time.Sleep(600 * time.Millisecond) // past the interval: the deferred request, if any, went
	if after := srv.Stats().Streams[0].Keyframes; after.Forwarded-before.Forwarded > 2 {
		t.Errorf("20 PLIs passed %d requests on, want at most 2", after.Forwarded-before.Forwarded)
	}

	// A second viewer pinned at the POST.
	v2 := newViewer(t, viewerOptions{decode: true, query: "?rung=180p"})
	v2.mustConnect(t, hs.URL, "test")
	testutil.Eventually(t, 5*time.Second, "30 frames of 180p", func() bool { return len(v2.snapshot()) >= 30 })
	for _, f := range v2.snapshot() {
		if f.width != 320 || f.height != 180 {
			t.Fatalf("pinned viewer got %dx%d, want 320x180", f.width, f.height)
		}
	}
	checkClean(t, v2)

	// DELETE ends the session; a second DELETE finds nothing.
	req, _ := http.NewRequest(http.MethodDelete, v2.location, nil)
	for i, want := range []int{http.StatusOK, http.StatusNotFound} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("DELETE #%d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	v2.close(false)
	if st := srv.Stats(); st.Sessions != 1 || st.Ended[endDeleted] != 1 {
		t.Errorf("after DELETE: %d sessions, ended %v", st.Sessions, st.Ended)
	}
	if kf := srv.Stats().Streams[0].Keyframes; kf.Requests[keyReasonJoin] != 2 || kf.Forwarded == 0 {
		t.Errorf("keyframe stats %+v: want two joins passed on", kf)
	}
}

// checkClean fails the test on decode errors, lost packets or timestamps
// going backwards.
func checkClean(t *testing.T, v *viewer) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.decodeErrors) > 0 || v.lost > 0 || v.tsBackwards > 0 {
		t.Errorf("decode errors %v, lost packets %d, timestamps backwards %d", v.decodeErrors, v.lost, v.tsBackwards)
	}
}

func hasMessage(v *viewer, typ string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, m := range v.messages {
		if m["type"] == typ {
			return true
		}
	}
	return false
}

// TestAnswerNegotiatesCongestionControl: an offer with transport-cc gets it
// back (extmap and rtcp-fb), which is what lets the estimator read the
// viewer's feedback; an offer with only abs-send-time and REMB (a receiver
// that estimates on its side) gets those instead.
func TestAnswerNegotiatesCongestionControl(t *testing.T) {
	job := startJob(t, smallSource, smallLadder)
	_, hs := startServer(t, job, testConfig(), nil)
	const (
		twccExt = "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\n"
		absExt  = "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\n"
	)
	withVideo := func(lines string) string {
		return strings.Replace(chromeOffer, "a=rtcp-mux\n", "a=rtcp-mux\n"+lines, 1)
	}
	fb := func(kinds ...string) string {
		var b strings.Builder
		for _, pt := range []string{"102", "106", "112", "113"} {
			for _, k := range kinds {
				b.WriteString("a=rtcp-fb:" + pt + " " + k + "\n")
			}
		}
		return b.String()
	}
	twccOffer := withVideo(twccExt + fb("transport-cc", "goog-remb"))
	rembOffer := withVideo(absExt + fb("goog-remb"))
	for _, c := range []struct {
		name, offer string
		want, not   []string
	}{
		{"transport-cc", twccOffer, []string{"transport-wide-cc-extensions-01", " transport-cc\r\n"}, []string{"abs-send-time"}},
		{"remb", rembOffer, []string{"abs-send-time", " goog-remb\r\n"}, []string{"transport-wide-cc", " transport-cc\r\n"}},
	} {
		status, answer := postSDP(t, hs.URL+"/whep/test", mimeSDP, []byte(crlf(c.offer)))
		if status != http.StatusCreated {
			t.Fatalf("%s: POST %d: %s", c.name, status, answer)
		}
		video := answer[strings.Index(answer, "m=video"):strings.Index(answer, "m=audio")]
		for _, w := range c.want {
			if !strings.Contains(video, w) {
				t.Errorf("%s: the answer's video section lacks %q:\n%s", c.name, w, video)
			}
		}
		for _, n := range c.not {
			if strings.Contains(video, n) {
				t.Errorf("%s: the answer's video section has %q:\n%s", c.name, n, video)
			}
		}
	}
}
