package jobs

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

// smallLadder is one 360p rung: 4 × TinyCost, so that a job of it fits
// only a node with that much room, which pins it to one node below.
const smallLadder = `name: small
gop: 1s
rungs:
  - {name: 360p, height: 360, bitrate: 400k, preset: ultrafast}
audio: {aac: {bitrate: 64k}, opus: {bitrate: 32k}}
`

// TestClockSkewDoesNotStealJobs runs three nodes whose wall clocks are 2 s
// ahead, 2 s behind and right (Node.ClockOffset: every time they write or
// read), four times NodeDeadAfter apart, with two jobs on each. Liveness is
// judged on each observer's own monotonic clock, so for many NodeDeadAfter
// periods no job may change owner, restart or even get a new revision.
// Then the node 2 s ahead dies (its connection closes, nothing is handed
// back) and its jobs must move within the usual bound: skew must neither
// fake a death nor hide a real one.
func TestClockSkewDoesNotStealJobs(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	client := openStore(t, testutil.DialNATS(t, e, "client"), 1)

	const skew = 2 * time.Second
	type member struct {
		id     string
		offset time.Duration
		runner *blockingRunner
		node   *Node
		jobs   []string
	}
	// Capacities pin the jobs: "ahead" (2 × TinyCost) fills up with its two
	// tiny jobs before the others start; "behind" then takes two tiny ones
	// and keeps 2 × TinyCost free; "exact" alone has room for the two
	// small (4 × TinyCost) jobs and keeps 2 × TinyCost free. After the
	// death of "ahead" both survivors have room for both of its jobs, so
	// the takeover never goes through the pending queue.
	members := []*member{
		{id: "ahead", offset: skew},
		{id: "behind", offset: -skew},
		{id: "exact"},
	}
	capacity := map[string]float64{"ahead": 2 * testutil.TinyCost, "behind": 4 * testutil.TinyCost, "exact": 10 * testutil.TinyCost}
	byID := map[string]*member{}
	deadConn := testutil.DialNATS(t, e, "ahead")
	for i, m := range members {
		nc := deadConn
		if m.id != "ahead" {
			nc = testutil.DialNATS(t, e, m.id)
		}
		m.runner = &blockingRunner{}
		n := fastNode(t, m.id, openStore(t, nc, 1), m.runner, capacity[m.id])
		n.ClockOffset = m.offset
		m.node = startNode(t, n)
		byID[m.id] = m
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%d nodes listed", i+1), func() bool {
			nodes, err := client.Nodes(ctx)
			return err == nil && len(nodes) == i+1
		})
		for k := 1; k <= 2; k++ {
			spec := tinySpec(fmt.Sprintf("%s-%d", m.id, k))
			if m.id == "exact" {
				spec.Ladder, spec.LadderYAML = "small", smallLadder
			}
			if _, err := client.Submit(ctx, spec); err != nil {
				t.Fatal(err)
			}
			m.jobs = append(m.jobs, spec.ID)
		}
		for _, id := range m.jobs {
			waitJob(t, client, id, 5*time.Second, id+" running on "+m.id, func(j *Job) bool {
				return j.State == StateRunning && j.Owner == m.id
			})
		}
	}

	// The hook is live: what each node writes carries its clock.
	nodes, err := client.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range nodes {
		m := byID[info.ID]
		if d := time.Until(info.Heartbeat) - m.offset; d < -time.Second || d > time.Second {
			t.Fatalf("%s: heartbeat written at %s, %s off its offset %s", info.ID, info.Heartbeat, d, m.offset)
		}
		j := getJob(t, client, m.jobs[0])
		if d := time.Until(j.UpdatedAt) - m.offset; d < -time.Second || d > time.Second {
			t.Fatalf("%s: updated at %s by %s, %s off its offset %s", j.Spec.ID, j.UpdatedAt, info.ID, d, m.offset)
		}
	}

	// Steady state, 10 × NodeDeadAfter (50 heartbeats): nothing moves. The
	// heartbeat is the lease, so a running job is not even rewritten.
	before := map[string]*Job{}
	jobs, err := client.List(ctx)
	if err != nil || len(jobs) != 6 {
		t.Fatalf("jobs: %d, %v", len(jobs), err)
	}
	for _, j := range jobs {
		before[j.Spec.ID] = j
	}
	deadAfter := members[0].node.NodeDeadAfter
	window := 10 * deadAfter
	unchanged := func(what string, ids map[string]*Job) {
		t.Helper()
		for id, was := range ids {
			j, err := client.Get(ctx, id)
			if err != nil {
				t.Fatalf("%s: %s: %v", what, id, err)
			}
			if j.Owner != was.Owner || j.State != was.State || j.Attempts != was.Attempts || j.Revision != was.Revision ||
				strings.Contains(j.Reason, "taken over") {
				t.Fatalf("%s: %s changed: owner %s→%s, state %s→%s, attempts %d→%d, revision %d→%d, reason %q",
					what, id, was.Owner, j.Owner, was.State, j.State, was.Attempts, j.Attempts, was.Revision, j.Revision, j.Reason)
			}
		}
		for _, m := range members {
			if m.runner.starts.Load() != 2 || m.runner.active.Load() != 2 {
				t.Fatalf("%s: %s: %d runs started, %d active, want 2 and 2", what, m.id, m.runner.starts.Load(), m.runner.active.Load())
			}
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(window); time.Now().Before(end); <-tick.C {
		unchanged("skewed clocks, all alive", before)
	}
	for id := range before {
		for _, h := range historyOf(t, client, id) {
			if h.Owner != "" && h.Owner != before[id].Owner {
				t.Fatalf("%s: revision %d names owner %s, reason %q", id, h.Revision, h.Owner, h.Reason)
			}
		}
	}
	t.Logf("clocks %s/%s/0 apart for %s (%d heartbeats, NodeDeadAfter %s): no job moved or was rewritten",
		skew, -skew, window, int(window/members[0].node.Heartbeat), deadAfter)

	// The node 2 s ahead dies as kill -9 would leave it: its connection
	// drops, its runners stop, nothing is handed back.
	ahead := byID["ahead"]
	killed := time.Now()
	deadConn.Close()
	testutil.Eventually(t, 2*time.Second, "the dead node's runners stopped", func() bool { return ahead.runner.active.Load() == 0 })
	bound := deadAfter + time.Second
	var took time.Duration
	for _, id := range ahead.jobs {
		j := waitJob(t, client, id, 2*bound, id+" running on a survivor", func(j *Job) bool {
			return j.State == StateRunning && (j.Owner == "behind" || j.Owner == "exact")
		})
		took = max(took, time.Since(killed))
		if j.Attempts != 1 || j.Reason != "taken over from ahead (node dead)" {
			t.Fatalf("%s taken over by %s: attempts %d, reason %q", id, j.Owner, j.Attempts, j.Reason)
		}
		checkOwnershipHistory(t, client, id)
	}
	t.Logf("jobs of the node 2 s ahead taken over %s after it died (NodeDeadAfter %s, heartbeat %s)",
		took.Round(time.Millisecond), deadAfter, ahead.node.Heartbeat)
	// Its last heartbeat came about a beat before the kill (later under
	// load), so the takeover comes NodeDeadAfter minus a beat or so after
	// it; much sooner would be a death faked by a skewed clock.
	if low := deadAfter / 2; took < low {
		t.Fatalf("taken over %s after the death, before half of NodeDeadAfter (%s)", took, low)
	}
	if took > bound {
		t.Fatalf("taken over %s after the death, want within %s", took, bound)
	}
	// The survivors' own jobs stayed where they were.
	rest := map[string]*Job{}
	for id, j := range before {
		if j.Owner != "ahead" {
			rest[id] = j
		}
	}
	for id, j := range rest {
		now := getJob(t, client, id)
		if now.Owner != j.Owner || now.Revision != j.Revision {
			t.Fatalf("%s: owner %s→%s, revision %d→%d after the death of ahead", id, j.Owner, now.Owner, j.Revision, now.Revision)
		}
	}
	if got := byID["behind"].runner.starts.Load() + byID["exact"].runner.starts.Load(); got != 6 {
		t.Fatalf("survivors started %d runs, want 4 of their own and the 2 taken over", got)
	}
}

// historyOf returns the job's kept revisions, failing the test on error.
func historyOf(t *testing.T, s *Store, id string) []*Job {
	t.Helper()
	hist, err := s.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return hist
}
