package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// nodeProcess is one `prism serve` process under test.
type nodeProcess struct {
	t      *testing.T
	name   string
	base   string
	cmd    *exec.Cmd
	stderr testutil.SyncBuffer // written by the process while the test reads it
	killed bool
	status *syscall.WaitStatus // once exited reported true
}

// startNode starts a node; nodeConfig adds lines under `node:`, extra adds
// top-level configuration.
func startNode(t *testing.T, name, nodeConfig, extra string) *nodeProcess {
	t.Helper()
	return startNodeOn(t, freePort(t), name, nodeConfig, extra)
}

// exited reports whether the node's process has ended (and how), without
// waiting for it.
func (n *nodeProcess) exited() bool {
	var ws syscall.WaitStatus
	pid, err := syscall.Wait4(n.cmd.Process.Pid, &ws, syscall.WNOHANG, nil)
	if err == nil && pid == n.cmd.Process.Pid {
		n.status = &ws
		return true
	}
	return false
}

// logExcerpt is the end of the node's log for a failure message, without
// the embedded NATS server's INFO lines: its start-up banner alone used to
// push the node's own last words out of the CI output.
func (n *nodeProcess) logExcerpt() string {
	var keep []string
	for _, l := range strings.Split(n.stderr.String(), "\n") {
		if strings.Contains(l, "level=INFO") && strings.Contains(l, "component=nats-server") {
			continue
		}
		keep = append(keep, l)
	}
	out := strings.Join(keep, "\n")
	if len(out) > 8000 {
		out = "…" + out[len(out)-8000:]
	}
	if n.status != nil {
		out += fmt.Sprintf("\n(process ended: exit status %d, signaled %v)", n.status.ExitStatus(), n.status.Signaled())
	}
	return out
}

// followAlways is the node configuration of the tests' nodes unless they
// say otherwise: they measure failover, drains and outputs on nodes that
// follow every stream, as before node.follow: on_demand (TestFollowOnDemand
// measures that).
const followAlways = "  follow: always\n"

