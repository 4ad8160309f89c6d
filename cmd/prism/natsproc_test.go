package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/jobs"
)

// Helpers of the multi-process cluster tests (survive_test.go): real
// nats-server processes, so that kill -9 is a real kill; restartable
// prism nodes; and a watcher of each job's media on NATS, which measures
// the longest silence.

// startNATSServers starts n clustered nats-server processes
// (testutil.StartNATSProcs) and returns them with the node configuration
// that joins them.
func startNATSServers(t *testing.T, n int) (*testutil.NATSProcs, string) {
	t.Helper()
	s := testutil.StartNATSProcs(t, n)
	return s, fmt.Sprintf("nats:\n  url: %s\n  token: %s\n", strings.Join(s.URLs(), ","), testutil.NATSProcToken)
}

// startObserver starts a nats-server process without JetStream that joins
// the embedded cluster of prism nodes over its routes: the test's window
// on the nodes' NATS, whose client token nothing outside a node can read.
func startObserver(t *testing.T, routes []string, routeToken string) *testutil.NATSProc {
	t.Helper()
	bin := testutil.NATSServerBin(t)
	dir := t.TempDir()
	client, route := freePort(t), freePort(t)
	var withAuth []string
	for _, r := range routes {
		// The nodes' routes present user "prism" with the route token.
		withAuth = append(withAuth, "nats://prism:"+routeToken+"@"+strings.TrimPrefix(r, "nats://"))
	}
	conf := fmt.Sprintf(`server_name: observer
listen: %s
authorization { token: %q }
cluster {
  name: prism
  listen: %s
  authorization { user: prism, password: %q }
  routes: [%s]
}
`, client, testutil.NATSProcToken, route, routeToken, strings.Join(withAuth, ", "))
	p := testutil.NewNATSProc(t, bin, writeFile(t, dir, "observer.conf", conf), "observer", "nats://"+client)
	p.Start()
	t.Cleanup(func() { p.Stop(syscall.SIGTERM) })
	return p
}

// spawnNode starts `prism serve` in dir with the configuration cfg (the
// same defaults as startNodeOn), without waiting for it: the first node of
// an embedded cluster cannot open its R3 store before its peers run.
func spawnNode(t *testing.T, dir, addr, name, cfg string) *nodeProcess {
	t.Helper()
	cfg += "inputs:\n  allow_lavfi: true\ningest:\n  rtmp: \"\"\n  srt: \"\"\n"
	file := writeFile(t, dir, "prism.yaml", "node:\n  id: "+name+"\n"+followAlways+cfg)
	_, port, _ := net.SplitHostPort(addr)
	n := &nodeProcess{t: t, name: name, base: "http://127.0.0.1:" + port}
	n.cmd = exec.Command(prismBin, "serve", "--config", file, "--http", addr, "--data-dir", dir, "--stats-interval", "0", "--webrtc-port", "0")
	n.startCmd()
	return n
}

func (n *nodeProcess) startCmd() {
	n.t.Helper()
	n.cmd.Stderr = &n.stderr
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	t := n.t
	t.Cleanup(func() {
		if !n.killed {
			n.killed = true
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			_ = n.cmd.Wait()
		}
	})
}

