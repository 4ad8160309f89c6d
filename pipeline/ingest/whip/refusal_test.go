package whip

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// endless is a body of n bytes made on demand, counting what was read.
type endless struct {
	n    int64
	read atomic.Int64
}

func (e *endless) Read(p []byte) (int, error) {
	left := e.n - e.read.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), left)
	for i := range p[:n] {
		p[i] = 'a'
	}
	e.read.Add(n)
	return int(n), nil
}

// Every refusal answers its status before any media is accepted (the
// Handler is not even asked for malformed requests), and the server still
// serves a legitimate publisher afterwards, PATCH limits included.
func TestRefusals(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	h := newHandler(t)
	_, base := startServer(t, h)
	url := base + "/whip/live"

	// An offer that is real SDP and sends only audio.
	audioOnly := newClient(t)
	audioOnly.addSample(opusCapability, "audio")
	audioOffer := audioOnly.offer()
	videoClient := newClient(t)
	videoClient.addSample(h264Capability, "video")
	videoOffer := videoClient.offer()
	videoClient.close()

	for _, tc := range []struct {
		name, token, contentType, body string
		want                           int
		asked                          bool // the Handler is asked
	}{
		{"wrong content type", "secret", "text/plain", videoOffer, http.StatusUnsupportedMediaType, false},
		{"not SDP", "secret", "application/sdp", "hello, I am not an offer", http.StatusBadRequest, false},
		{"audio only", "secret", "application/sdp", audioOffer, http.StatusNotAcceptable, false},
		{"no bearer", "", "application/sdp", videoOffer, http.StatusUnauthorized, true},
		{"wrong bearer", "guess", "application/sdp", videoOffer, http.StatusUnauthorized, true},
	} {
		before := h.calls.Load()
		resp, body := post(t, url, tc.token, tc.contentType, tc.body)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %s (%s), want %d", tc.name, resp.Status, strings.TrimSpace(body), tc.want)
		}
		if asked := h.calls.Load() > before; asked != tc.asked {
			t.Errorf("%s: Handler asked %v, want %v", tc.name, asked, tc.asked)
		}
		if tc.want == http.StatusUnauthorized {
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
			}
			if k := h.lastRequest().Key; k != tc.token {
				t.Errorf("%s: Handler saw key %q", tc.name, k)
			}
		}
		t.Logf("%s: %d %s", tc.name, resp.StatusCode, strings.TrimSpace(body))
	}
	if resp, _ := post(t, base+"/whip/busy", "secret", "application/sdp", videoOffer); resp.StatusCode != http.StatusConflict {
		t.Errorf("busy stream: %s, want 409", resp.Status)
	}

	// 10 MB offers: with a Content-Length the server refuses unread, and
	// without one it stops at MaxSDPBytes.
	for _, chunked := range []bool{false, true} {
		body := &endless{n: 10 << 20}
		req, _ := http.NewRequest(http.MethodPost, url, body)
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer secret")
		if !chunked {
			req.ContentLength = body.n
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		took := time.Since(start)
		switch {
		case err != nil && chunked:
			// The server may close before the client sees the answer.
			t.Logf("10 MB chunked: %v", err)
		case err != nil:
			t.Fatalf("10 MB: %v", err)
		default:
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("10 MB (chunked %v): %s, want 413", chunked, resp.Status)
			}
		}
		if took > 2*time.Second || body.read.Load() >= body.n {
			t.Errorf("10 MB (chunked %v): took %s, the client sent %d bytes", chunked, took, body.read.Load())
		}
		testutil.Report(t, "10 MB offer (chunked %v): refused in %s, %d KiB left the client", chunked, took.Round(time.Millisecond), body.read.Load()>>10)
	}

	for _, m := range []string{http.MethodGet, http.MethodPut} {
		req, _ := http.NewRequest(m, url, nil)
		if resp, _ := do(t, req); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s stream: %s", m, resp.Status)
		}
	}
	if h.calls.Load() != 3 {
		t.Errorf("Handler asked %d times, want 3 (two bearer refusals and busy; none for malformed requests)", h.calls.Load())
	}

	// A legitimate publisher gets through, and its session's resource
	// enforces ETags and the PATCH budget without disturbing the media.
	aus := readH264(t, h264Clip(t, 640, 360, 30))
	samples := make([][]byte, len(aus))
	for i, au := range aus {
		samples[i] = au.annexB()
	}
	c := newClient(t)
	vt := c.addSample(h264Capability, "video")
	c.publish(url, "secret")
	c.loop(vt, samples, time.Second/30, framePace, 0)
	col := h.last()
	testutil.Eventually(t, 15*time.Second, "the legitimate publisher's media", func() bool { return col.count(0) >= 20 })

	patch := func(location, etag, contentType, body string) int {
		req, _ := http.NewRequest(http.MethodPatch, base+location, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if etag != "" {
			req.Header.Set("If-Match", etag)
		}
		resp, _ := do(t, req)
		return resp.StatusCode
	}
	const frag = "a=ice-ufrag:%s\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
	for _, tc := range []struct {
		name, location, etag, contentType, body string
		want                                    int
	}{
		{"wrong ETag", c.location, `"nope"`, mimeTrickleICE, "a=end-of-candidates\r\n", http.StatusPreconditionFailed},
		{"unknown session", "/whip/live/0123", "", mimeTrickleICE, "a=end-of-candidates\r\n", http.StatusNotFound},
		{"other stream", strings.Replace(c.location, "/live/", "/other/", 1), "", mimeTrickleICE, "", http.StatusNotFound},
		{"wrong type", c.location, c.etag, "application/sdp", "", http.StatusUnsupportedMediaType},
		{"not a fragment", c.location, c.etag, mimeTrickleICE, "v=0\r\nhello\r\n", http.StatusBadRequest},
		{"ICE restart", c.location, c.etag, mimeTrickleICE, strings.Replace(frag, "%s", "otherufrag", 1), http.StatusUnprocessableEntity},
		{"candidate", c.location, c.etag, mimeTrickleICE, "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n", http.StatusNoContent},
		{"end of candidates", c.location, "", mimeTrickleICE, "a=end-of-candidates\r\n", http.StatusNoContent},
	} {
		if got := patch(tc.location, tc.etag, tc.contentType, tc.body); got != tc.want {
			t.Errorf("PATCH %s: %d, want %d", tc.name, got, tc.want)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost} {
		req, _ := http.NewRequest(m, base+c.location, nil)
		if resp, _ := do(t, req); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s session: %s", m, resp.Status)
		}
	}
	// 5000 PATCHes: the budget counts every PATCH that reached the session
	// past the ETag and type checks (4 above), then 429.
	ok, limited, first429 := 0, 0, -1
	for i := range 5000 {
		switch got := patch(c.location, c.etag, mimeTrickleICE, "a=end-of-candidates\r\n"); got {
		case http.StatusNoContent:
			ok++
		case http.StatusTooManyRequests:
			if first429 < 0 {
				first429 = i
			}
			limited++
		default:
			t.Fatalf("PATCH %d: %d", i, got)
		}
	}
	if ok != maxPatches-4 || limited != 5000-ok {
		t.Errorf("PATCH flood: %d accepted, %d refused with 429", ok, limited)
	}
	testutil.Report(t, "PATCH flood: 5000 sent, %d accepted, 429 from number %d on", ok, first429)

	before := col.count(0)
	testutil.Eventually(t, 10*time.Second, "media after the PATCH flood", func() bool { return col.count(0) >= before+20 })
	if got := c.delete(); got != http.StatusOK {
		t.Fatalf("DELETE: %d", got)
	}
	<-col.done
	if err := col.sess.Err(); err != nil {
		t.Fatalf("the session ended with %v", err)
	}
	if got := c.delete(); got != http.StatusNotFound {
		t.Errorf("second DELETE: %d, want 404", got)
	}
	checkMonotonic(t, col.snapshot())
}

// A session whose publisher never connects ends with an error, and Close
// ends every session and waits for it.
func TestCloseEndsSessions(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHandler(t)
	srv, base := startServer(t, h)
	c := newClient(t)
	c.addSample(h264Capability, "video")
	// POST without ever applying the answer: the session waits for ICE.
	offer := c.offer()
	resp, body := post(t, base+"/whip/idle", "secret", "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	col := h.last()
	srv.Close()
	select {
	case <-col.sess.Done():
	default:
		t.Fatal("Close returned before the session ended")
	}
	if !errors.Is(col.sess.Err(), ErrClosed) {
		t.Fatalf("session error %v, want ErrClosed", col.sess.Err())
	}
	if resp, _ := post(t, base+"/whip/idle", "secret", "application/sdp", offer); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST after Close: %s", resp.Status)
	}
}
