package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/jobs"
)

// What a cluster survives, with real processes: three nats-server
// processes (or the nodes' embedded servers clustered) and three `prism
// serve` nodes, replicas 3. Each step watches every job's media.<job>.0
// from a server that the step does not kill and measures the longest
// silence per job.

// Targets: a job whose owner lives is never interrupted for more than
// serverLossGap; a job whose owner died plays again within takeoverGap.
const (
	serverLossGap = time.Second
	takeoverGap   = 3 * time.Second
	rollingGap    = 3 * time.Second
)

// survival is one cluster under test.
type survival struct {
	t       *testing.T
	nodes   []*nodeProcess
	ids     []string
	servers *testutil.NATSProcs // external cluster; nil on the embedded one
	watchOn *testutil.NATSProc  // embedded cluster: the observer server
}

// smallNodeCapacity fits two tiny jobs: three jobs spread over at least two
// nodes, and the survivors of any one node have room for its jobs.
const smallNodeCapacity = "  capacity: 5e6\n"

func (c *survival) submit(specs ...jobs.Spec) {
	c.t.Helper()
	for _, s := range specs {
		if code, body := c.nodes[0].post("/api/v1/jobs", s); code != 201 {
			c.t.Fatalf("submit %s: %d %s", s.ID, code, body)
		}
		c.ids = append(c.ids, s.ID)
	}
	c.waitRunning(60*time.Second, "")
}

// live is a node other than the named ones whose process runs.
func (c *survival) live(not ...string) *nodeProcess {
	for _, n := range c.nodes {
		if !n.killed && !slices.Contains(not, n.name) {
			return n
		}
	}
	c.t.Fatal("no live node")
	return nil
}

func (c *survival) node(name string) (int, *nodeProcess) {
	for i, n := range c.nodes {
		if n.name == name {
			return i, n
		}
	}
	return -1, nil
}

// waitRunning waits until every job runs on a live node other than not.
func (c *survival) waitRunning(timeout time.Duration, not string) map[string]string {
	c.t.Helper()
	var owners map[string]string
	testutil.Eventually(c.t, timeout, "every job running on a live node", func() bool {
		owners = jobOwners(c.live(not), c.ids)
		for _, o := range owners {
			if _, n := c.node(o); n == nil || n.killed || o == not {
				return false
			}
		}
		return true
	})
	return owners
}

// hlsSeqs is each job's LL-HLS media sequence on n (asking creates demand).
func (c *survival) hlsSeqs(n *nodeProcess) map[string]int {
	c.t.Helper()
	seqs := map[string]int{}
	for _, id := range c.ids {
		testutil.Eventually(c.t, 30*time.Second, "LL-HLS of "+id+" on "+n.name, func() bool {
			seqs[id] = n.hlsSequence(c.t, id)
			return seqs[id] >= 0
		})
	}
	return seqs
}

// hlsAdvanced checks that n's LL-HLS playlists moved on from before.
func (c *survival) hlsAdvanced(n *nodeProcess, before map[string]int) {
	c.t.Helper()
	for _, id := range c.ids {
		testutil.Eventually(c.t, 30*time.Second, "LL-HLS of "+id+" on "+n.name+" advancing", func() bool {
			return n.hlsSequence(c.t, id) > before[id]
		})
	}
}

func (c *survival) watchURL(not ...*testutil.NATSProc) string {
	if c.servers == nil {
		return c.watchOn.ClientURL
	}
	return c.servers.Other(not...).ClientURL
}

