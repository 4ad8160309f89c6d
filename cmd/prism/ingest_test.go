package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/jobs"
)

const publishKey = "0123456789abcdef-cam-key"

// freeUDPPort is a UDP port free now on loopback.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// ingestNode starts a node with RTMP and SRT listeners on free ports, a
// publish key for "cam" and "srtcam", the tiny ladder for pushed streams and
// a short grace period.
func ingestNode(t *testing.T, name, nodeConfig, extra string) (n *nodeProcess, rtmpAddr, srtAddr string) {
	t.Helper()
	ladder := writeFile(t, t.TempDir(), "tiny.yaml", tinyJobLadder)
	rtmpAddr, srtAddr = freePort(t), freeUDPPort(t)
	cfg := fmt.Sprintf(`auth:
  tokens:
    - {token: %s, name: admin}
  jwt:
    hs256_secret: %q
  publish_keys:
    cam: %s
    srtcam: %s-srt
    webcam: %s-web
    hevccam: %s-hevc
    takecam: %s-take
    relaycam: %s-relay
ingest:
  rtmp: %q
  srt: %q
  grace: 4s
  ladder: %s
  streams:
    - {name: takecam, takeover: newest}
%s`, adminToken, jwtSecret, publishKey, publishKey, publishKey, publishKey, publishKey, publishKey, rtmpAddr, srtAddr, ladder, extra)
	return startNode(t, name, nodeConfig, cfg), rtmpAddr, srtAddr
}

// publisher is the FFmpeg CLI pushing a lavfi test source (H.264 + AAC, or
// another video codec) in real time.
type publisher struct {
	cmd    *exec.Cmd
	stderr testutil.SyncBuffer
	done   chan error
}

func startPublisher(t *testing.T, seconds int, vcodec []string, format, url string) *publisher {
	t.Helper()
	return startPublisherSized(t, "640x360", seconds, vcodec, format, url)
}

func startPublisherSized(t *testing.T, size string, seconds int, vcodec []string, format, url string) *publisher {
	t.Helper()
	args := []string{"-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(seconds)}
	args = append(args, vcodec...)
	args = append(args, "-c:a", "aac", "-b:a", "64k", "-f", format, url)
	p := &publisher{cmd: exec.Command(testutil.Tool(t, "ffmpeg"), args...), done: make(chan error, 1)}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }() // owned by the test: waited for in stop
	t.Cleanup(p.stop)
	return p
}

var x264 = []string{"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-b:v", "800k"}

func (p *publisher) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-p.done:
		p.done <- err // exitWithin may read it again
	case <-time.After(5 * time.Second):
	}
}

// exitWithin returns the publisher's exit error and true if it ended in d.
func (p *publisher) exitWithin(d time.Duration) (ended bool, err error) {
	select {
	case err := <-p.done:
		p.done <- err // stop may read it again
		return true, err
	case <-time.After(d):
		return false, nil
	}
}

// streamInfo reads /api/v1/streams/<name> with the admin token.
// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func streamInfo(t *testing.T, n *nodeProcess, name string) (api.StreamInfo, bool) {
	code, body := request(t, "GET", n.base+"/api/v1/streams/"+name, adminToken, "")
	var s api.StreamInfo
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil {
		return s, false
	}
	return s, true
}

// hlsRungPlaylist is the first rung's LL-HLS media playlist, or "".
func hlsRungPlaylist(n *nodeProcess, stream string) string {
	code, body := n.get("/hls/" + stream + "/index.m3u8")
	if code != 200 {
		return ""
	}
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasSuffix(l, ".m3u8") && !strings.HasPrefix(l, "#") {
			if code, body := n.get("/hls/" + stream + "/" + l); code == 200 {
				return string(body)
			}
			break
		}
	}
	return ""
}

