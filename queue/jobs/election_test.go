package jobs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

// TestTakeoverDuringJobsBucketElection: three nodes, each on its own
// server of a three-server cluster (nats-server processes), as with the
// embedded cluster; the node on the server that leads the jobs bucket
// dies together with its server (kill -9). The bucket takes no write until its election ends (4–9 s in
// nats-server), yet the dead node's jobs run again on the survivors
// within the takeover bound: the successor starts them at once and writes
// its claim when the bucket has a leader again. No job ever runs twice
// once the claims are in.
func TestTakeoverDuringJobsBucketElection(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	if testing.Short() {
		t.Skip("nats-server processes")
	}
	servers := testutil.StartNATSProcs(t, 3)

	type member struct {
		srv    *testutil.NATSProc
		nc     *nats.Conn
		runner *blockingRunner
		node   *Node
	}
	members := map[string]*member{}
	for i, srv := range servers.Procs {
		id := fmt.Sprintf("node%d", i+1)
		nc := testutil.DialNATSURL(t, srv.ClientURL)
		m := &member{srv: srv, nc: nc, runner: &blockingRunner{}}
		// Production timings; room for two jobs, so the survivors of one
		// node can hold all three.
		m.node = startNode(t, &Node{ID: id, Store: openStore(t, nc, 3), Runner: m.runner, Capacity: 2 * testutil.TinyCost, Log: testutil.Logger(t)})
		members[id] = m
	}
	leaderOf := func(nc *nats.Conn, stream string) string {
		js, err := jetstream.New(nc)
		if err != nil {
			return ""
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := js.Stream(c, stream)
		if err != nil {
			return ""
		}
		info, err := s.Info(c)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	client := openStore(t, testutil.DialNATSURL(t, servers.Procs[0].ClientURL), 3)
	ids := []string{"a", "b", "c", "d"}
	for _, id := range ids {
		if _, err := client.Submit(ctx, tinySpec(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		waitJob(t, client, id, 15*time.Second, id+" running", func(j *Job) bool { return j.State == StateRunning })
	}
	owned := map[string][]string{}
	for _, id := range ids {
		j := getJob(t, client, id)
		owned[j.Owner] = append(owned[j.Owner], id)
	}
	// The victim is a node with jobs whose server leads the jobs bucket:
	// the leader steps down until it is one.
	var victim *member
	var victimID string
	for try := 0; victim == nil; try++ {
		if try == 20 {
			t.Fatalf("the jobs bucket never led by the server of a node with jobs (%v)", owned)
		}
		var leader string
		testutil.Eventually(t, 15*time.Second, "a jobs bucket leader", func() bool {
			leader = leaderOf(members["node1"].nc, "KV_"+JobsBucket)
			return leader != ""
		})
		for id, m := range members {
			if m.srv.Name == leader && len(owned[id]) > 0 {
				victim, victimID = m, id
			}
		}
		if victim == nil {
			if _, err := members["node1"].nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.KV_"+JobsBucket, nil, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 15*time.Second, "a new jobs bucket leader", func() bool {
				l := leaderOf(members["node1"].nc, "KV_"+JobsBucket)
				return l != "" && l != leader
			})
		}
	}
	// The test reads the records through a survivor's server.
	for id, m := range members {
		if id != victimID {
			client = openStore(t, testutil.DialNATSURL(t, m.srv.ClientURL), 3)
			break
		}
	}
	survivorsActive := func() int32 {
		var n int32
		for id, m := range members {
			if id != victimID {
				n += m.runner.active.Load()
			}
		}
		return n
	}
	before := survivorsActive()

	// kill -9 the node and its server together.
	killed := time.Now()
	victim.nc.Close()
	victim.srv.Stop(syscall.SIGKILL)
	testutil.Eventually(t, 2*time.Second, "the dead node's runners stopped", func() bool { return victim.runner.active.Load() == 0 })
	want := before + int32(len(owned[victimID]))
	testutil.Eventually(t, 10*time.Second, "the dead node's jobs running on the survivors", func() bool { return survivorsActive() == want })
	resumed := time.Since(killed)

	var claimed time.Duration
	for _, id := range owned[victimID] {
		j := waitJob(t, client, id, 30*time.Second, id+" claimed by a survivor", func(j *Job) bool {
			return j.State == StateRunning && j.Owner != victimID && j.Owner != ""
		})
		claimed = max(claimed, time.Since(killed))
		if j.Reason != "taken over from "+victimID+" (node dead)" {
			t.Errorf("%s: reason %q", id, j.Reason)
		}
	}
	testutil.Report(t, "node %s killed with its server, the jobs bucket's leader: its jobs %v ran again on the survivors after %s; claims written after %s",
		victimID, owned[victimID], resumed.Round(time.Millisecond), claimed.Round(time.Millisecond))
	if resumed > 3*time.Second {
		t.Errorf("the dead node's jobs ran again after %s, want within 3 s", resumed.Round(time.Millisecond))
	}
	consistently(t, 2*time.Second, "one runner per job on the survivors", func() bool { return survivorsActive() == 4 })
	for id, m := range members {
		if id != victimID {
			if s := m.runner.starts.Load(); s > int32(len(owned[id]))+int32(len(owned[victimID])) {
				t.Errorf("%s started %d runners: a takeover was started and dropped", id, s)
			}
		}
	}
}

// TestBucketLeadersKilledMoveNothing: three nodes on a three-server
// cluster, each connected to every server, as prism nodes on an external
// cluster are; the server leading both KV buckets is killed (kill -9).
// Both buckets elect new leaders (4–9 s) meanwhile: no job may move or
// restart, and no node may fence itself.
func TestBucketLeadersKilledMoveNothing(t *testing.T) {
	testutil.LeakCheck(t)
	if testing.Short() {
		t.Skip("nats-server processes")
	}
	ctx := context.Background()
	servers := testutil.StartNATSProcs(t, 3)
	urls := strings.Join(servers.URLs(), ",")
	runners := map[string]*blockingRunner{}
	for i := range 3 {
		id := fmt.Sprintf("node%d", i+1)
		nc, err := bus.Connect(urls, bus.ConnectOptions{Name: id, Token: testutil.NATSProcToken, Log: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		runners[id] = &blockingRunner{}
		startNode(t, &Node{ID: id, Store: openStore(t, nc, 3), Runner: runners[id], Capacity: 2 * testutil.TinyCost, Log: testutil.Logger(t)})
	}
	ctl := testutil.DialNATSURL(t, servers.Procs[0].ClientURL)
	client := openStore(t, ctl, 3)
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		if _, err := client.Submit(ctx, tinySpec(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		waitJob(t, client, id, 15*time.Second, id+" running", func(j *Job) bool { return j.State == StateRunning })
	}
	// Both buckets led by one server: step the nodes bucket's leader down
	// until it is the jobs bucket's.
	var leader string
	for try := 0; ; try++ {
		l := testutil.WaitStreamsHealthy(t, ctl, 30*time.Second)
		if l["KV_"+JobsBucket] == l["KV_"+NodesBucket] {
			leader = l["KV_"+JobsBucket]
			break
		}
		if try == 20 {
			t.Fatalf("buckets never led by one server: %v", l)
		}
		if _, err := ctl.Request("$JS.API.STREAM.LEADER.STEPDOWN.KV_"+NodesBucket, nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 15*time.Second, "a new nodes bucket leader", func() bool {
			l2, _ := testutil.StreamLeaders(ctl, 3)
			return l2["KV_"+NodesBucket] != "" && l2["KV_"+NodesBucket] != l["KV_"+NodesBucket]
		})
	}
	before := map[string]*Job{}
	for _, id := range ids {
		before[id] = getJob(t, client, id)
	}
	victim := servers.ByName(leader)
	watch := servers.Other(victim)
	if watch != servers.Procs[0] { // else ctl and client are on it already
		ctl = testutil.DialNATSURL(t, watch.ClientURL)
		client = openStore(t, ctl, 3)
	}
	victim.Stop(syscall.SIGKILL)
	killed := time.Now()
	testutil.Eventually(t, 30*time.Second, "new bucket leaders", func() bool {
		l, _ := testutil.StreamLeaders(ctl, 2)
		return l["KV_"+JobsBucket] != "" && l["KV_"+NodesBucket] != "" && l["KV_"+JobsBucket] != leader && l["KV_"+NodesBucket] != leader
	})
	elected := time.Since(killed)
	consistently(t, 15*time.Second-elected, "every runner still running its one job", func() bool {
		var active, starts int32
		for _, r := range runners {
			active += r.active.Load()
			starts += r.starts.Load()
		}
		return active == 3 && starts == 3
	})
	for _, id := range ids {
		j := getJob(t, client, id)
		if j.Owner != before[id].Owner || j.Revision != before[id].Revision {
			t.Errorf("%s changed: owner %s → %s, revision %d → %d (%s)", id, before[id].Owner, j.Owner, before[id].Revision, j.Revision, j.Reason)
		}
	}
	testutil.Report(t, "server %s leading both buckets killed: new leaders after %s; no job moved, restarted or rewritten for 15 s", leader, elected.Round(time.Millisecond))
}