// gaps formats each job's largest gap, sorted by job.
func gaps(res map[string]mediaResult) string {
	var out []string
	for _, id := range slices.Sorted(maps.Keys(res)) {
		out = append(out, fmt.Sprintf("%s %s", id, res[id].maxGap.Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}

// maxGap is the largest gap over every job.
func maxGap(res map[string]mediaResult) time.Duration {
	var m time.Duration
	for _, r := range res {
		m = max(m, r.maxGap)
	}
	return m
}

// natsServerLoss stops server p with sig, waits for new stream leaders and
// three more seconds of media, starts p again and waits for its replicas
// to be current. No job may change owner or publisher, or pause for more
// than serverLossGap.
func (c *survival) natsServerLoss(p *testutil.NATSProc, sig syscall.Signal, how string) time.Duration {
	t := c.t
	t.Helper()
	watchOn := c.watchURL(p)
	ctl := testutil.DialNATSURL(t, watchOn)
	defer ctl.Close()
	leadersBefore := testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
	var led []string
	for _, s := range testutil.JobStoreStreams {
		if leadersBefore[s] == p.Name {
			led = append(led, s)
		}
	}
	if c.servers != nil && c.servers.MetaLeader() == p.Name {
		led = append(led, "meta")
	}
	hlsNode := c.nodes[0]
	owners := jobOwners(hlsNode, c.ids)
	seqs := c.hlsSeqs(hlsNode)
	w := watchMedia(t, watchOn, c.ids)
	p.Stop(sig)
	at := time.Now()
	var back time.Duration
	testutil.Eventually(t, 60*time.Second, "new stream leaders and 3 s of media after "+how+" "+p.Name, func() bool {
		if back == 0 {
			if l, _ := testutil.StreamLeaders(ctl, 3); len(l) == len(testutil.JobStoreStreams) && !slices.Contains(slices.Collect(maps.Values(l)), p.Name) {
				back = time.Since(at)
			}
			return false
		}
		return time.Since(at) > back+3*time.Second && time.Since(at) > 6*time.Second
	})
	p.Start()
	testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
	res := w.stop()
	after := jobOwners(c.live(), c.ids)
	testutil.Report(t, "%s %s (leader of %v): streams led again after %s; largest media gap per job: %s; owners before %v, after %v",
		how, p.Name, led, back.Round(time.Millisecond), gaps(res), owners, after)
	for _, id := range c.ids {
		if r := res[id]; r.maxGap > serverLossGap {
			t.Errorf("%s %s: job %s was silent for %s (target %s)", how, p.Name, id, r.maxGap.Round(time.Millisecond), serverLossGap)
		}
		if n := len(res[id].instances); n != 1 {
			t.Errorf("%s %s: job %s had %d publishers (restarted)", how, p.Name, id, n)
		}
		if owners[id] != after[id] {
			t.Errorf("%s %s: job %s moved from %s to %s", how, p.Name, id, owners[id], after[id])
		}
	}
	c.hlsAdvanced(hlsNode, seqs)
	if t.Failed() {
		c.dumpLogs()
	}
	return maxGap(res)
}

// nodeLoss kills node victim with SIGKILL (and server p with it, if not
// nil), waits until its jobs run elsewhere, and restarts the node if
// restart. The victim's jobs must play again within takeoverGap, the
// others must not pause for more than serverLossGap.
func (c *survival) nodeLoss(victim string, p *testutil.NATSProc, restart bool, how string) (resume, others time.Duration) {
	t := c.t
	t.Helper()
	watchOn := c.watchURL(p)
	ctl := testutil.DialNATSURL(t, watchOn)
	defer ctl.Close()
	testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
	idx, n := c.node(victim)
	hlsNode := c.live(victim)
	owners := jobOwners(hlsNode, c.ids)
	seqs := c.hlsSeqs(hlsNode)
	w := watchMedia(t, watchOn, c.ids)
	n.kill9()
	if p != nil {
		p.Stop(syscall.SIGKILL)
	}
	at := time.Now()
	var moved []string
	for _, id := range c.ids {
		if owners[id] == victim {
			moved = append(moved, id)
		}
	}
	// The survivors' jobs are watched for at least 6 s (a lease and more)
	// so that an owner fencing itself during the election shows.
	c.waitRunning(60*time.Second, victim)
	testutil.Eventually(t, 60*time.Second, "the media of every job flowing 6 s after the kill", func() bool {
		return time.Since(at) > 6*time.Second && w.flowing(300*time.Millisecond)
	})
	if p != nil {
		p.Start()
	}
	if restart {
		c.nodes[idx] = n.restarted()
	}
	testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
	res := w.stop()
	after := jobOwners(c.live(), c.ids)
	var resumes []string
	for _, id := range c.ids {
		r := res[id]
		if !slices.Contains(moved, id) {
			others = max(others, r.maxGap)
			if r.maxGap > serverLossGap {
				t.Errorf("%s: job %s on %s was silent for %s (target %s)", how, id, owners[id], r.maxGap.Round(time.Millisecond), serverLossGap)
			}
			if len(r.instances) != 1 || owners[id] != after[id] {
				t.Errorf("%s: job %s on %s restarted or moved: %d publishers, owner now %s", how, id, owners[id], len(r.instances), after[id])
			}
			continue
		}
		pub, ok := r.newPublisher(at)
		if !ok {
			t.Errorf("%s: job %s has no new publisher", how, id)
			continue
		}
		d := pub.first.Sub(at)
		resume = max(resume, d)
		resumes = append(resumes, fmt.Sprintf("%s on %s after %s (keyframe %s)", id, after[id], d.Round(time.Millisecond), pub.firstKey.Sub(at).Round(time.Millisecond)))
		if d > takeoverGap {
			t.Errorf("%s: job %s played again %s after the kill (target %s)", how, id, d.Round(time.Millisecond), takeoverGap)
		}
	}
	if len(moved) == 0 {
		t.Logf("%s: %s owned no job, only the other jobs are tested (owners %v)", how, victim, owners)
	}
	testutil.Report(t, "%s: media of the killed node's jobs on NATS again: %s; largest gap per job: %s",
		how, strings.Join(resumes, ", "), gaps(res))
	c.hlsAdvanced(hlsNode, seqs)
	if t.Failed() {
		c.dumpLogs()
	}
	return resume, others
}

// rollingRestart drains each node with SIGTERM and starts it again, one
// after the other. Every job's gap stays within rollingGap; the drain is
// measured from SIGTERM to the new owner's first keyframe on NATS.
func (c *survival) rollingRestart() (worstGap, worstDrain time.Duration) {
	t := c.t
	t.Helper()
	for i := range c.nodes {
		n := c.nodes[i]
		watchOn := c.watchURL()
		ctl := testutil.DialNATSURL(t, watchOn)
		testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
		owners := jobOwners(c.live(n.name), c.ids)
		w := watchMedia(t, watchOn, c.ids)
		term := time.Now()
		if err := n.terminate(); err != nil {
			t.Errorf("%s after SIGTERM: %v\n%s", n.name, err, n.logExcerpt())
		}
		exited := time.Since(term)
		c.waitRunning(60*time.Second, n.name)
		c.nodes[i] = n.restarted()
		testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
		testutil.Eventually(t, 30*time.Second, "every job's media flowing", func() bool { return w.flowing(300 * time.Millisecond) })
		res := w.stop()
		ctl.Close()
		var drains []string
		for _, id := range c.ids {
			r := res[id]
			worstGap = max(worstGap, r.maxGap)
			if r.maxGap > rollingGap {
				t.Errorf("rolling restart of %s: job %s was silent for %s (target %s)", n.name, id, r.maxGap.Round(time.Millisecond), rollingGap)
			}
			if owners[id] != n.name {
				continue
			}
			pub, ok := r.newPublisher(term)
			if !ok || pub.firstKey.IsZero() {
				t.Errorf("rolling restart of %s: job %s has no new publisher with a keyframe (SIGTERM at %s; publishers seen: %s)", n.name, id, term.Format("15:04:05.000"), r.describe())
				continue
			}
			d := pub.firstKey.Sub(term)
			worstDrain = max(worstDrain, d)
			drains = append(drains, fmt.Sprintf("%s %s", id, d.Round(time.Millisecond)))
		}
		testutil.Report(t, "rolling restart, SIGTERM %s (exited after %s): SIGTERM to the new owner's first keyframe on NATS: [%s]; largest gap per job: %s",
			n.name, exited.Round(time.Millisecond), strings.Join(drains, ", "), gaps(res))
	}
	if t.Failed() {
		c.dumpLogs()
	}
	return worstGap, worstDrain
}

// dumpLogs logs the tail of every process's output, for a failed step.
func (c *survival) dumpLogs() {
	tail := func(s string) string {
		if len(s) > 6000 {
			return "…" + s[len(s)-6000:]
		}
		return s
	}
	for _, n := range c.nodes {
		c.t.Logf("== %s ==\n%s", n.name, n.logExcerpt())
	}
	if c.servers != nil {
		for _, p := range c.servers.Procs {
			c.t.Logf("== %s ==\n%s", p.Name, tail(p.Log.String()))
		}
	}
}

// TestClusterSurvivesNATSServerLoss: three nats-server processes (R3) and
// three prism nodes. Each server is killed in turn (the jobs bucket's
// leader first), then each is restarted with SIGTERM, then the nodes are
// restarted one by one, and last a node and a server die together.
func TestClusterSurvivesNATSServerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster test")
	}
	servers, natsCfg := startNATSServers(t, 3)
	c := &survival{t: t, servers: servers}
	for _, name := range []string{"n1", "n2", "n3"} {
		c.nodes = append(c.nodes, startNode(t, name, smallNodeCapacity, natsCfg))
	}
	c.submit(tinyJob("j1"), tinyJob("j2"), tinyJob("j3"))

	ctl := testutil.DialNATSURL(t, servers.Procs[0].ClientURL)
	leader := servers.ByName(testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)["KV_prism_jobs"])
	ctl.Close()
	order := []*testutil.NATSProc{leader}
	for _, p := range servers.Procs {
		if p != leader {
			order = append(order, p)
		}
	}
	var kill, term time.Duration
	for _, p := range order {
		kill = max(kill, c.natsServerLoss(p, syscall.SIGKILL, "kill -9"))
	}
	for _, p := range servers.Procs {
		term = max(term, c.natsServerLoss(p, syscall.SIGTERM, "restart (SIGTERM)"))
	}
	rolling, drain := c.rollingRestart()

	// A node and a server together. The server is the JetStream meta
	// leader, which every watcher (re)start needs for its consumer, but it
	// leads neither KV bucket: a takeover's writes need the jobs bucket's
	// leader, and a node dying with it waits for an election (4–9 s in
	// nats-server), which is not what this step measures. Buckets led by
	// the meta leader step down until both are led elsewhere.
	ctl = testutil.DialNATSURL(t, servers.Procs[0].ClientURL)
	var p *testutil.NATSProc
	for try := 0; ; try++ {
		leaders := testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)
		meta := servers.MetaLeader()
		if meta == "" {
			t.Fatal("no JetStream meta leader in /jsz")
		}
		var busy []string
		for _, b := range []string{"KV_prism_jobs", "KV_prism_nodes"} {
			if leaders[b] == meta {
				busy = append(busy, b)
			}
		}
		if len(busy) == 0 {
			p = servers.ByName(meta)
			break
		}
		if try == 10 {
			t.Fatalf("buckets still led by the meta leader %s after %d step-downs: %v", meta, try, leaders)
		}
		for _, b := range busy {
			if _, err := ctl.Request("$JS.API.STREAM.LEADER.STEPDOWN."+b, nil, 5*time.Second); err != nil {
				t.Fatalf("step down %s's leader: %v", b, err)
			}
		}
		testutil.Eventually(t, 30*time.Second, "new bucket leaders", func() bool {
			l, missing := testutil.StreamLeaders(ctl, 3)
			if missing != "" {
				return false
			}
			for _, b := range busy {
				if l[b] == meta {
					return false
				}
			}
			return true
		})
	}
	ctl.Close()
	owners := jobOwners(c.nodes[0], c.ids)
	resume, others := c.nodeLoss(owners[c.ids[0]], p, true, fmt.Sprintf("kill -9 node %s and server %s (meta leader)", owners[c.ids[0]], p.Name))

	// A node and the jobs bucket's leader together, as any node of an
	// embedded cluster whose server leads it: the bucket takes no claim
	// until its election ends, the successors run the jobs meanwhile.
	ctl = testutil.DialNATSURL(t, servers.Procs[0].ClientURL)
	jobsLeader := servers.ByName(testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)["KV_prism_jobs"])
	ctl.Close()
	c.waitRunning(60*time.Second, "")
	owners = jobOwners(c.nodes[0], c.ids)
	victim := owners[c.ids[1]]
	r2, o2 := c.nodeLoss(victim, jobsLeader, false, fmt.Sprintf("kill -9 node %s and server %s (jobs bucket leader)", victim, jobsLeader.Name))
	resume, others = max(resume, r2), max(others, o2)
	testutil.Report(t, "summary (tiny ladder 320x180 + 160x90, 3 jobs): NATS server kill -9: largest gap %s; NATS server restarts: %s; rolling restart: largest gap %s, drain SIGTERM to first keyframe at most %s; node + server killed: resumed after %s, other jobs' largest gap %s",
		kill.Round(time.Millisecond), term.Round(time.Millisecond), rolling.Round(time.Millisecond), drain.Round(time.Millisecond), resume.Round(time.Millisecond), others.Round(time.Millisecond))
}

