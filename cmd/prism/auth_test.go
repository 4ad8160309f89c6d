package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/internal/testutil"
)

const (
	adminToken  = "admin-token-0123456789"
	readerToken = "reader-token-0123456789"
	jwtSecret   = "a-shared-secret-of-at-least-thirty-two-bytes"
)

// authNode starts a node with API tokens, an HS256 key and two streams:
// "signedcam" (play: signed) and "opencam" (public).
func authNode(t *testing.T, addr string) *nodeProcess {
	t.Helper()
	ladder := writeFile(t, t.TempDir(), "tiny.yaml", tinyJobLadder)
	input := tinyJob("x").Input
	cfg := fmt.Sprintf(`auth:
  tokens:
    - {token: %s, name: admin}
    - {token: %s, name: reader, actions: [api.read]}
  jwt:
    hs256_secret: %q
streams:
  - {name: signedcam, input: %q, ladder: %s, play: signed}
  - {name: opencam, input: %q, ladder: %s}
`, adminToken, readerToken, jwtSecret, input, ladder, input, ladder)
	n := startNodeOn(t, addr, "authnode", "", cfg)
	testutil.Eventually(t, 30*time.Second, "both streams on LL-HLS", func() bool {
		a, _ := request(t, "GET", n.base+"/hls/opencam/index.m3u8", "", "")
		b, _ := request(t, "GET", n.base+"/hls/signedcam/index.m3u8", adminToken, "")
		return a == 200 && b == 200
	})
	return n
}

