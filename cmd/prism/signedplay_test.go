package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestSignedPlaybackInChromium: the player page in headless Chromium, given
// a play token minted with `prism token`, plays the signed stream with
// hls.js (and WebRTC); without the token the LL-HLS index answers 401 and
// hls.js decodes nothing.
func TestSignedPlaybackInChromium(t *testing.T) {
	n := authNode(t, freePort(t))
	code, out, errOut := prism(t, "token", "--secret", jwtSecret, "--streams", "signedcam", "--actions", "play", "--ttl", "10m")
	if code != 0 {
		t.Fatalf("prism token: %d %s", code, errOut)
	}
	tok := strings.TrimSpace(out)

	type report struct {
		phase, from string
		body        map[string]any
	}
	reports := make(chan report, 8)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		if r.Method == http.MethodPost {
			var rep map[string]any
			if json.NewDecoder(r.Body).Decode(&rep) == nil {
				select {
				case reports <- report{strings.Trim(r.URL.Path, "/"), r.URL.Query().Get("from"), rep}:
				default:
				}
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer collector.Close()

	// open loads the page for the phase and collects its reports until
	// want ones have come or the time is up.
	open := func(phase, query string, want []string, wait time.Duration) map[string]map[string]any {
		t.Helper()
		b := testutil.StartBrowser(t, n.base+"/?stream=signedcam"+query+"&report="+url.QueryEscape(collector.URL+"/"+phase))
		defer b.Close()
		got := map[string]map[string]any{}
		timeout := time.After(wait)
		for {
			done := true
			for _, w := range want {
				if got[w] == nil {
					done = false
				}
			}
			if done {
				return got
			}
			select {
			case rep := <-reports:
				if rep.phase == phase {
					got[rep.from] = rep.body
				}
			case <-timeout:
				t.Logf("%s: reports so far %v\nbrowser:\n%s", phase, got, b.Output())
				return got
			}
		}
	}

	signed := open("signed", "&token="+url.QueryEscape(tok), []string{"hls", "webrtc"}, 60*time.Second)
	hlsRep, rtcRep := signed["hls"], signed["webrtc"]
	if hlsRep == nil {
		t.Fatalf("no hls.js report with the token; server log:\n%s", n.stderr.String())
	}
	frames, _ := hlsRep["decodedFrames"].(float64)
	levels, _ := hlsRep["levels"].(float64)
	errs, _ := hlsRep["errors"].([]any)
	video, _ := rtcRep["video"].(map[string]any)
	rtcFrames, _ := video["frames_decoded"].(float64)
	testutil.Report(t, "signed playback in Chromium with a prism token: hls.js %v levels, %v frames decoded, errors %v; WebRTC %v frames decoded",
		levels, frames, errs, rtcFrames)
	if frames <= 0 || levels < 1 || len(errs) > 0 {
		t.Errorf("hls.js did not play the signed URL: %v", hlsRep)
	}
	if rtcRep == nil {
		t.Errorf("no WebRTC report with the token")
	} else if rtcFrames <= 0 {
		t.Errorf("WebRTC did not play with the token: %v", rtcRep)
	}

	// Without the token: 401 for a plain GET, nothing for hls.js.
	if code, body := request(t, "GET", n.base+"/hls/signedcam/index.m3u8", "", ""); code != 401 {
		t.Errorf("index without a token: %d %s, want 401", code, body)
	}
	unsigned := open("unsigned", "", []string{"hls"}, 40*time.Second)
	hlsRep = unsigned["hls"]
	if hlsRep == nil {
		t.Fatal("no hls.js report without the token")
	}
	frames, _ = hlsRep["decodedFrames"].(float64)
	levels, _ = hlsRep["levels"].(float64)
	errs, _ = hlsRep["errors"].([]any)
	var rtcNote any = "no report"
	if rep := unsigned["webrtc"]; rep != nil {
		rtcNote = rep["errors"]
		if e, _ := json.Marshal(rep["errors"]); !strings.Contains(string(e), "401") {
			t.Errorf("the WHEP player without the token: %v, want its POST refused with 401", rep)
		}
		if v, _ := rep["video"].(map[string]any); v != nil {
			if f, _ := v["frames_decoded"].(float64); f > 0 {
				t.Errorf("WebRTC played without the token: %v", rep)
			}
		}
	}
	testutil.Report(t, "signed stream in Chromium without a token: index 401; hls.js %v levels, %v frames decoded, errors %v; WebRTC errors %v",
		levels, frames, errs, rtcNote)
	if frames != 0 || levels != 0 || len(errs) == 0 {
		t.Errorf("hls.js without the token: %v, want 0 frames, 0 levels and an error", hlsRep)
	}
}