// workerPID is the worker process of a job on n, or 0.
func workerPID(t *testing.T, n *nodeProcess, id string) int {
	code, body := request(t, "GET", n.base+"/api/v1/jobs/"+id, adminToken, "")
	var j api.JobInfo
	if code != 200 || json.Unmarshal([]byte(body), &j) != nil {
		return 0
	}
	return j.WorkerPID
}

// probeHLS runs ffprobe on a stream's LL-HLS multivariant playlist and
// returns the video sizes it found.
func probeHLS(t *testing.T, n *nodeProcess, stream string) []string {
	t.Helper()
	out, err := exec.Command(testutil.Tool(t, "ffprobe"), "-v", "error", "-rw_timeout", "10000000", "-show_entries", "stream=codec_name,width,height",
		"-of", "csv=p=0", n.base+"/hls/"+stream+"/index.m3u8").Output()
	if err != nil {
		t.Logf("ffprobe %s: %v", stream, err)
	}
	// The variants, each listed once (ffprobe shows a variant per audio
	// rendition), largest first.
	var sizes []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if s, ok := strings.CutPrefix(l, "h264,"); ok && !slices.Contains(sizes, s) {
			sizes = append(sizes, s)
		}
	}
	slices.SortFunc(sizes, func(a, b string) int { return len(b) - len(a) })
	return sizes
}