func mint(t *testing.T, c auth.Claims) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(jwtSecret), c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// request sends one request with an optional bearer credential and body
// (sent as application/json, or as application/sdp to /whep/).
func request(t *testing.T, method, url, bearer, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	switch {
	case strings.Contains(url, "/whep/"):
		req.Header.Set("Content-Type", "application/sdp")
	case method != http.MethodGet:
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAuthMatrix: every guarded endpoint against no credential, a wrong
// one, an expired JWT, a JWT for another stream, one without the action,
// and the right one.
func TestAuthMatrix(t *testing.T) {
	n := authNode(t, freePort(t))
	hour := time.Now().Add(time.Hour).Unix()
	expired := mint(t, auth.Claims{ExpiresAt: time.Now().Add(-time.Hour).Unix(), Streams: []string{"signedcam"}})
	otherStream := mint(t, auth.Claims{ExpiresAt: hour, Streams: []string{"opencam"}})
	playSigned := mint(t, auth.Claims{ExpiresAt: hour, Streams: []string{"signedcam"}, Actions: []auth.Action{auth.ActionPlay}})
	const wrong = "wrong-token-0123456789"
	const bogusSDP = "v=0\r\n"
	type endpoint struct{ method, path, body string }
	var (
		listJobs  = endpoint{"GET", "/api/v1/jobs", ""}
		getJob    = endpoint{"GET", "/api/v1/jobs/signedcam", ""}
		submit    = endpoint{"POST", "/api/v1/jobs", `{"id":"x"}`}
		stopJob   = endpoint{"POST", "/api/v1/jobs/nosuch/stop", ""}
		streams   = endpoint{"GET", "/api/v1/streams", ""}
		metrics   = endpoint{"GET", "/metrics", ""}
		whepSign  = endpoint{"POST", "/whep/signedcam", bogusSDP}
		hlsSign   = endpoint{"GET", "/hls/signedcam/index.m3u8", ""}
		whepOpen  = endpoint{"POST", "/whep/opencam", bogusSDP}
		hlsOpen   = endpoint{"GET", "/hls/opencam/index.m3u8", ""}
		healthz   = endpoint{"GET", "/healthz", ""}
		player    = endpoint{"GET", "/", ""}
		endpoints = []endpoint{listJobs, getJob, submit, stopJob, streams, metrics, whepSign, hlsSign, whepOpen, hlsOpen, healthz, player}
	)
	// Answers once past authorization: the bogus offer is refused by WHEP
	// itself (400), the bad spec by the API (400), the unknown job 404.
	past := map[endpoint]int{listJobs: 200, getJob: 200, submit: 400, stopJob: 404, streams: 200, metrics: 200,
		whepSign: 400, hlsSign: 200, whepOpen: 400, hlsOpen: 200, healthz: 200, player: 200}
	public := map[endpoint]bool{whepOpen: true, hlsOpen: true, healthz: true, player: true}
	for _, c := range []struct {
		name, cred string
		want       func(e endpoint) int
	}{
		{"no credential", "", func(e endpoint) int { return 401 }},
		{"wrong token", wrong, func(e endpoint) int { return 401 }},
		{"expired JWT", expired, func(e endpoint) int { return 401 }},
		{"another stream's JWT", otherStream, func(e endpoint) int {
			switch e {
			case listJobs, streams:
				return 200 // filtered to what it may see
			case submit, metrics, getJob, stopJob, whepSign, hlsSign:
				return 403
			}
			return past[e]
		}},
		{"read-only token", readerToken, func(e endpoint) int {
			switch e {
			case submit, stopJob, metrics, whepSign, hlsSign:
				return 403
			}
			return past[e]
		}},
		{"play JWT", playSigned, func(e endpoint) int {
			switch e {
			case whepSign, hlsSign:
				return past[e]
			}
			return 403
		}},
		{"admin token", adminToken, func(e endpoint) int { return past[e] }},
	} {
		for _, e := range endpoints {
			want := c.want(e)
			if public[e] {
				want = past[e] // public endpoints ignore credentials
			}
			code, body := request(t, e.method, n.base+e.path, c.cred, e.body)
			t.Logf("%-22s %-4s %-28s -> %d", c.name, e.method, e.path, code)
			if code != want {
				t.Errorf("%s: %s %s = %d %s, want %d", c.name, e.method, e.path, code, strings.TrimSpace(body), want)
			}
			if c.cred != "" && strings.Contains(body, c.cred) {
				t.Errorf("%s: %s %s echoes the credential", c.name, e.method, e.path)
			}
		}
	}
	// The list a stream-limited credential gets holds only its stream.
	if _, body := request(t, "GET", n.base+"/api/v1/jobs", otherStream, ""); strings.Contains(body, "signedcam") || !strings.Contains(body, "opencam") {
		t.Errorf("job list for an opencam token: %s", body)
	}
	// Refusals are counted, per action.
	if _, body := request(t, "GET", n.base+"/metrics", adminToken, ""); !strings.Contains(body, `prism_auth_refused_total{action="play"}`) {
		t.Error("no prism_auth_refused_total in /metrics")
	}
	testutil.Report(t, "auth matrix: %d endpoints x 7 credentials answered as expected (401 no/wrong/expired, 403 other stream or action)", len(endpoints))
}

// TestSignedHLSCarriesTheToken: a player given a signed multivariant URL
// fetches everything below it with the token it carries; without it, 401.
func TestSignedHLSCarriesTheToken(t *testing.T) {
	n := authNode(t, freePort(t))
	// Minted as the README shows, with prism token.
	code, out, errOut := prism(t, "token", "--secret", jwtSecret, "--streams", "signedcam", "--actions", "play", "--ttl", "10m")
	if code != 0 {
		t.Fatalf("prism token: %d %s", code, errOut)
	}
	tok := strings.TrimSpace(out)
	base := n.base + "/hls/signedcam/"
	code, index := request(t, "GET", base+"index.m3u8?token="+tok, "", "")
	if code != 200 {
		t.Fatalf("signed index: %d %s", code, index)
	}
	var variant string
	for _, line := range strings.Split(index, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			variant = line
			break
		}
	}
	if !strings.Contains(variant, "token=") {
		t.Fatalf("variant URI %q does not carry the token", variant)
	}
	code, media := request(t, "GET", base+variant, "", "")
	if code != 200 {
		t.Fatalf("media playlist with the carried token: %d %s", code, media)
	}
	var part string
	for _, line := range strings.Split(media, "\n") {
		if _, rest, ok := strings.Cut(line, `URI="`); ok && strings.HasPrefix(line, "#EXT-X-PART:") {
			part, _, _ = strings.Cut(rest, `"`)
		}
	}
	if !strings.Contains(part, "token=") {
		t.Fatalf("part URI %q does not carry the token", part)
	}
	partURL := base + filepath.Dir(strings.SplitN(variant, "?", 2)[0]) + "/" + part
	if code, _ := request(t, "GET", partURL, "", ""); code != 200 {
		t.Fatalf("part with the carried token: %d", code)
	}
	noToken := strings.SplitN(partURL, "?", 2)[0]
	if code, _ := request(t, "GET", noToken, "", ""); code != 401 {
		t.Fatalf("part without a token: %d, want 401", code)
	}
}

// TestDefaultAPIIsLoopbackOnly: with no authentication configured, a
// client on another address (in a network namespace of its own) gets 401
// from the API and /metrics, while public playback works for it; a
// loopback request naming another host (DNS rebinding) gets 401 too.
func TestDefaultAPIIsLoopbackOnly(t *testing.T) {
	ns := testutil.StartNetNS(t)
	port := freePort(t)
	_, p, _ := net.SplitHostPort(port)
	n := startNodeOn(t, "0.0.0.0:"+p, "open", "", "")
	if code, body := n.post("/api/v1/jobs", tinyJob("cam")); code != 201 {
		t.Fatalf("submit from loopback: %d %s", code, body)
	}
	remote := "http://" + net.JoinHostPort(ns.HostIP, p)
	curl := func(path string) string {
		out, err := ns.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", remote+path).Output()
		if err != nil {
			t.Logf("curl %s: %v", path, err)
		}
		return string(out)
	}
	testutil.Eventually(t, 30*time.Second, "the public stream playing from the other address", func() bool {
		return curl("/hls/cam/index.m3u8") == "200"
	})
	for path, want := range map[string]string{"/api/v1/jobs": "401", "/api/v1/streams": "401", "/metrics": "401", "/healthz": "200", "/": "200"} {
		if got := curl(path); got != want {
			t.Errorf("GET %s from %s: %s, want %s", path, ns.PeerIP, got, want)
		}
	}
	req, _ := http.NewRequest("GET", n.base+"/api/v1/jobs", nil)
	req.Host = "rebound.example:" + p
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("loopback with Host rebound.example: %d, want 401", resp.StatusCode)
	}
	if code, _ := n.get("/api/v1/jobs"); code != 200 {
		t.Errorf("loopback API: %d, want 200", code)
	}
}

