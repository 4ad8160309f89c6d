package jobs

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/relay"
)

// TestFailoverAfterOwnerDies runs three nodes on a three-server cluster
// (R3 buckets and stream), each on its own connection and with a real
// transcoder, kills the owner of a job the way kill -9 does (its
// connection drops, its media stops, nothing is released), and measures
// how long until another node runs the job.
func TestFailoverAfterOwnerDies(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	ctx := context.Background()
	servers := testutil.StartNATSCluster(t, 3)

	type member struct {
		nc     *nats.Conn
		store  *Store
		runner *transcodeRunner
		node   *Node
	}
	members := map[string]*member{}
	for i, srv := range servers {
		id := fmt.Sprintf("node%d", i+1)
		nc := testutil.DialNATS(t, srv, id)
		m := &member{nc: nc, store: openStore(t, nc, 3), runner: &transcodeRunner{nc: nc, log: testutil.Logger(t)}}
		// Production timings: the 3 s target is for the defaults.
		m.node = startNode(t, &Node{ID: id, Store: m.store, Runner: m.runner, Capacity: 4 * testutil.TinyCost, Log: testutil.Logger(t)})
		members[id] = m
	}
	// The test watches through a connection of its own, which no kill
	// touches.
	client := openStore(t, testutil.DialNATS(t, servers[0], "client"), 3)
	testutil.Eventually(t, 5*time.Second, "three nodes listed", func() bool {
		nodes, err := client.Nodes(ctx)
		return err == nil && len(nodes) == 3
	})

	if _, err := client.Submit(ctx, tinySpec("live")); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, client, "live", 15*time.Second, "job running", func(j *Job) bool { return j.State == StateRunning })
	owner := j.Owner
	var viewer *member
	for id, m := range members {
		if id != owner {
			viewer = m
			break
		}
	}
	t.Logf("job running on %s", owner)

	// A viewer on another node plays the stream through NATS.
	media := func() pipeline.Source {
		var remote pipeline.Source
		testutil.Eventually(t, 5*time.Second, "media subscription", func() bool {
			var err error
			remote, err = relay.Follow(ctx, viewer.nc, "live", relay.WithPublisherWait(0))
			return err == nil
		})
		return remote
	}
	expectPackets := func(remote pipeline.Source, what string) {
		t.Helper()
		r := remote.Subscribe()
		defer r.Close()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for range 30 {
			if _, err := r.Read(rctx); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	before := media()
	defer before.Close()
	expectPackets(before, "media before the failure")

	// kill -9 the owner: its connection drops and its media stops; nothing
	// is handed back.
	dead := members[owner]
	killed := time.Now()
	dead.nc.Close()
	testutil.Eventually(t, 2*time.Second, "dead node's transcoder stopped", func() bool { return dead.runner.active.Load() == 0 })

	taken := waitJob(t, client, "live", 5*time.Second, "job running on a survivor", func(j *Job) bool {
		return j.State == StateRunning && j.Owner != owner && j.Owner != ""
	})
	takeover := time.Since(killed)
	t.Logf("takeover: %s -> %s in %s (dead after %s, heartbeat %s)", owner, taken.Owner, takeover.Round(time.Millisecond), DefaultNodeDeadAfter, DefaultHeartbeat)
	if takeover >= 3*time.Second {
		t.Errorf("takeover took %s, want < 3s", takeover)
	}
	if taken.Attempts != 1 || taken.Reason != "taken over from "+owner+" (node dead)" {
		t.Errorf("taken over: attempts %d, reason %q", taken.Attempts, taken.Reason)
	}

	// The viewer's old subscription ends (its publisher is gone); a new one
	// plays the new owner's media.
	select {
	case <-before.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("old media subscription outlived its publisher")
	}
	after := media()
	defer after.Close()
	expectPackets(after, "media after the takeover")

	// No job lost, exactly one running.
	jobs, err := client.List(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].State != StateRunning {
		t.Fatalf("jobs after failover: %v, %v", jobs, err)
	}
	running := 0
	for id, m := range members {
		if id != owner {
			running += int(m.runner.active.Load())
		}
	}
	if running != 1 {
		t.Fatalf("%d transcoders running on the survivors, want 1", running)
	}
	checkOwnershipHistory(t, client, "live")
}

// checkOwnershipHistory checks the job's KV history: every change of owner
// is either a takeover that names the previous owner or follows a release
// (a revision with no owner), and the history shows at least one takeover.
// (That two runners never overlapped is checked on the runners
// themselves, see intervalRunner.)
func checkOwnershipHistory(t *testing.T, s *Store, id string) {
	t.Helper()
	hist, err := s.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var prevOwner string
	takeovers := 0
	for _, h := range hist {
		switch h.Owner {
		case "", prevOwner:
		default:
			if prevOwner != "" {
				if !strings.HasPrefix(h.Reason, "taken over from "+prevOwner+" (") {
					t.Fatalf("revision %d: %s took the job from %s without a takeover: %q", h.Revision, h.Owner, prevOwner, h.Reason)
				}
				takeovers++
			}
		}
		prevOwner = h.Owner
	}
	if takeovers < 1 {
		t.Fatalf("history shows no takeover (%d revisions kept)", len(hist))
	}
}
