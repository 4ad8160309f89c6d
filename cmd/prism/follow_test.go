package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/jobs"
)

// metric returns the value of one series on the node's /metrics (the
// series' name with its labels, as Prometheus prints it): 0 when absent,
// -1 when /metrics did not answer. Safe from any goroutine.
func (n *nodeProcess) metric(series string) float64 {
	code, body := n.get("/metrics")
	if code != 200 {
		return -1
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
			return -1
		}
	}
	return 0
}

// TestFollowOnDemand: two nodes on a NATS cluster, two jobs on one (a),
// node.follow: on_demand on both. A node with no viewers receives no media
// bytes from NATS; an HLS viewer of one stream on b makes b follow that
// stream only (its first playlist request waits for it) and its bytes grow;
// once the viewer stops, b lets go after node.follow_idle and its bytes
// stop. A WebRTC session holds the stream the same way. Without viewers,
// both nodes' API still shows the stream's tracks and live stats (asked of
// its publisher), and describing it receives no media.
func TestFollowOnDemand(t *testing.T) {
	_, natsCfg := natsCluster(t)
	const idle = 2 * time.Second
	onDemand := fmt.Sprintf("  follow: on_demand\n  follow_idle: %s\n", idle)
	a := startNode(t, "a", onDemand, natsCfg)
	b := startNode(t, "b", onDemand+"  capacity: -1\n", natsCfg) // serves only: the job runs on a
	for _, id := range []string{"ondemand", "unwatched"} {
		if code, body := a.post("/api/v1/jobs", tinyJob(id)); code != 201 {
			t.Fatalf("submit %s: %d %s", id, code, body)
		}
	}
	testutil.Eventually(t, 30*time.Second, "the jobs running on a, offered on b", func() bool {
		_, listed := b.get("/api/v1/streams")
		for _, id := range []string{"ondemand", "unwatched"} {
			j, ok := b.job(id)
			if !ok || j.State != jobs.StateRunning || j.Owner != "a" || !bytes.Contains(listed, []byte(`"name": "`+id+`"`)) {
				return false
			}
		}
		return true
	})
	const received = `prism_relay_received_bytes_total{stream="ondemand"}`
	const unwatched = `prism_relay_received_bytes_total{stream="unwatched"}`
	const followed = "prism_relay_followed_streams"
	// The stream nobody watches costs no node anything, whatever the other does.
	defer func() {
		for _, n := range []*nodeProcess{a, b} {
			if got := n.metric(unwatched); got != 0 {
				t.Errorf("%s received %.0f media bytes of the unwatched stream", n.name, got)
			}
		}
	}()

	// No viewers anywhere: neither node receives media while the job runs,
	// and both describe it all the same (the API asks the publisher),
	// through the stream and through the list.
	var described, listed time.Duration // the slowest answers
	var speed, fps float64              // the last ones
	describe := func(n *nodeProcess) error {
		start := time.Now()
		st, ok := n.stream("ondemand")
		described = max(described, time.Since(start))
		// fps: the slowest video rung's (audio has a frame rate too).
		video := map[string]bool{}
		for _, tr := range st.Tracks {
			video[tr.Name] = tr.Kind == pipeline.KindVideo
		}
		speed, fps = st.Stats.Speed, math.Inf(1)
		for _, tr := range st.Stats.Tracks {
			if video[tr.Track] {
				fps = min(fps, tr.FPS)
			}
		}
		if !ok || len(st.Tracks) == 0 || st.Stats.Speed <= 0 || math.IsInf(fps, 1) || fps <= 0 {
			return fmt.Errorf("%s: /api/v1/streams/ondemand ok=%v: %d tracks, speed %.2f, fps %.1f; want them from the publisher",
				n.name, ok, len(st.Tracks), st.Stats.Speed, fps)
		}
		start = time.Now()
		code, body := n.get("/api/v1/streams")
		listed = max(listed, time.Since(start))
		var list []api.StreamInfo
		if err := json.Unmarshal(body, &list); code != 200 || err != nil || len(list) != 2 {
			return fmt.Errorf("%s: /api/v1/streams: %d %w, %d streams", n.name, code, err, len(list))
		}
		for _, l := range list {
			if len(l.Tracks) == 0 || l.Stats.Speed <= 0 {
				return fmt.Errorf("%s: /api/v1/streams lists %s with %d tracks, speed %.2f", n.name, l.Name, len(l.Tracks), l.Stats.Speed)
			}
		}
		return nil
	}
	var lastErr error
	t.Cleanup(func() {
		if t.Failed() && lastErr != nil {
			t.Logf("last describe: %v", lastErr)
		}
	})
	testutil.Eventually(t, 10*time.Second, "both nodes describing the streams", func() bool {
		lastErr = cmp.Or(describe(a), describe(b))
		return lastErr == nil
	})
	window := 5 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, n := range []*nodeProcess{a, b} {
			if err := describe(n); err != nil {
				t.Fatalf("without viewers: %v", err)
			}
			if got, f := n.metric(received), n.metric(followed); got != 0 || f != 0 {
				t.Fatalf("%s without viewers, described: %.0f media bytes received, %.0f streams followed", n.name, got, f)
			}
		}
	}
	testutil.Report(t, "follow on demand, no viewers: both nodes describe the stream from its publisher (tracks, speed %.2f, fps %.1f) in at most %s, list both in at most %s; 0 media bytes received",
		speed, fps, described.Round(time.Millisecond), listed.Round(time.Millisecond))

	// A viewer on b: its first multivariant request triggers the follow
	// and is answered once every rung has a complete segment.
	start := time.Now()
	firstMedia := make(chan time.Duration, 1)
	stop := make(chan struct{})
	go func() { // polls b's counter until the first bytes; ends with stop
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if b.metric(received) > 0 {
				firstMedia <- time.Since(start)
				return
			}
		}
	}()
	defer close(stop)
	code, index := b.get("/hls/ondemand/index.m3u8")
	playable := time.Since(start)
	if code != 200 {
		t.Fatalf("first index request on b: %d %s\nlog:\n%s", code, index, b.logExcerpt())
	}
	var variant string
	for _, l := range strings.Split(string(index), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			variant = l
			break
		}
	}
	var part string
	testutil.Eventually(t, 10*time.Second, "a part in b's media playlist", func() bool {
		code, body := b.get("/hls/ondemand/" + variant)
		for _, l := range strings.Split(string(body), "\n") {
			if rest, ok := strings.CutPrefix(l, "#EXT-X-PART:"); ok && code == 200 {
				if _, uri, ok := strings.Cut(rest, `URI="`); ok {
					part, _, _ = strings.Cut(uri, `"`)
				}
			}
		}
		return part != ""
	})
	code, media := b.get(path.Join("/hls/ondemand", path.Dir(variant), part))
	firstPart := time.Since(start)
	if code != 200 || !bytes.Contains(media[:min(len(media), 64)], []byte("moof")) {
		t.Fatalf("part %s: %d, %d bytes", part, code, len(media))
	}
	var toMedia time.Duration
	select {
	case toMedia = <-firstMedia:
	case <-time.After(5 * time.Second):
		t.Fatal("b's received bytes never moved")
	}

	// Watched for a while (a player reloads its playlist): b's bytes grow,
	// a's stay 0 (nobody watches there).
	watchFrom := b.metric(received)
	watchStart := time.Now()
	var lastRequest time.Time
	for time.Since(watchStart) < 3*time.Second {
		lastRequest = time.Now() // the registry counts a use from the request's start
		if code, _ := b.get("/hls/ondemand/" + variant); code != 200 {
			t.Fatalf("media playlist on b: %d", code)
		}
		time.Sleep(200 * time.Millisecond) // a player's reload pace, not a wait for a condition
	}
	watched := b.metric(received) - watchFrom
	rate := watched * 8 / time.Since(watchStart).Seconds()
	if watched <= 0 || b.metric(followed) != 1 || b.metric(unwatched) != 0 {
		t.Errorf("b while watched: %.0f bytes in %s, %.0f streams followed", watched, time.Since(watchStart), b.metric(followed))
	}
	if got := a.metric(received); got != 0 {
		t.Errorf("a (no viewers) received %.0f media bytes", got)
	}

	// The viewer stops: b lets go after node.follow_idle, then receives
	// nothing more.
	testutil.Eventually(t, idle+5*time.Second, "b letting go of the idle stream", func() bool {
		return b.metric(followed) == 0
	})
	letGo := time.Since(lastRequest)
	if letGo < idle {
		t.Errorf("b let go %s after the last request, before follow_idle %s", letGo, idle)
	}
	after := b.metric(received)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if got := b.metric(received); got != after {
			t.Fatalf("b still receiving after letting go: %.0f -> %.0f bytes", after, got)
		}
	}
	testutil.Report(t, "follow on demand (2 nodes, 2 jobs, tiny ladder): no viewers %s: 0 media bytes on both; the unwatched stream: 0 bytes on both throughout; first HLS request on b: "+
		"media after %s, playable multivariant after %s, first part after %s; watched %.1f kbit/s in; let go %s after the last request (follow_idle %s), then 0 bytes for 3 s",
		window, toMedia.Round(time.Millisecond), playable.Round(time.Millisecond), firstPart.Round(time.Millisecond), rate/1000,
		letGo.Round(time.Millisecond), idle)

	// A WebRTC viewer on b: its offer makes b follow again and is answered
	// once the stream is there; the session holds the stream past
	// follow_idle without any HTTP request, and b lets go after it ends.
	start = time.Now()
	viewer := testutil.StartWHEPViewer(t, b.base+"/whep/ondemand")
	answered := time.Since(start)
	testutil.Eventually(t, 10*time.Second, "video on the WHEP viewer", func() bool { return viewer.Video.Load() > 0 })
	firstVideo := time.Since(start)
	held := b.metric(received)
	for end := time.Now().Add(idle + time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if f := b.metric(followed); f != 1 {
			t.Fatalf("b with a WebRTC session: %.0f streams followed", f)
		}
	}
	if b.metric(received) <= held {
		t.Error("b's bytes did not grow during the WebRTC session")
	}
	viewer.Stop(t)
	ended := time.Now()
	testutil.Eventually(t, idle+5*time.Second, "b letting go after the session", func() bool {
		return b.metric(followed) == 0
	})
	if d := time.Since(ended); d < idle {
		t.Errorf("b let go %s after the session ended, before follow_idle %s", d, idle)
	}
	testutil.Report(t, "follow on demand, WHEP on b: answered after %s, first video packet after %s; held past follow_idle; let go %s after DELETE",
		answered.Round(time.Millisecond), firstVideo.Round(time.Millisecond), time.Since(ended).Round(time.Millisecond))
}