// embeddedCluster starts n prism nodes whose embedded NATS servers form
// the cluster, and an observer server routed to them.
func embeddedCluster(t *testing.T, n int, nodeCfg string) *survival {
	t.Helper()
	const routeToken = "prism-route-token-0123456789"
	var routes []string
	clients := make([]string, n)
	for i := range n {
		clients[i] = freePort(t)
		routes = append(routes, "nats://"+freePort(t))
	}
	c := &survival{t: t}
	for i := range n {
		cfg := nodeCfg + fmt.Sprintf("nats:\n  listen: %q\n  cluster:\n    name: prism\n    listen: %q\n    routes: [%s]\n    token: %q\n",
			clients[i], strings.TrimPrefix(routes[i], "nats://"), strings.Join(routes, ", "), routeToken)
		c.nodes = append(c.nodes, spawnNode(t, t.TempDir(), freePort(t), fmt.Sprintf("e%d", i+1), cfg))
	}
	for _, n := range c.nodes {
		n.waitUp(90 * time.Second)
	}
	c.watchOn = startObserver(t, routes, routeToken)
	return c
}

// TestEmbeddedClusterSurvivesNodeLoss: three prism nodes whose embedded
// servers are clustered; killing a node kills its server. Each node is
// killed in turn (first one with a job whose server leads the jobs
// bucket, so that the claim waits for an election) and restarted.
func TestEmbeddedClusterSurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster test")
	}
	c := embeddedCluster(t, 3, smallNodeCapacity)
	c.submit(tinyJob("j1"), tinyJob("j2"), tinyJob("j3"))
	// The first victim owns a job and its server leads the jobs bucket:
	// the leader steps down until that holds.
	ctl := testutil.DialNATSURL(t, c.watchOn.ClientURL)
	var leader string
	for try := 0; ; try++ {
		leader = testutil.WaitStreamsHealthy(t, ctl, 60*time.Second)["KV_prism_jobs"]
		owners := c.waitRunning(60*time.Second, "")
		if slices.Contains(slices.Collect(maps.Values(owners)), leader) {
			break
		}
		if try == 10 {
			t.Fatalf("the jobs bucket never led by a node with a job (leader %s, owners %v)", leader, owners)
		}
		if _, err := ctl.Request("$JS.API.STREAM.LEADER.STEPDOWN.KV_prism_jobs", nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, "a new jobs bucket leader", func() bool {
			l, missing := testutil.StreamLeaders(ctl, 3)
			return missing == "" && l["KV_prism_jobs"] != leader
		})
	}
	ctl.Close()
	order := []string{leader}
	for _, n := range c.nodes {
		if n.name != leader {
			order = append(order, n.name)
		}
	}
	var resume, others time.Duration
	for _, victim := range order {
		r, o := c.nodeLoss(victim, nil, true, "kill -9 node "+victim+" (and its embedded server)")
		resume, others = max(resume, r), max(others, o)
	}
	testutil.Report(t, "summary (tiny ladder, 3 jobs, embedded cluster): node kill -9: the killed node's jobs on NATS again after at most %s, other jobs' largest gap %s",
		resume.Round(time.Millisecond), others.Round(time.Millisecond))
}