// waitUp waits for the node's /healthz.
func (n *nodeProcess) waitUp(timeout time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if code, _ := n.get("/healthz"); code == 200 {
			return
		}
		if n.exited() {
			n.killed = true
			n.t.Fatalf("%s exited before answering /healthz:\n%s", n.name, n.logExcerpt())
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s did not answer /healthz within %s:\n%s", n.name, timeout, n.logExcerpt())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restarted starts the node's process again with the same arguments (same
// configuration, ports and data directory) after it ended.
func (n *nodeProcess) restarted() *nodeProcess {
	n.t.Helper()
	r := &nodeProcess{t: n.t, name: n.name, base: n.base}
	r.cmd = exec.Command(n.cmd.Path, n.cmd.Args[1:]...)
	r.startCmd()
	r.waitUp(60 * time.Second)
	return r
}

// terminate sends SIGTERM (a drain) and waits for the process to end.
func (n *nodeProcess) terminate() error {
	n.killed = true
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return n.cmd.Wait()
}

// mediaWatch subscribes to each job's media.<job>.0 on one connection and
// records, per job, the longest silence between two messages and every
// publisher instance it saw (wire header bytes 4..12), in order of first
// appearance.
type mediaWatch struct {
	nc   *nats.Conn
	subs []*nats.Subscription
	mu   sync.Mutex
	jobs map[string]*jobMedia
}

type jobMedia struct {
	last      time.Time
	maxGap    time.Duration
	gapEnd    time.Time
	packets   int
	instances []publisherSeen
}

// publisherSeen is one publisher instance of a job's media.
type publisherSeen struct {
	id       uint64
	first    time.Time // its first message
	firstKey time.Time // its first keyframe; zero if none yet
}

func watchMedia(t *testing.T, url string, ids []string) *mediaWatch {
	t.Helper()
	w := &mediaWatch{nc: testutil.DialNATSURL(t, url), jobs: map[string]*jobMedia{}}
	for _, id := range ids {
		jm := &jobMedia{}
		w.jobs[id] = jm
		sub, err := w.nc.Subscribe("media."+id+".0", func(m *nats.Msg) { w.packet(jm, m.Data) })
		if err != nil {
			t.Fatal(err)
		}
		w.subs = append(w.subs, sub)
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Interest crosses the routes before the watch counts silences.
	testutil.Eventually(t, 15*time.Second, "media of every job on "+url, func() bool { return w.flowing(time.Second) })
	return w
}

func (w *mediaWatch) packet(jm *jobMedia, data []byte) {
	now := time.Now()
	if len(data) < 56 || data[0] != 2 {
		return
	}
	inst := binary.BigEndian.Uint64(data[4:12])
	key := data[1]&1 != 0 && binary.BigEndian.Uint16(data[16:18]) == 0
	w.mu.Lock()
	defer w.mu.Unlock()
	if !jm.last.IsZero() && now.Sub(jm.last) > jm.maxGap {
		jm.maxGap, jm.gapEnd = now.Sub(jm.last), now
	}
	jm.last = now
	jm.packets++
	// A drain hands over with both publishers live for a moment, so their
	// messages interleave: each instance is recorded once, by id.
	i := slices.IndexFunc(jm.instances, func(p publisherSeen) bool { return p.id == inst })
	if i < 0 {
		jm.instances = append(jm.instances, publisherSeen{id: inst, first: now})
		i = len(jm.instances) - 1
	}
	if key && jm.instances[i].firstKey.IsZero() {
		jm.instances[i].firstKey = now
	}
}

// flowing reports whether every job had a message within the last d.
func (w *mediaWatch) flowing(d time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, jm := range w.jobs {
		if jm.last.IsZero() || time.Since(jm.last) > d {
			return false
		}
	}
	return true
}

// mediaResult is what the watch saw of one job.
type mediaResult struct {
	maxGap    time.Duration // the longest silence, the one still going at the end included
	instances []publisherSeen
}

// newPublisher is the first publisher instance that started after at.
func (r mediaResult) newPublisher(at time.Time) (publisherSeen, bool) {
	for _, p := range r.instances[1:] {
		if p.first.After(at) {
			return p, true
		}
	}
	return publisherSeen{}, false
}

// describe lists the publishers seen: id, first message, first keyframe.
func (r mediaResult) describe() string {
	var out []string
	for _, p := range r.instances {
		key := "no keyframe"
		if !p.firstKey.IsZero() {
			key = "keyframe " + p.firstKey.Format("15:04:05.000")
		}
		out = append(out, fmt.Sprintf("%x from %s, %s", p.id, p.first.Format("15:04:05.000"), key))
	}
	return strings.Join(out, "; ")
}

// stop ends the watch and returns what it saw of each job.
func (w *mediaWatch) stop() map[string]mediaResult {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
	w.nc.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]mediaResult{}
	for id, jm := range w.jobs {
		r := mediaResult{maxGap: jm.maxGap, instances: append([]publisherSeen(nil), jm.instances...)}
		if tail := time.Since(jm.last); tail > r.maxGap {
			r.maxGap = tail
		}
		out[id] = r
	}
	return out
}

// jobOwners returns each job's owner and state as node n reports them.
func jobOwners(n *nodeProcess, ids []string) map[string]string {
	out := map[string]string{}
	for _, id := range ids {
		j, ok := n.job(id)
		switch {
		case !ok:
			out[id] = "(unknown)" // the node did not answer (starting, or busy)
		case j.State == jobs.StateRunning:
			out[id] = j.Owner
		default:
			out[id] = "(" + string(j.State) + ")"
		}
	}
	return out
}
