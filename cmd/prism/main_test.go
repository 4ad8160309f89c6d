package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/internal/node"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// prismBin is the binary under test, built once: these tests run prism as a
// user does, checking exit codes and output.
var prismBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "prism-cli")
	if err != nil {
		panic(err)
	}
	prismBin = filepath.Join(dir, "prism")
	if out, err := exec.Command("go", "build", "-o", prismBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building prism: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// prism runs the binary and returns its exit code, stdout and stderr.
func prism(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(prismBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "panic:") || strings.Contains(stderr.String(), "goroutine ") {
		t.Fatalf("prism %v panicked:\n%s", args, stderr.String())
	}
	return code, stdout.String(), stderr.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const smallLadder = `name: small
rungs:
  - {name: 180p, height: 180, bitrate: 300k, preset: ultrafast}
  - {name: 90p, height: 90, bitrate: 100k, preset: ultrafast}
`

func TestLadderValidate(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", smallLadder)
	typo := writeFile(t, dir, "typo.yaml", "name: x\nrungs:\n  - name: a\n    height: 180\n    bitrate: 300k\n    presett: fast\n")
	negative := writeFile(t, dir, "neg.yaml", "name: x\nrungs:\n  - name: a\n    height: 180\n    bitrate: -300k\n")

	if code, out, _ := prism(t, "ladder", "validate", good, "../../deploy/ladders/default.yaml"); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("valid ladders: exit %d, %s", code, out)
	}
	code, _, errOut := prism(t, "ladder", "validate", good, typo, negative)
	if code != 1 {
		t.Errorf("invalid ladders: exit %d, want 1", code)
	}
	for _, want := range []string{
		typo + `:6: rungs[0].presett: unknown field (did you mean "preset"?)`,
		negative + `:5: rungs[0].bitrate: invalid bitrate "-300k": must not be negative`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
	if code, _, _ := prism(t, "ladder", "validate"); code != 2 {
		t.Errorf("no files: exit %d, want 2", code)
	}
}

func TestTranscodeWritesOneFilePerRung(t *testing.T) {
	dir := t.TempDir()
	l := writeFile(t, dir, "l.yaml", smallLadder)
	out := filepath.Join(dir, "out")
	code, stdout, stderr := prism(t, "transcode", "--input",
		"lavfi:testsrc2=size=320x180:rate=30[out0];sine=sample_rate=48000[out1]",
		"--ladder", l, "--output-dir", out, "--duration", "2s")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, f := range []string{"180p.mp4", "90p.mp4", "audio_aac.mp4", "audio_opus.mp4"} {
		p := testutil.FFprobe(t, filepath.Join(out, f), false)
		if d := testutil.F(t, p.Format.Duration); d < 1.9 || d > 2.1 {
			t.Errorf("%s: duration %.3f, want 2s", f, d)
		}
	}
	if !strings.Contains(stdout, "180p") || !strings.Contains(stdout, "kbit/s") {
		t.Errorf("no per-rung summary:\n%s", stdout)
	}
}

// TestTranscodeTakesACPUShare: --cpus 3 plans the encoders' threads by
// pixel rate over 3 cores (180p 4/5, 90p 1/5, at least one) and sets the
// process's GOMAXPROCS to the share rounded up (no more than its CPUs);
// a negative share is a usage error.
func TestTranscodeTakesACPUShare(t *testing.T) {
	dir := t.TempDir()
	l := writeFile(t, dir, "l.yaml", smallLadder)
	code, _, stderr := prism(t, "transcode", "--input", "lavfi:testsrc2=size=320x180:rate=30",
		"--ladder", l, "--output-dir", filepath.Join(dir, "out"), "--duration", "1s", "--cpus", "3")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	procs := fmt.Sprintf("gomaxprocs=%d", min(3, runtime.NumCPU()))
	for _, want := range []string{"cpu_share=3", `encoder_threads="[2 1]"`, procs} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no %s in the log:\n%s", want, stderr)
		}
	}
	if code, _, _ := prism(t, "transcode", "--input", "lavfi:testsrc2", "--ladder", l, "--output-dir", dir, "--cpus", "-1"); code != 2 {
		t.Errorf("--cpus -1: exit %d, want 2", code)
	}
}