// TestClusterNodeKill720p (make test-cluster-long): the node kill with a
// 720p30 source and the default ladder, on an external cluster and on the
// embedded one: the job's media is on NATS again within 3 s.
func TestClusterNodeKill720p(t *testing.T) {
	if os.Getenv("PRISM_TEST_CLUSTER_LONG") == "" {
		t.Skip("opt-in: make test-cluster-long (PRISM_TEST_CLUSTER_LONG=1)")
	}
	spec := jobs.Spec{ID: "hd", Input: "lavfi:testsrc2=size=1280x720:rate=30[out0];sine=sample_rate=48000[out1]", Ladder: "default", Restart: true}
	run := func(t *testing.T, c *survival) {
		c.submit(spec)
		owner := jobOwners(c.nodes[0], c.ids)["hd"]
		resume, _ := c.nodeLoss(owner, nil, true, "default ladder, 720p30: kill -9 node "+owner)
		testutil.Report(t, "default ladder, 720p30 source: media on NATS again %s after the kill", resume.Round(time.Millisecond))
	}
	t.Run("external", func(t *testing.T) {
		servers, natsCfg := startNATSServers(t, 3)
		c := &survival{t: t, servers: servers}
		for _, name := range []string{"n1", "n2", "n3"} {
			c.nodes = append(c.nodes, startNode(t, name, "", natsCfg))
		}
		run(t, c)
	})
	t.Run("embedded", func(t *testing.T) {
		run(t, embeddedCluster(t, 3, ""))
	})
}