// startNodeOn is startNode with its HTTP listener on addr (base stays a
// loopback URL of the same port).
func startNodeOn(t *testing.T, addr, name, nodeConfig, extra string) *nodeProcess {
	t.Helper()
	dir := t.TempDir()
	if !strings.Contains(extra, "inputs:") {
		// The tests' jobs come over the API and read lavfi test sources.
		extra += "inputs:\n  allow_lavfi: true\n"
	}
	if !strings.Contains(extra, "ingest:") {
		// Several nodes run on one machine: no fixed ingest ports.
		extra += "ingest:\n  rtmp: \"\"\n  srt: \"\"\n"
	}
	if !strings.Contains(nodeConfig, "follow:") {
		nodeConfig = followAlways + nodeConfig
	}
	cfg := writeFile(t, dir, "prism.yaml", "node:\n  id: "+name+"\n"+nodeConfig+extra)
	_, port, _ := net.SplitHostPort(addr)
	n := &nodeProcess{t: t, name: name, base: "http://127.0.0.1:" + port}
	n.cmd = exec.Command(prismBin, "serve", "--config", cfg, "--http", addr, "--data-dir", dir, "--stats-interval", "0", "--webrtc-port", "0")
	n.cmd.Stderr = &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !n.killed {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			_ = n.cmd.Wait()
		}
	})
	// A free port can be taken by another process before the node binds
	// it: then the node exits at once, and it starts again on another.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := n.get("/healthz"); code == 200 {
			return n
		}
		if n.exited() {
			n.killed = true
			if strings.Contains(n.stderr.String(), "address already in use") && time.Now().Before(deadline) {
				return startNodeOn(t, retryAddr(t, addr), name, nodeConfig, extra)
			}
			t.Fatalf("%s exited before answering /healthz:\n%s", name, n.logExcerpt())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer /healthz within 30 s:\n%s", name, n.logExcerpt())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// retryAddr is another free port on addr's host.
func retryAddr(t *testing.T, addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	_, port, _ := net.SplitHostPort(freePort(t))
	return net.JoinHostPort(host, port)
}

func (n *nodeProcess) get(path string) (int, []byte) {
	resp, err := http.Get(n.base + path)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (n *nodeProcess) post(path string, body any) (int, []byte) {
	b, _ := json.Marshal(body)
	resp, err := http.Post(n.base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (n *nodeProcess) job(id string) (api.JobInfo, bool) {
	code, body := n.get("/api/v1/jobs/" + id)
	var j api.JobInfo
	if code != 200 || json.Unmarshal(body, &j) != nil {
		return j, false
	}
	return j, true
}

func (n *nodeProcess) stream(id string) (api.StreamInfo, bool) {
	code, body := n.get("/api/v1/streams/" + id)
	var s api.StreamInfo
	if code != 200 || json.Unmarshal(body, &s) != nil {
		return s, false
	}
	return s, true
}

// hlsSequence returns the media sequence number of the first rung's
// LL-HLS playlist, or -1.
func (n *nodeProcess) hlsSequence(t *testing.T, stream string) int {
	code, body := n.get("/hls/" + stream + "/index.m3u8")
	if code != 200 {
		return -1
	}
	var rung string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasSuffix(l, ".m3u8") && !strings.HasPrefix(l, "#") {
			rung = l
			break
		}
	}
	code, body = n.get("/hls/" + stream + "/" + rung)
	if code != 200 {
		return -1
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"); ok {
			var seq int
			// An unparsable sequence reads as 0, which never passes the
			// callers' "moved forward" checks.
			_, _ = fmt.Sscan(v, &seq)
			return seq
		}
	}
	return -1
}

func (n *nodeProcess) kill9() {
	n.killed = true
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.cmd.Wait() // killed: the exit status is "signal: killed"
}

const tinyJobLadder = `name: tiny
rungs:
  - {name: 180p, height: 180, bitrate: 300k, preset: ultrafast}
  - {name: 90p, height: 90, bitrate: 100k, preset: ultrafast}
`

func tinyJob(id string) jobs.Spec {
	return jobs.Spec{ID: id, Input: "lavfi:testsrc2=size=320x180:rate=30[out0];sine=sample_rate=48000[out1]",
		Ladder: "tiny", LadderYAML: tinyJobLadder, Restart: true}
}

// natsCluster starts a three-server NATS cluster for the test and returns
// its servers and the node configuration that joins it.
func natsCluster(t *testing.T) ([]*bus.Embedded, string) {
	t.Helper()
	servers, err := bus.StartLocalCluster(3, t.TempDir(), "t0ken")
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, s := range servers {
		t.Cleanup(s.Close)
		urls = append(urls, s.ClientURL())
	}
	return servers, fmt.Sprintf("nats:\n  url: %s\n  token: t0ken\n", strings.Join(urls, ","))
}

// TestFailoverAcrossProcesses: three prism processes on a three-server NATS
// cluster (replicas 3). The node running a job is killed with SIGKILL;
// another node takes the job over and a surviving node's outputs resume.
func TestFailoverAcrossProcesses(t *testing.T) {
	servers, natsCfg := natsCluster(t)
	nodes := map[string]*nodeProcess{}
	for _, name := range []string{"n1", "n2", "n3"} {
		nodes[name] = startNode(t, name, "", natsCfg)
	}
	if code, body := nodes["n1"].post("/api/v1/jobs", tinyJob("live")); code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	var owner string
	testutil.Eventually(t, 20*time.Second, "the job running", func() bool {
		j, ok := nodes["n1"].job("live")
		owner = j.Owner
		return ok && j.State == jobs.StateRunning
	})
	// Watch from a node that does not run the job: media crosses nodes.
	var watcher *nodeProcess
	for name, n := range nodes {
		if name != owner {
			watcher = n
		}
	}
	testutil.Eventually(t, 10*time.Second, "the stream playing on "+watcher.name, func() bool {
		s, ok := watcher.stream("live")
		return ok && s.Stats.MediaTime > time.Second
	})

	// The first media packet on NATS after the kill comes from the new
	// owner's worker: the killed node's workers died with it.
	nc, err := servers[0].Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	firstMedia := make(chan time.Time, 1)
	var armed atomic.Bool
	sub, err := nc.Subscribe("media.live.0", func(*nats.Msg) {
		if armed.Load() {
			select {
			case firstMedia <- time.Now():
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	var seqBefore int
	deadline := time.Now().Add(30 * time.Second)
	for seqBefore = watcher.hlsSequence(t, "live"); seqBefore < 0; seqBefore = watcher.hlsSequence(t, "live") {
		if time.Now().After(deadline) {
			code, body := watcher.get("/hls/live/index.m3u8")
			s, _ := watcher.stream("live")
			t.Fatalf("no LL-HLS on %s after 30 s: %d %s\nstream: %+v\nlog:\n%s", watcher.name, code, body, s, watcher.logExcerpt())
		}
		time.Sleep(100 * time.Millisecond)
	}
	base, _ := watcher.stream("live")
	nodes[owner].kill9()
	killed := time.Now()
	time.AfterFunc(300*time.Millisecond, func() { armed.Store(true) }) // packets in flight at the kill
	var takeover, resumed time.Duration
	var newOwner string
	testutil.Eventually(t, 15*time.Second, "another node running the job and the output resuming", func() bool {
		if takeover == 0 {
			if j, ok := watcher.job("live"); ok && j.Owner != owner && j.State == jobs.StateRunning {
				takeover, newOwner = time.Since(killed), j.Owner
			}
		}
		if s, ok := watcher.stream("live"); ok && s.Restarts > base.Restarts && resumed == 0 {
			resumed = time.Since(killed) // the watcher's outputs follow the new publisher
		}
		return takeover > 0 && resumed > 0
	})
	media := (<-firstMedia).Sub(killed)
	testutil.Report(t, "killed %s: %s claimed the job after %s (polled), its media was on NATS after %s, the outputs on %s followed it after %s (polled)",
		owner, newOwner, takeover.Round(time.Millisecond), media.Round(time.Millisecond), watcher.name, resumed.Round(time.Millisecond))
	if media > 3*time.Second {
		t.Errorf("media resumed %s after the kill, target 3 s", media)
	}
	// LL-HLS on the surviving node goes on from where it was: same
	// playlist, the media sequence moves forward.
	testutil.Eventually(t, 10*time.Second, "the LL-HLS playlist moving on after the failover", func() bool {
		return watcher.hlsSequence(t, "live") > seqBefore+1
	})

	// Graceful drain: SIGTERM on the new owner hands the job to the last
	// node at once, without waiting for a lease to expire.
	drained := nodes[newOwner]
	drained.killed = true
	if err := drained.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	var last *nodeProcess
	for name, n := range nodes {
		if name != owner && name != newOwner {
			last = n
		}
	}
	testutil.Eventually(t, 15*time.Second, "the job moving to "+last.name, func() bool {
		j, ok := last.job("live")
		return ok && j.Owner == last.name && j.State == jobs.StateRunning
	})
	handover := time.Since(termAt)
	if err := drained.cmd.Wait(); err != nil {
		t.Errorf("%s after SIGTERM: %v\n%s", newOwner, err, drained.logExcerpt())
	}
	testutil.Report(t, "SIGTERM on %s: the job ran on %s after %s (drain hands it over)", newOwner, last.name, handover.Round(time.Millisecond))
	if handover > 2*time.Second {
		t.Errorf("drain handover took %s", handover)
	}

	// Never two owners at once: every new owner claimed after the previous
	// owner's lease had expired, or after it released the job.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := jobs.OpenStore(ctx, nc, jobs.StoreConfig{Replicas: 3, CheckLadder: ladder.Check})
	if err != nil {
		t.Fatal(err)
	}
	history, err := store.History(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	var prevOwner string
	var prevLease time.Time
	for _, h := range history {
		if h.Owner != "" && prevOwner != "" && h.Owner != prevOwner && h.UpdatedAt.Before(prevLease) {
			t.Errorf("revision %d: %s claimed at %s, before %s's lease ended at %s", h.Revision, h.Owner, h.UpdatedAt, prevOwner, prevLease)
		}
		switch {
		case h.Owner == "" || h.State == jobs.StatePending || h.State == jobs.StateStopped:
			prevOwner = "" // released (drain): the next claim needs no expiry
		default:
			prevOwner, prevLease = h.Owner, h.Lease
		}
	}
}

// TestWorkerCrashRestartsOnlyItsJob: killing one job's worker process
// restarts that job; the other job's frames keep coming from the same
// publisher.
func TestWorkerCrashRestartsOnlyItsJob(t *testing.T) {
	n := startNode(t, "solo", "", "")
	for _, id := range []string{"a", "b"} {
		if code, body := n.post("/api/v1/jobs", tinyJob(id)); code != 201 {
			t.Fatalf("submit %s: %d %s", id, code, body)
		}
	}
	var pid int
	testutil.Eventually(t, 20*time.Second, "both jobs playing", func() bool {
		a, okA := n.stream("a")
		b, okB := n.stream("b")
		j, _ := n.job("a")
		pid = j.WorkerPID
		return okA && okB && a.Stats.MediaTime > time.Second && b.Stats.MediaTime > time.Second && pid > 0
	})
	before, _ := n.stream("b")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "job a running in a new worker", func() bool {
		j, ok := n.job("a")
		s, sok := n.stream("a")
		return ok && j.State == jobs.StateRunning && j.WorkerPID != pid && j.WorkerPID != 0 && sok && s.Restarts >= 1
	})
	after, _ := n.stream("b")
	if after.Restarts != 0 || after.Stats.MediaTime <= before.Stats.MediaTime {
		t.Errorf("job b was disturbed: restarts %d, media time %s -> %s", after.Restarts, before.Stats.MediaTime, after.Stats.MediaTime)
	}
	if j, _ := n.job("a"); j.Attempts < 1 {
		t.Errorf("the crash was not counted as a failed attempt: %+v", j.Job)
	}
}

// TestJobAPIBadInput: malformed specs are refused with clear 4xx answers;
// an input that never connects ends failed with its reason; a serve-only
// node takes nothing, and says why.
func TestJobAPIBadInput(t *testing.T) {
	n := startNode(t, "serveonly", "  capacity: -1\n", "")
	for _, ca := range []struct {
		name string
		body string
		code int
		want string
	}{
		{"not JSON", "{", 400, "job spec"},
		{"unknown field", `{"id":"x","inptu":"y"}`, 400, "unknown field"},
		{"bad id", `{"id":"../x","input":"y","ladder":"default"}`, 400, "id"},
		{"no input", `{"id":"x","ladder":"default"}`, 400, "input"},
		{"unknown ladder", `{"id":"x","input":"y","ladder":"nosuch"}`, 400, "nosuch"},
		{"huge", `{"id":"x","input":"` + strings.Repeat("a", 300<<10) + `"}`, 413, "larger than"},
	} {
		resp, err := http.Post(n.base+"/api/v1/jobs", "application/json", strings.NewReader(ca.body))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != ca.code || !strings.Contains(string(body), ca.want) {
			t.Errorf("%s: %d %s, want %d with %q", ca.name, resp.StatusCode, body, ca.code, ca.want)
		}
	}
	if code, _ := n.get("/api/v1/jobs/nope"); code != 404 {
		t.Errorf("unknown job: %d", code)
	}
	if code, _ := n.post("/api/v1/jobs/nope/stop", nil); code != 404 {
		t.Errorf("stop unknown job: %d", code)
	}
	// Nobody here can run it: it waits, with the reason.
	n.post("/api/v1/jobs", tinyJob("waiting"))
	testutil.Eventually(t, 10*time.Second, "a pending job with a reason", func() bool {
		j, ok := n.job("waiting")
		return ok && j.State == jobs.StatePending && strings.Contains(j.Reason, "capacity")
	})

	// An input that never connects, on a node that can run it.
	worker := startNode(t, "worker", "", "")
	spec := tinyJob("unreachable")
	spec.Input, spec.Restart = "rtmp://127.0.0.1:1/live/x", false
	if code, body := worker.post("/api/v1/jobs", spec); code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	testutil.Eventually(t, 40*time.Second, "the job failed with its reason", func() bool {
		j, ok := worker.job("unreachable")
		return ok && j.State == jobs.StateFailed && strings.Contains(j.Reason, "cannot open input")
	})
	j, _ := worker.job("unreachable")
	testutil.Report(t, "failed after %d attempts: %s", j.Attempts, j.Reason)
}

// TestJobPublishesOverWHIP: a job submitted with a WHIP target (through the
// CLI) is pushed by the node that runs it, with the token, as one simulcast
// track with a RID per rung. (Media exchange with a real WHIP peer is
// tested in outputs/webrtc.)
func TestJobPublishesOverWHIP(t *testing.T) {
	offers := make(chan string, 4)
	whip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case offers <- r.Header.Get("Authorization") + "\n" + string(b):
		default:
		}
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer whip.Close()
	n := startNode(t, "pub", "", "")
	ladder := writeFile(t, t.TempDir(), "tiny.yaml", tinyJobLadder)
	code, out, errOut := prism(t, "job", "submit", "--server", n.base, "--id", "pushed", "--input", tinyJob("x").Input,
		"--ladder-file", ladder, "--publish", whip.URL+"/whip/pushed", "--publish-token", "s3cret")
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case offer := <-offers:
		for _, want := range []string{"Bearer s3cret", "a=simulcast:send", "a=rid:180p send", "a=rid:90p send", "opus"} {
			if !strings.Contains(offer, want) {
				t.Errorf("WHIP offer lacks %q:\n%s", want, offer)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no WHIP offer within 20 s")
	}
	if code, out, _ := prism(t, "job", "submit", "--server", n.base, "--id", "bad", "--input", "x", "--publish", "ftp://x"); code != 1 {
		t.Errorf("bad WHIP URL accepted: exit %d %s", code, out)
	}
}

// TestJobOutputsChooseDeliveries: a job's outputs decide what serves its
// stream. A job asking for outputs: [hls] plays on LL-HLS and answers 404
// on WHEP; a job that names none is served by both.
func TestJobOutputsChooseDeliveries(t *testing.T) {
	n := startNode(t, "outputs", "", "")
	hlsOnly := tinyJob("hlsonly")
	hlsOnly.Outputs = []string{jobs.OutputHLS}
	for _, spec := range []jobs.Spec{hlsOnly, tinyJob("both")} {
		if code, body := n.post("/api/v1/jobs", spec); code != 201 {
			t.Fatalf("submit %s: %d %s", spec.ID, code, body)
		}
	}
	testutil.Eventually(t, 30*time.Second, "both streams playing", func() bool {
		a, okA := n.stream("hlsonly")
		b, okB := n.stream("both")
		return okA && okB && a.Stats.MediaTime > time.Second && b.Stats.MediaTime > time.Second
	})
	whep := func(stream string) (int, string) {
		resp, err := http.Post(n.base+"/whep/"+stream, "application/sdp", strings.NewReader("v=0\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := whep("hlsonly"); code != http.StatusNotFound || !strings.Contains(body, "not found") {
		t.Errorf("WHEP of an HLS-only job: %d %s, want 404 stream not found", code, body)
	}
	if code, body := whep("both"); code == http.StatusNotFound {
		t.Errorf("WHEP of a job with every output: 404 %s", body)
	}
	// LL-HLS plays it: the multivariant playlist leads to a media playlist
	// whose parts download as fMP4.
	var variant string
	testutil.Eventually(t, 20*time.Second, "the HLS-only stream's playlists", func() bool {
		code, body := n.get("/hls/hlsonly/index.m3u8")
		if code != 200 {
			return false
		}
		for _, line := range strings.Split(string(body), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				variant = line
				break
			}
		}
		return variant != ""
	})
	var part string
	testutil.Eventually(t, 20*time.Second, "a part in the media playlist", func() bool {
		code, body := n.get("/hls/hlsonly/" + variant)
		if code != 200 {
			return false
		}
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "#EXT-X-PART:") {
				if _, rest, ok := strings.Cut(line, `URI="`); ok {
					part, _, _ = strings.Cut(rest, `"`)
				}
			}
		}
		return part != ""
	})
	code, media := n.get(path.Join("/hls/hlsonly", path.Dir(variant), part))
	if code != 200 || !bytes.Contains(media[:min(len(media), 64)], []byte("moof")) {
		t.Fatalf("part %s: %d, %d bytes, want an fMP4 fragment", part, code, len(media))
	}
}