func TestTranscodeBadInput(t *testing.T) {
	dir := t.TempDir()
	l := writeFile(t, dir, "l.yaml", smallLadder)
	empty := writeFile(t, dir, "empty.mp4", "")
	random := writeFile(t, dir, "random.ts", strings.Repeat("\x47\x13garbage", 20000))
	typo := writeFile(t, dir, "typo.yaml", "name: x\nrungz: []\n")
	big := writeFile(t, dir, "big.yaml", "name: x\nrungs:\n  - {name: a, height: 720, bitrate: 2M}\n  - {name: b, height: 90, bitrate: 100k, preset: ultrafast}\n")
	tooBig := writeFile(t, dir, "toobig.yaml", "name: x\nrungs:\n  - {name: a, height: 720, bitrate: 2M}\n")
	lavfi := "lavfi:testsrc2=size=320x180:rate=30"
	for _, ca := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"missing file", []string{"--input", filepath.Join(dir, "nope.mp4"), "--ladder", l}, 1, "no such file or directory"},
		{"empty file", []string{"--input", empty, "--ladder", l}, 1, "file is empty"},
		{"random bytes", []string{"--input", random, "--ladder", l}, 1, "prism: "},
		{"typo'd ladder key", []string{"--input", lavfi, "--ladder", typo}, 1, typo + `:2: rungz: unknown field (did you mean "rungs"?)`},
		{"rung larger than the source is skipped", []string{"--input", lavfi, "--ladder", big, "--duration", "1s"}, 0, "larger than the 320x180 source"},
		{"every rung larger than the source", []string{"--input", lavfi, "--ladder", tooBig}, 1, "every rung is larger than the 320x180 source"},
		{"missing flags", []string{"--input", lavfi}, 2, "--output-dir"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			args := append([]string{"transcode", "--output-dir", filepath.Join(dir, "o")}, ca.args...)
			if ca.name == "missing flags" {
				args = append([]string{"transcode"}, ca.args...)
			}
			code, _, stderr := prism(t, args...)
			if code != ca.wantCode || !strings.Contains(stderr, ca.want) {
				t.Errorf("exit %d (want %d), stderr:\n%s\nwant it to contain %q", code, ca.wantCode, stderr, ca.want)
			}
		})
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	return testutil.FreeAddr(t)
}