// TestPushRTMPAndSRT: the FFmpeg CLI publishes over RTMP and over SRT; each
// stream becomes a job on the ingest ladder and plays over LL-HLS (ffprobe)
// and WHEP (pion). A publisher that drops and comes back within the grace
// period resumes the same job with the viewer's session intact; a wrong
// key and a second publisher are refused.
func TestPushRTMPAndSRT(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	n, rtmpAddr, srtAddr := ingestNode(t, "pushnode", "", "")
	rtmpURL := "rtmp://" + rtmpAddr + "/live/cam?key=" + publishKey

	pub := startPublisher(t, 60, x264, "flv", rtmpURL)
	var info api.StreamInfo
	testutil.Eventually(t, 30*time.Second, "the pushed stream running with media", func() bool {
		var ok bool
		info, ok = streamInfo(t, n, "cam")
		return ok && info.State == string(jobs.StateRunning) && info.Stats.MediaTime > time.Second && info.Publisher != nil
	})
	if info.Publisher.Protocol != "rtmp" || info.Job == nil || info.Job.Spec.Input != "ingest://cam" {
		t.Fatalf("stream info: publisher %+v, job %+v", info.Publisher, info.Job)
	}
	if sizes := probeHLS(t, n, "cam"); len(sizes) != 2 || sizes[0] != "320,180" {
		t.Errorf("LL-HLS of the RTMP push: video %v, want the tiny ladder (320,180 and 160,90)", sizes)
	}
	viewer := testutil.StartWHEPViewer(t, n.base+"/whep/cam")
	testutil.Eventually(t, 15*time.Second, "WHEP video from the RTMP push", func() bool { return viewer.Video.Load() > 50 })
	// The viewer as the API and /metrics show it: its estimate, rung and
	// the keyframe its join asked for.
	testutil.Eventually(t, 10*time.Second, "the WHEP viewer in /api/v1/streams/cam", func() bool {
		s, ok := streamInfo(t, n, "cam")
		if !ok || s.WebRTC == nil || len(s.WebRTC.ViewerList) != 1 {
			return false
		}
		v := s.WebRTC.ViewerList[0]
		return v.Connected && v.Estimate > 0 && v.Rung != "" && s.WebRTC.Keyframes.Requests["join"] > 0
	})
	if _, body := request(t, "GET", n.base+"/metrics", adminToken, ""); !strings.Contains(body, `prism_webrtc_viewers{rung="`) ||
		!strings.Contains(body, `prism_webrtc_estimate_bps{rung="`) || !strings.Contains(body, `prism_webrtc_keyframe_requests_total{reason="join",stream="cam"}`) {
		t.Errorf("/metrics lacks the WebRTC viewer metrics:\n%s", grepLines(body, "prism_webrtc"))
	}

	// Wrong key, then a second publisher with the right one: both refused.
	bad := startPublisher(t, 10, x264, "flv", "rtmp://"+rtmpAddr+"/live/cam?key=wrong-key-0000000000")
	if ended, err := bad.exitWithin(15 * time.Second); !ended || err == nil {
		t.Errorf("a wrong key was not refused (ended %v, %v): %s", ended, err, bad.stderr.String())
	}
	second := startPublisher(t, 10, x264, "flv", rtmpURL)
	if ended, err := second.exitWithin(15 * time.Second); !ended || err == nil {
		t.Errorf("a second publisher was not refused (ended %v, %v): %s", ended, err, second.stderr.String())
	}
	pid1 := workerPID(t, n, "cam")

	// Drop the publisher and come back within the grace period, at another
	// size (a source change: the decoder follows the new parameter sets).
	pub.stop()
	before := viewer.Video.Load()
	pub = startPublisherSized(t, "480x270", 60, x264, "flv", rtmpURL)
	testutil.Eventually(t, 20*time.Second, "the reconnected publisher's media on the same WHEP session", func() bool {
		s, ok := streamInfo(t, n, "cam")
		return ok && s.Publisher != nil && s.Publisher.Reconnects == 1 && viewer.Video.Load() > before+100
	})
	testutil.Eventually(t, 15*time.Second, "EXT-X-DISCONTINUITY in the LL-HLS playlists after the reconnect", func() bool {
		return strings.Contains(hlsRungPlaylist(n, "cam"), "#EXT-X-DISCONTINUITY\n")
	})
	if pid2 := workerPID(t, n, "cam"); pid1 == 0 || pid2 != pid1 {
		t.Errorf("reconnect: worker %d before, %d after: want the same job's worker still running", pid1, pid2)
	}
	testutil.Report(t, "RTMP push: refused a wrong key and a second publisher; a reconnect within the grace period resumed the same job (worker %d); the WHEP viewer kept its session (%d video packets) and LL-HLS marked the change with EXT-X-DISCONTINUITY",
		pid1, viewer.Video.Load())

	// SRT, with the key in the streamid.
	srtPub := startPublisher(t, 60, x264, "mpegts", "srt://"+srtAddr+"?streamid=publish:srtcam:"+publishKey+"-srt&latency=120000")
	testutil.Eventually(t, 30*time.Second, "the SRT push running with media", func() bool {
		s, ok := streamInfo(t, n, "srtcam")
		return ok && s.State == string(jobs.StateRunning) && s.Stats.MediaTime > time.Second && s.Publisher != nil && s.Publisher.Protocol == "srt"
	})
	if sizes := probeHLS(t, n, "srtcam"); len(sizes) != 2 {
		t.Errorf("LL-HLS of the SRT push: video %v, want two rungs", sizes)
	}
	srtViewer := testutil.StartWHEPViewer(t, n.base+"/whep/srtcam")
	testutil.Eventually(t, 15*time.Second, "WHEP video from the SRT push", func() bool { return srtViewer.Video.Load() > 50 })
	// An SRT reconnect within grace: the same job, marked on LL-HLS too.
	srtURL := "srt://" + srtAddr + "?streamid=publish:srtcam:" + publishKey + "-srt&latency=120000"
	srtPub.stop()
	// Like OBS, retry when refused: the listener may not have noticed yet
	// that the killed publisher is gone (SRT has no connection to reset).
	for attempt := 0; ; attempt++ {
		srtPub = startPublisher(t, 60, x264, "mpegts", srtURL)
		if ended, _ := srtPub.exitWithin(3 * time.Second); !ended {
			break
		}
		if attempt == 4 {
			t.Fatalf("the SRT publisher could not come back: %s", srtPub.stderr.String())
		}
	}
	testutil.Eventually(t, 20*time.Second, "EXT-X-DISCONTINUITY after the SRT reconnect", func() bool {
		return strings.Contains(hlsRungPlaylist(n, "srtcam"), "#EXT-X-DISCONTINUITY\n")
	})
	badSRT := startPublisher(t, 10, x264, "mpegts", "srt://"+srtAddr+"?streamid=publish:srtcam2:wrong-key-000000&latency=120000")
	if ended, err := badSRT.exitWithin(15 * time.Second); !ended || err == nil {
		t.Errorf("SRT with a wrong key was not refused (ended %v, %v)", ended, err)
	}
	srtPub.stop()

	// HEVC over Enhanced RTMP, decoded by the worker.
	hevc := startPublisher(t, 60, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30", "-b:v", "600k"},
		"flv", "rtmp://"+rtmpAddr+"/live/hevccam?key="+publishKey+"-hevc")
	testutil.Eventually(t, 30*time.Second, "the HEVC push running", func() bool {
		s, ok := streamInfo(t, n, "hevccam")
		return ok && s.State == string(jobs.StateRunning) && s.Stats.MediaTime > time.Second && s.Publisher != nil &&
			len(s.Publisher.Tracks) > 0 && strings.HasPrefix(s.Publisher.Tracks[0], "h265")
	})
	hevc.stop()

	// takeover: newest lets a second publisher replace the first.
	takeURL := "rtmp://" + rtmpAddr + "/live/takecam?key=" + publishKey + "-take"
	first := startPublisher(t, 60, x264, "flv", takeURL)
	testutil.Eventually(t, 30*time.Second, "takecam running", func() bool {
		s, ok := streamInfo(t, n, "takecam")
		return ok && s.Stats.MediaTime > time.Second
	})
	newer := startPublisher(t, 60, x264, "flv", takeURL)
	if ended, _ := first.exitWithin(15 * time.Second); !ended {
		t.Error("takeover: newest: the first publisher was not disconnected")
	}
	if ended, err := newer.exitWithin(2 * time.Second); ended {
		t.Errorf("takeover: newest: the newer publisher ended: %v %s", err, newer.stderr.String())
	}
	newer.stop()

	// The metrics count sessions and refusals by protocol only.
	code, body := request(t, "GET", n.base+"/metrics", adminToken, "")
	for _, want := range []string{`prism_ingest_sessions{protocol="rtmp"}`, `prism_ingest_rejects_total{protocol="rtmp",reason="unauthorized"} 1`,
		`prism_ingest_rejects_total{protocol="rtmp",reason="conflict"} 1`, `prism_ingest_reconnects_total{protocol="rtmp"} `} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_ = pub
}

