package webrtc

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestBadRequests: every malformed or unservable request gets a clear 4xx,
// a burst of 1000 offers is bounded by max_sessions (503 beyond it), and
// sessions that never connect end on the handshake timeout; no session,
// PeerConnection or goroutine outlives the server.
func TestBadRequests(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	cfg := testConfig()
	cfg.MaxSessions = 20
	// Longer than the burst below takes on a loaded 2-core machine, so no
	// session times out and frees its slot while the burst still runs.
	cfg.HandshakeTimeout = 6 * time.Second
	cfg.ICEServers = []ICEServer{{URLs: []string{"stun:stun.example.net:3478"}},
		{URLs: []string{"turn:turn.example.net:3478?transport=udp"}, Username: "u", Credential: "p"}}
	srv, hs := startServer(t, job, cfg, nil)
	endpoint := hs.URL + "/whep/test"
	offer := []byte(crlf(chromeOffer))

	do := func(method, url, contentType string, body []byte, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	for _, ca := range []struct {
		name, method, url, ctype string
		body                     []byte
		status                   int
		msg                      string
	}{
		{"unknown stream", http.MethodPost, hs.URL + "/whep/nope", mimeSDP, offer, 404, "stream not found"},
		{"no stream", http.MethodPost, hs.URL + "/whep/", mimeSDP, offer, 404, "no stream"},
		{"content type", http.MethodPost, endpoint, "text/plain", offer, 415, "application/sdp"},
		{"malformed", http.MethodPost, endpoint, mimeSDP, []byte("v=0\r\nthis is not SDP\r\n"), 400, "bad SDP offer"},
		{"no h264", http.MethodPost, endpoint, mimeSDP, []byte(strings.ReplaceAll(string(offer), "H264", "H265")), 422, "no H.264"},
		{"no audio", http.MethodPost, endpoint, mimeSDP, []byte(crlf(chromeOffer[:strings.Index(chromeOffer, "m=audio")])), 422, "no Opus"},
		{"huge", http.MethodPost, endpoint, mimeSDP, bytes.Repeat([]byte("a=x\r\n"), 40_000), 413, "larger than 65536"},
		{"unknown rung", http.MethodPost, endpoint + "?rung=4k", mimeSDP, offer, 400, `unknown rung "4k"`},
		{"get", http.MethodGet, endpoint, "", nil, 405, "method not allowed"},
		{"put", http.MethodPut, endpoint, mimeSDP, offer, 405, "method not allowed"},
		{"delete unknown", http.MethodDelete, endpoint + "/0123456789abcdef", "", nil, 404, "session not found"},
		{"patch unknown", http.MethodPatch, endpoint + "/0123456789abcdef", mimeTrickleICE, []byte("a=end-of-candidates\r\n"), 404, "session not found"},
		{"too deep", http.MethodPost, endpoint + "/a/b", mimeSDP, offer, 404, "no stream"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			resp, body := do(ca.method, ca.url, ca.ctype, ca.body, nil)
			if resp.StatusCode != ca.status || !strings.Contains(body, ca.msg) {
				t.Fatalf("%s %s: %d %q, want %d containing %q", ca.method, ca.url, resp.StatusCode, body, ca.status, ca.msg)
			}
			if resp.StatusCode == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}

	resp, _ := do(http.MethodOptions, endpoint, "", nil, nil)
	if resp.StatusCode != 204 || resp.Header.Get("Accept-Post") != mimeSDP || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Location") {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}

	// One good session for the PATCH checks.
	resp, answer := do(http.MethodPost, endpoint, mimeSDP, offer, nil)
	if resp.StatusCode != 201 || !strings.Contains(answer, "H264/90000") || !strings.Contains(answer, "packetization-mode=1") {
		t.Fatalf("POST: %d\n%s", resp.StatusCode, answer)
	}
	loc, etag := hs.URL+resp.Header.Get("Location"), resp.Header.Get("ETag")
	if links := resp.Header.Values("Link"); len(links) != 2 || !strings.Contains(links[1], `username="u"; credential="p"`) {
		t.Errorf("Link headers %q", links)
	}
	cand := "a=ice-ufrag:Zm9v\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n"
	for _, ca := range []struct {
		name, ctype, body string
		hdr               map[string]string
		status            int
	}{
		{"candidate", mimeTrickleICE, cand, map[string]string{"If-Match": etag}, 204},
		{"wrong etag", mimeTrickleICE, cand, map[string]string{"If-Match": `"stale"`}, 412},
		{"content type", mimeSDP, cand, nil, 415},
		{"restart", mimeTrickleICE, "a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\n", map[string]string{"If-Match": "*"}, 422},
		{"garbage", mimeTrickleICE, "hello", nil, 400},
	} {
		resp, body := do(http.MethodPatch, loc, ca.ctype, []byte(ca.body), ca.hdr)
		if resp.StatusCode != ca.status {
			t.Errorf("PATCH %s: %d %q, want %d", ca.name, resp.StatusCode, body, ca.status)
		}
	}
	if resp, _ := do(http.MethodDelete, loc, "", nil, nil); resp.StatusCode != 200 {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}

	// 1000 offers at once: max_sessions are answered, the rest get 503.
	var mu sync.Mutex
	codes := map[int]int{}
	var locations []string
	var wg sync.WaitGroup
	work := make(chan struct{})
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := http.Post(endpoint, mimeSDP, bytes.NewReader(offer))
				if err != nil {
					t.Error(err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				if resp.StatusCode == 201 {
					locations = append(locations, hs.URL+resp.Header.Get("Location"))
				} else if resp.Header.Get("Retry-After") == "" {
					t.Errorf("%d without Retry-After", resp.StatusCode)
				}
				mu.Unlock()
			}
		}()
	}
	burst := time.Now()
	for range 1000 {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	t.Logf("1000 offers in %s: %v", time.Since(burst).Round(time.Millisecond), codes)
	if codes[201] != cfg.MaxSessions || codes[503] != 1000-cfg.MaxSessions {
		t.Fatalf("status counts %v: want %d created and the rest 503", codes, cfg.MaxSessions)
	}
	if st := srv.Stats(); st.Sessions != cfg.MaxSessions {
		t.Fatalf("%d sessions, want %d", st.Sessions, cfg.MaxSessions)
	}
	// Half are deleted; the others never connect and time out.
	for _, l := range locations[:10] {
		if resp, _ := do(http.MethodDelete, l, "", nil, nil); resp.StatusCode != 200 {
			t.Errorf("DELETE %s: %d", l, resp.StatusCode)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the unconnected sessions to time out", func() bool { return srv.Stats().Sessions == 0 })
	st := srv.Stats()
	t.Logf("rejected %v, ended %v", st.Rejected, st.Ended)
	if st.Ended[endDeleted] != 11 || st.Ended[endHandshakeTimeout] != 10 || st.Rejected["max_sessions"] != 980 {
		t.Errorf("ended %v, rejected %v", st.Ended, st.Rejected)
	}
}
