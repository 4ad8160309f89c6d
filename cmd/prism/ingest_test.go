package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
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
ingest:
  rtmp: %q
  srt: %q
  grace: 4s
  ladder: %s
%s`, adminToken, jwtSecret, publishKey, publishKey, publishKey, rtmpAddr, srtAddr, ladder, extra)
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
	args := []string{"-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
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
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// exitWithin returns the publisher's exit error and true if it ended in d.
func (p *publisher) exitWithin(d time.Duration) (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err // stop may read it again
		return err, true
	case <-time.After(d):
		return nil, false
	}
}

// streamInfo reads /api/v1/streams/<name> with the admin token.
func streamInfo(t *testing.T, n *nodeProcess, name string) (api.StreamInfo, bool) {
	code, body := request(t, "GET", n.base+"/api/v1/streams/"+name, adminToken, "")
	var s api.StreamInfo
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil {
		return s, false
	}
	return s, true
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

// whepViewer is a pion WHEP client counting the RTP packets it receives.
type whepViewer struct {
	pc    *webrtc.PeerConnection
	video atomic.Int64
	audio atomic.Int64
}

func startWHEPViewer(t *testing.T, n *nodeProcess, stream string) *whepViewer {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &whepViewer{pc: pc}
	t.Cleanup(func() { _ = pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		count := &v.audio
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			count = &v.video
		}
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			count.Add(1)
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	req, _ := http.NewRequest("POST", n.base+"/whep/"+stream, strings.NewReader(pc.LocalDescription().SDP))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 {
		t.Fatalf("WHEP %s: %d %s", stream, resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	return v
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
	viewer := startWHEPViewer(t, n, "cam")
	testutil.Eventually(t, 15*time.Second, "WHEP video from the RTMP push", func() bool { return viewer.video.Load() > 50 })

	// Wrong key, then a second publisher with the right one: both refused.
	bad := startPublisher(t, 10, x264, "flv", "rtmp://"+rtmpAddr+"/live/cam?key=wrong-key-0000000000")
	if err, ended := bad.exitWithin(15 * time.Second); !ended || err == nil {
		t.Errorf("a wrong key was not refused (ended %v, %v): %s", ended, err, bad.stderr.String())
	}
	second := startPublisher(t, 10, x264, "flv", rtmpURL)
	if err, ended := second.exitWithin(15 * time.Second); !ended || err == nil {
		t.Errorf("a second publisher was not refused (ended %v, %v): %s", ended, err, second.stderr.String())
	}
	pid1 := workerPID(t, n, "cam")

	// Drop the publisher and come back within the grace period.
	pub.stop()
	before := viewer.video.Load()
	pub = startPublisher(t, 60, x264, "flv", rtmpURL)
	testutil.Eventually(t, 20*time.Second, "the reconnected publisher's media on the same WHEP session", func() bool {
		s, ok := streamInfo(t, n, "cam")
		return ok && s.Publisher != nil && s.Publisher.Reconnects == 1 && viewer.video.Load() > before+100
	})
	if pid2 := workerPID(t, n, "cam"); pid1 == 0 || pid2 != pid1 {
		t.Errorf("reconnect: worker %d before, %d after: want the same job's worker still running", pid1, pid2)
	}
	testutil.Report(t, "RTMP push: refused a wrong key and a second publisher; a reconnect within the grace period resumed the same job (worker %d); the WHEP viewer kept its session (%d video packets)",
		pid1, viewer.video.Load())

	// SRT, with the key in the streamid.
	srtPub := startPublisher(t, 60, x264, "mpegts", "srt://"+srtAddr+"?streamid=publish:srtcam:"+publishKey+"-srt&latency=120000")
	testutil.Eventually(t, 30*time.Second, "the SRT push running with media", func() bool {
		s, ok := streamInfo(t, n, "srtcam")
		return ok && s.State == string(jobs.StateRunning) && s.Stats.MediaTime > time.Second && s.Publisher != nil && s.Publisher.Protocol == "srt"
	})
	if sizes := probeHLS(t, n, "srtcam"); len(sizes) != 2 {
		t.Errorf("LL-HLS of the SRT push: video %v, want two rungs", sizes)
	}
	srtViewer := startWHEPViewer(t, n, "srtcam")
	testutil.Eventually(t, 15*time.Second, "WHEP video from the SRT push", func() bool { return srtViewer.video.Load() > 50 })
	badSRT := startPublisher(t, 10, x264, "mpegts", "srt://"+srtAddr+"?streamid=publish:srtcam2:wrong-key-000000&latency=120000")
	if err, ended := badSRT.exitWithin(15 * time.Second); !ended || err == nil {
		t.Errorf("SRT with a wrong key was not refused (ended %v, %v)", ended, err)
	}
	srtPub.stop()

	// The metrics count sessions and refusals by protocol only.
	code, body := request(t, "GET", n.base+"/metrics", adminToken, "")
	for _, want := range []string{`prism_ingest_sessions{protocol="rtmp"} 1`, `prism_ingest_rejects_total{protocol="rtmp",reason="unauthorized"} 1`,
		`prism_ingest_rejects_total{protocol="rtmp",reason="conflict"} 1`, `prism_ingest_reconnects_total{protocol="rtmp"} 1`} {
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
	servers, err := bus.StartLocalCluster(3, t.TempDir(), "t0ken")
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, s := range servers {
		defer s.Close()
		urls = append(urls, s.ClientURL())
	}
	natsCfg := fmt.Sprintf("nats:\n  url: %s\n  token: t0ken\n", strings.Join(urls, ","))
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
	viewer := startWHEPViewer(t, viewerNode, "cam")
	testutil.Eventually(t, 20*time.Second, "WHEP video on the third node", func() bool { return viewer.video.Load() > 50 })
	if sizes := probeHLS(t, viewerNode, "cam"); len(sizes) != 2 {
		t.Errorf("LL-HLS on %s: %v", viewerNode.name, sizes)
	}
	testutil.Report(t, "push across nodes: RTMP into na, job on %s, viewer on %s: %d video packets", owner, viewerNode.name, viewer.video.Load())
}

// TestPushWHIPFromChromium: Chromium publishes its fake camera over WHIP
// from the page Prism serves at /publish; the stream plays over WHEP and
// LL-HLS.
func TestPushWHIPFromChromium(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	n, _, _ := ingestNode(t, "whipnode", "", "")
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
	viewer := startWHEPViewer(t, n, "webcam")
	testutil.Eventually(t, 15*time.Second, "WHEP video from the browser's publish", func() bool { return viewer.video.Load() > 50 })
	if sizes := probeHLS(t, n, "webcam"); len(sizes) == 0 {
		t.Errorf("LL-HLS of the browser's publish: no video")
	}
	testutil.Report(t, "Chromium WHIP publish: source %v, played over WHEP (%d video packets) and LL-HLS", info.Publisher.Tracks, viewer.video.Load())
}