// TestAPIInputPolicy: what a job submitted over the API may read. Every
// refusal is a 400 naming the rule, answered at once (no file is read,
// no address dialled).
func TestAPIInputPolicy(t *testing.T) {
	n := startNode(t, "policy", "  capacity: -1\n", "inputs:\n  allow_lavfi: false\n")
	for _, c := range []struct{ name, body, want string }{
		{"ladder path (a file oracle)", `{"id":"a","input":"rtmp://192.0.2.1/live/x","ladder":"/dev/zero"}`, "file path is not accepted"},
		{"lavfi", `{"id":"b","input":"lavfi:testsrc2","ladder":"default"}`, "allow_lavfi"},
		{"local file", `{"id":"c","input":"/etc/passwd","ladder":"default"}`, "allow_files"},
		{"listening socket", `{"id":"d","input":"tcp://0.0.0.0:9000?listen=1","ladder":"default"}`, "scheme"},
		{"rtmp listen", `{"id":"e","input":"rtmp://0.0.0.0/live/x?listen=1","ladder":"default"}`, "listen"},
		{"metadata address", `{"id":"f","input":"http://169.254.169.254/latest/meta-data","ladder":"default"}`, "denied range"},
		{"concat", `{"id":"g","input":"concat:/etc/passwd|/etc/hosts","ladder":"default"}`, "scheme"},
		{"WHIP target at the metadata address", `{"id":"h","input":"rtmp://192.0.2.1/live/x","ladder":"default","publish":[{"url":"http://169.254.169.254/whip"}]}`, "denied range"},
		{"huge inline ladder", `{"id":"i","input":"rtmp://192.0.2.1/live/x","ladder_yaml":"` + strings.Repeat("#", 70<<10) + `"}`, "max_ladder_yaml"},
	} {
		start := time.Now()
		code, body := request(t, "POST", n.base+"/api/v1/jobs", "", c.body)
		if code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want 400 naming %q", c.name, code, strings.TrimSpace(body), c.want)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: answered after %s", c.name, d)
		}
	}
	if code, body := request(t, "POST", n.base+"/api/v1/jobs", "", `{"id":"ok","input":"rtmp://192.0.2.1/live/x","ladder":"default"}`); code != 201 {
		t.Errorf("an allowed input: %d %s", code, body)
	}
	// A form post (text/plain) cannot submit: no CSRF from a web page.
	resp, err := http.Post(n.base+"/api/v1/jobs", "text/plain", strings.NewReader(`{"id":"csrf","input":"rtmp://192.0.2.1/x","ladder":"default"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain submission: %d, want 415", resp.StatusCode)
	}
}

// TestEndedJobKeepsItsSpec: a stopped job's id cannot be taken over by
// another spec (another input under the same stream name) without an
// explicit replace.
func TestEndedJobKeepsItsSpec(t *testing.T) {
	n := startNode(t, "keeper", "  capacity: -1\n", "")
	first := `{"id":"cam","input":"rtmp://192.0.2.1/live/a","ladder":"default"}`
	other := `{"id":"cam","input":"rtmp://192.0.2.66/live/evil","ladder":"default"}`
	if code, body := request(t, "POST", n.base+"/api/v1/jobs", "", first); code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	if code, body := request(t, "POST", n.base+"/api/v1/jobs/cam/stop", "", ""); code != 200 {
		t.Fatalf("stop: %d %s", code, body)
	}
	if code, body := request(t, "POST", n.base+"/api/v1/jobs", "", other); code != 409 {
		t.Errorf("another spec under a stopped job's id: %d %s, want 409", code, body)
	}
	if code, body := request(t, "POST", n.base+"/api/v1/jobs?replace=true", "", other); code != 201 || !strings.Contains(body, "192.0.2.66") {
		t.Errorf("explicit replace: %d %s", code, body)
	}
}