// TestServeDemo runs `prism serve --demo` as a user would: it serves, the
// demo ladder runs at real time, stats are printed, SIGTERM stops it cleanly.
func TestServeDemo(t *testing.T) {
	addr := freePort(t)
	cmd := exec.Command(prismBin, "serve", "--demo", "--http", addr, "--stats-interval", "1s", "--data-dir", t.TempDir(), "--webrtc-port", "0", "--rtmp", freePort(t), "--srt", "127.0.0.1:0",
		"--demo-input", "lavfi:testsrc2=size=640x360:rate=30[out0];sine=sample_rate=48000[out1]")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }() // usually gone already after the SIGTERM below
	base := "http://" + addr
	get := func(path string) (int, []byte) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		if _, err := b.ReadFrom(resp.Body); err != nil {
			return 0, nil
		}
		return resp.StatusCode, b.Bytes()
	}
	testutil.Eventually(t, 10*time.Second, "/readyz", func() bool { c, _ := get("/readyz"); return c == 200 })
	if c, _ := get("/healthz"); c != 200 {
		t.Errorf("/healthz: %d", c)
	}
	if c, _ := get("/nope"); c != 404 {
		t.Errorf("unknown path: %d, want 404", c)
	}
	if c, _ := get("/api/v1/streams/nope"); c != 404 {
		t.Errorf("unknown stream: %d, want 404", c)
	}
	// The node follows the stream's media once it is watched (node.follow:
	// on_demand): a player's request makes it, and each one keeps it.
	if c, body := get("/api/v1/streams/demo"); c != 200 || !strings.Contains(string(body), `"state": "running"`) {
		t.Errorf("/api/v1/streams/demo before any viewer: %d %s", c, body)
	}
	// Every track keeps producing at about the source rate.
	testutil.Eventually(t, 20*time.Second, "3 s of demo media on every track", func() bool {
		get("/hls/demo/index.m3u8")
		_, body := get("/api/v1/streams/demo")
		var info api.StreamInfo
		if json.Unmarshal(body, &info) != nil || info.State != "running" || info.Stats.MediaTime < 3*time.Second {
			return false
		}
		for _, tr := range info.Stats.Tracks {
			if tr.Frames == 0 || tr.Track == "360p" && tr.Keyframes == 0 {
				return false
			}
		}
		// The job's keyframe budget counts the serving side's requests
		// (the HLS output following the stream asks for one on joining).
		if info.Stats.Keyframes.Requests[pipeline.KeyframeFollower] == 0 {
			return false
		}
		// The default ladder on a 640x360 source: 360p (larger rungs skipped), AAC, Opus.
		return len(info.Stats.Tracks) == 3
	})
	// Stage statistics come from the worker process over NATS.
	if c, body := get("/metrics"); c != 200 || !strings.Contains(string(body), `prism_track_fps{stream="demo",track="360p"}`) ||
		!strings.Contains(string(body), `prism_stage_latency_seconds{quantile="0.95",stage="encode-360p",stream="demo"}`) ||
		!strings.Contains(string(body), `prism_hls_part_latency_seconds{quantile="0.95",stream="demo"}`) ||
		!strings.Contains(string(body), `prism_keyframe_requests_total{reason="follower",stream="demo"}`) ||
		!strings.Contains(string(body), `prism_track_keyframes_total{stream="demo",track="360p"}`) ||
		!strings.Contains(string(body), `prism_keyframes_forced_total{stream="demo"}`) ||
		!strings.Contains(string(body), `prism_relay_received_bytes_total{stream="demo"}`) ||
		!strings.Contains(string(body), "prism_relay_followed_streams 1") {
		t.Errorf("/metrics: %d\n%s", c, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10 s of SIGTERM")
	}
	out := stdout.String()
	for _, want := range []string{`stream "demo" submitted`, `stream "demo" is running`, "360p", "fps", "kbit/s", "shutting down",
		"RTMP ingest on", "SRT ingest on UDP", "WHIP ingest at"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", "http:\n  adress: x\n")
	badLadder := writeFile(t, dir, "badladder.yaml", "streams:\n  - {name: a, input: x, ladder: nosuch}\n")
	if code, out, errOut := prism(t, "config", "validate", "../../deploy/prism.yaml"); code != 0 {
		t.Errorf("shipped config: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut := prism(t, "config", "validate", bad, badLadder)
	if code != 1 || !strings.Contains(errOut, bad+`:2: http.adress: unknown field "adress"`) ||
		!strings.Contains(errOut, badLadder+`: streams[0].ladder: ladders: no built-in ladder "nosuch"`) {
		t.Errorf("exit %d:\n%s", code, errOut)
	}
	// serve refuses a bad configuration with the same message, exit 1.
	if code, _, errOut := prism(t, "serve", "--config", bad); code != 1 || !strings.Contains(errOut, "unknown field") {
		t.Errorf("serve with bad config: exit %d\n%s", code, errOut)
	}
}

// TestServeRestartsEndedStream: a configured stream whose input ends is
// started again, as a live source that drops and comes back.
func TestServeRestartsEndedStream(t *testing.T) {
	dir := t.TempDir()
	// Followed from the start: restarts are counted by the follower.
	cfg := writeFile(t, dir, "prism.yaml", `node:
  follow: always
streams:
  - name: short
    input: "lavfi:testsrc2=size=160x90:rate=30:duration=1"
    ladder: `+writeFile(t, dir, "l.yaml", smallLadder)+`
`)
	addr := freePort(t)
	cmd := exec.Command(prismBin, "serve", "--config", cfg, "--http", addr, "--data-dir", t.TempDir(), "--webrtc-port", "0", "--rtmp", "off", "--srt", "off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT) // a failure shows in the Wait below
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit after SIGINT: %v\n%s", err, stderr.String())
		}
	}()
	testutil.Eventually(t, 20*time.Second, "the stream restarted twice", func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/streams/short")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var info api.StreamInfo
		return json.NewDecoder(resp.Body).Decode(&info) == nil && info.Restarts >= 2
	})
}

// TestPlayerPage opens the player page of `prism serve --demo` in headless
// Chromium: the WebRTC player decodes video and audio, hls.js plays the
// LL-HLS ladder with every rung as a level.
func TestPlayerPage(t *testing.T) {
	addr := freePort(t)
	srv := exec.Command(prismBin, "serve", "--demo", "--http", addr, "--data-dir", t.TempDir(), "--webrtc-port", "0", "--rtmp", "off", "--srt", "off",
		"--stats-interval", "0", "--demo-input", "lavfi:testsrc2=size=854x480:rate=30[out0];sine=sample_rate=48000[out1]")
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	testutil.Eventually(t, 20*time.Second, "the demo stream", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	reports := make(chan map[string]any, 2)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		if r.Method == http.MethodPost {
			var rep map[string]any
			if json.NewDecoder(r.Body).Decode(&rep) == nil {
				rep["from"] = r.URL.Query().Get("from")
				reports <- rep
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer collector.Close()
	testutil.StartBrowser(t, "http://"+addr+"/?stream=demo&report="+collector.URL+"/report")
	got := map[string]map[string]any{}
	timeout := time.After(60 * time.Second)
	for len(got) < 2 {
		select {
		case rep := <-reports:
			got[rep["from"].(string)] = rep
		case <-timeout:
			t.Fatalf("reports so far: %v\nserver log:\n%s", got, srvErr.String())
		}
	}
	t.Logf("webrtc: video %v audio %v", got["webrtc"]["video"], got["webrtc"]["audio"])
	video, _ := got["webrtc"]["video"].(map[string]any)
	audio, _ := got["webrtc"]["audio"].(map[string]any)
	testutil.Report(t, "player page in Chromium: WebRTC %.1f fps at %vx%v; hls.js %v levels, %v frames decoded, glass-to-glass %v s",
		video["fps"], video["width"], video["height"], got["hls"]["levels"], got["hls"]["decodedFrames"], got["hls"]["latency"])
	if video == nil || video["frames_decoded"].(float64) < 100 || audio == nil || audio["packets_received"].(float64) < 100 {
		t.Errorf("WebRTC did not play: %v", got["webrtc"])
	}
	// The default ladder on an 854x480 source: 480p and 360p.
	if got["hls"]["levels"].(float64) != 2 || got["hls"]["decodedFrames"].(float64) < 100 || len(got["hls"]["errors"].([]any)) > 0 {
		t.Errorf("LL-HLS did not play every rung: %v", got["hls"])
	}
}

// TestServeTLSSpeaksHTTP2: with a certificate configured the service answers
// HTTPS with HTTP/2, which LL-HLS players expect.
func TestServeTLSSpeaksHTTP2(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert := writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile := writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cfg := writeFile(t, dir, "prism.yaml", "http:\n  tls_cert: "+cert+"\n  tls_key: "+keyFile+"\n")
	addr := freePort(t)
	cmd := exec.Command(prismBin, "serve", "--config", cfg, "--http", addr, "--data-dir", dir, "--webrtc-port", "0", "--rtmp", "off", "--srt", "off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	var proto string
	testutil.Eventually(t, 20*time.Second, "an HTTPS answer", func() bool {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		proto = resp.Proto
		return resp.StatusCode == 200
	})
	if proto != "HTTP/2.0" {
		t.Errorf("protocol %s, want HTTP/2.0", proto)
	}
}

// TestBenchCalibratesCapacity: prism bench --calibrate saves the measured
// pixel rate, and a node started on that data directory offers it.
func TestBenchCalibratesCapacity(t *testing.T) {
	dir := t.TempDir()
	clip := testutil.TestClip(t, dir, 320, 180, 30, 2)
	l := writeFile(t, dir, "l.yaml", smallLadder)
	data := filepath.Join(dir, "data")
	code, out, errOut := prism(t, "bench", "--input", clip, "--ladder", l, "--calibrate", data)
	if code != 0 || !strings.Contains(out, "capacity") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	saved, err := node.LoadCapacity(data)
	if err != nil || saved <= 0 {
		t.Fatalf("calibration: %v %v", saved, err)
	}
	addr := freePort(t)
	cmd := exec.Command(prismBin, "serve", "--http", addr, "--data-dir", data, "--webrtc-port", "0", "--rtmp", "off", "--srt", "off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	testutil.Eventually(t, 20*time.Second, "the node offering its calibrated capacity", func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/nodes")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var nodes []struct {
			CPUBudget float64 `json:"cpu_budget"`
		}
		return json.NewDecoder(resp.Body).Decode(&nodes) == nil && len(nodes) == 1 && nodes[0].CPUBudget == saved
	})
	testutil.Report(t, "calibrated capacity on this machine (tiny ladder): %.3g pixels/s", saved)
}