// TestPushAcrossNodes: the publisher pushes to node A (serve only), the
// job runs on another node, and a viewer watches on the third.
func TestPushAcrossNodes(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	_, natsCfg := natsCluster(t)
	a, rtmpAddr, _ := ingestNode(t, "na", "  capacity: -1\n", natsCfg)
	b, _, _ := ingestNode(t, "nb", "", natsCfg)
	c, _, _ := ingestNode(t, "nc", "", natsCfg)
	pub := startPublisher(t, 60, x264, "flv", "rtmp://"+rtmpAddr+"/live/cam?key="+publishKey)
	defer pub.stop()
	var owner string
	testutil.Eventually(t, 30*time.Second, "the pushed stream's job running on a node with capacity", func() bool {
		s, ok := streamInfo(t, a, "cam")
		if !ok || s.Job == nil || s.Job.State != jobs.StateRunning {
			return false
		}
		owner = s.Job.Owner
		return true
	})
	if owner == "na" {
		t.Fatalf("the job runs on the ingest node, which has no capacity")
	}
	viewerNode := b
	if owner == "nb" {
		viewerNode = c
	}
	viewer := testutil.StartWHEPViewer(t, viewerNode.base+"/whep/cam")
	testutil.Eventually(t, 20*time.Second, "WHEP video on the third node", func() bool { return viewer.Video.Load() > 50 })
	if sizes := probeHLS(t, viewerNode, "cam"); len(sizes) != 2 {
		t.Errorf("LL-HLS on %s: %v", viewerNode.name, sizes)
	}
	testutil.Report(t, "push across nodes: RTMP into na, job on %s, viewer on %s: %d video packets", owner, viewerNode.name, viewer.Video.Load())
}

// TestPushWHIPFromChromium: Chromium publishes its fake camera over WHIP
// from the page Prism serves at /publish; the stream plays over WHEP and
// LL-HLS.
func TestPushWHIPFromChromium(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	n, _, _ := ingestNode(t, "whipnode", "", "")
	// A page on another origin may publish too (webrtc.allow_origin).
	pre, _ := http.NewRequest("OPTIONS", n.base+"/whip/webcam", nil)
	pre.Header.Set("Origin", "https://studio.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("WHIP CORS preflight: %d %v", resp.StatusCode, resp.Header)
	}
	testutil.StartBrowser(t, n.base+"/publish?stream=webcam&autostart&token="+publishKey+"-web",
		"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
	var info api.StreamInfo
	testutil.Eventually(t, 40*time.Second, "the browser's stream running", func() bool {
		var ok bool
		info, ok = streamInfo(t, n, "webcam")
		return ok && info.State == string(jobs.StateRunning) && info.Stats.MediaTime > time.Second && info.Publisher != nil
	})
	if info.Publisher.Protocol != "whip" {
		t.Errorf("publisher %+v", info.Publisher)
	}
	viewer := testutil.StartWHEPViewer(t, n.base+"/whep/webcam")
	testutil.Eventually(t, 15*time.Second, "WHEP video from the browser's publish", func() bool { return viewer.Video.Load() > 50 })
	if sizes := probeHLS(t, n, "webcam"); len(sizes) == 0 {
		t.Errorf("LL-HLS of the browser's publish: no video")
	}
	testutil.Report(t, "Chromium WHIP publish: source %v, played over WHEP (%d video packets) and LL-HLS", info.Publisher.Tracks, viewer.Video.Load())
}

// TestJobPublishesToPrismOverWHIP: a job's simulcast WHIP publish (Prism's
// own WHIP client, one RID per rung) into another Prism node's /whip: the
// receiving node ingests the top layer and transcodes it again.
func TestJobPublishesToPrismOverWHIP(t *testing.T) {
	receiver, _, _ := ingestNode(t, "whiprecv", "", "")
	sender := startNode(t, "whipsend", "", "")
	spec := tinyJob("origin")
	spec.Publish = []jobs.PublishTarget{{URL: receiver.base + "/whip/relaycam", Token: publishKey + "-relay"}}
	if code, body := sender.post("/api/v1/jobs", spec); code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	var info api.StreamInfo
	testutil.Eventually(t, 40*time.Second, "the relayed stream running on the receiver", func() bool {
		var ok bool
		info, ok = streamInfo(t, receiver, "relaycam")
		return ok && info.State == string(jobs.StateRunning) && info.Stats.MediaTime > time.Second && info.Publisher != nil
	})
	if info.Publisher.Protocol != "whip" || len(info.Publisher.Tracks) == 0 || info.Publisher.Tracks[0] != "h264 320x180" {
		t.Errorf("publisher %+v: want WHIP with the top rung (h264 320x180)", info.Publisher)
	}
	viewer := testutil.StartWHEPViewer(t, receiver.base+"/whep/relaycam")
	testutil.Eventually(t, 15*time.Second, "WHEP video of the relayed stream", func() bool { return viewer.Video.Load() > 50 })
	testutil.Report(t, "simulcast WHIP into Prism: source %v, re-transcoded and played over WHEP (%d video packets)", info.Publisher.Tracks, viewer.Video.Load())
}

// TestPushHostile: garbage on the RTMP and SRT ports, a half handshake, 200
// idle connections and a publisher whose H.264 is corrupt: none of it
// stops the node or the stream already being pushed to it.
func TestPushHostile(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	n, rtmpAddr, srtAddr := ingestNode(t, "hostilenode", "", "")
	good := startPublisher(t, 90, x264, "flv", "rtmp://"+rtmpAddr+"/live/cam?key="+publishKey)
	defer good.stop()
	media := func() time.Duration {
		s, _ := streamInfo(t, n, "cam")
		return s.Stats.MediaTime
	}
	testutil.Eventually(t, 30*time.Second, "the good stream running", func() bool { return media() > time.Second })
	start := media()

	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(i*131 + i>>7)
	}
	for range 8 { // random bytes on the RTMP port
		c, err := net.Dial("tcp", rtmpAddr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(junk)
		_ = c.Close()
	}
	half, err := net.Dial("tcp", rtmpAddr) // C0+C1, then silence
	if err != nil {
		t.Fatal(err)
	}
	_, _ = half.Write(append([]byte{3}, junk[:1536]...))
	defer half.Close()
	var idle []net.Conn
	for range 200 {
		if c, err := net.Dial("tcp", rtmpAddr); err == nil {
			idle = append(idle, c)
		}
	}
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	udp, err := net.Dial("udp", srtAddr) // random datagrams on the SRT port
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		_, _ = udp.Write(junk[i*100 : i*100+64+i*10])
	}
	_ = udp.Close()

	// A publisher whose H.264 NAL units are corrupt: a TS with bytes
	// flipped inside its packets' payloads, sent as is over SRT.
	dir := t.TempDir()
	clean, corrupt := dir+"/clean.ts", dir+"/corrupt.ts"
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-f", "mpegts", clean)
	corruptTS(t, clean, corrupt)
	bad := exec.Command(testutil.Tool(t, "ffmpeg"), "-hide_banner", "-loglevel", "quiet", "-re", "-i", corrupt, "-c", "copy", "-f", "mpegts",
		"srt://"+srtAddr+"?streamid=publish:srtcam:"+publishKey+"-srt&latency=120000")
	if err := bad.Run(); err != nil {
		t.Logf("corrupt publisher: %v", err)
	}
	after := media()
	if code, _ := n.get("/healthz"); code != 200 || n.exited() {
		t.Fatalf("the node is down after the hostile inputs: %d\n%s", code, n.stderr.String())
	}
	if after-start < 5*time.Second {
		t.Errorf("the good stream stalled: media %s → %s over the hostile inputs", start, after)
	}
	// A new publisher still gets in.
	again := startPublisher(t, 30, x264, "mpegts", "srt://"+srtAddr+"?streamid=publish:srtcam:"+publishKey+"-srt&latency=120000")
	defer again.stop()
	testutil.Eventually(t, 30*time.Second, "a clean SRT publish after the corrupt one", func() bool {
		s, ok := streamInfo(t, n, "srtcam")
		return ok && s.Publisher != nil && s.Stats.MediaTime > time.Second
	})
	testutil.Report(t, "push hostile: random bytes on RTMP (8 conns) and SRT (60 datagrams), a half RTMP handshake, 200 idle RTMP connections, an SRT publisher with corrupt H.264: node up, the RTMP stream advanced %s meanwhile",
		(after - start).Round(100*time.Millisecond))
}

// corruptTS copies a transport stream, flipping one byte in every
// seventeenth packet's payload (the 4-byte header and the PES header stay
// intact, so the demuxer carries the damage to the decoder).
func corruptTS(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+188 <= len(b); i += 188 {
		if (i/188)%17 == 5 && b[i+1]&0x40 == 0 { // not a payload unit start
			b[i+100] ^= 0x5a
			b[i+150] ^= 0xff
		}
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
