package jobs

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

func TestNodeRunsAndStopsJob(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "n1"), 1)
	r := &blockingRunner{}
	n := startNode(t, fastNode(t, "n1", s, r, 10*testutil.TinyCost))

	if _, err := s.Submit(ctx, tinySpec("job")); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, s, "job", 5*time.Second, "job running on n1", func(j *Job) bool {
		return j.State == StateRunning && j.Owner == "n1"
	})
	if got := n.Jobs(); len(got) != 1 || got[0] != "job" {
		t.Fatalf("node jobs %v", got)
	}
	// The node's heartbeat is the job's lease: it lists the job, and the
	// owner does not rewrite a running job (no per-job renewals).
	testutil.Eventually(t, 2*time.Second, "heartbeat shows the load", func() bool {
		nodes, err := s.Nodes(ctx)
		return err == nil && len(nodes) == 1 && nodes[0].Used == testutil.TinyCost && len(nodes[0].Jobs) == 1
	})
	consistently(t, time.Second, "a running job is not rewritten", func() bool {
		return getJob(t, s, "job").Revision == j.Revision
	})

	if _, err := s.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, s, "job", 3*time.Second, "job stopped", func(j *Job) bool { return j.State == StateStopped })
	if j.Owner != "" || j.Reason != "stopped by request" {
		t.Fatalf("stopped: %+v", j)
	}
	testutil.Eventually(t, time.Second, "runner cancelled", func() bool { return r.active.Load() == 0 })
	if r.starts.Load() != 1 {
		t.Fatalf("runner started %d times", r.starts.Load())
	}
	if len(n.Jobs()) != 0 {
		t.Fatalf("node still runs %v", n.Jobs())
	}
}

func TestZeroCapacityNodeNeverTakesJobs(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s0 := openStore(t, testutil.DialNATS(t, e, "viewer"), 1)
	startNode(t, fastNode(t, "viewer", s0, nil, 0))

	testutil.Eventually(t, 2*time.Second, "viewer node listed", func() bool {
		nodes, err := s0.Nodes(ctx)
		return err == nil && len(nodes) == 1
	})
	j, err := s0.Submit(ctx, tinySpec("waits"))
	if err != nil {
		t.Fatal(err)
	}
	want := "no node with capacity for 1.73e6 px/s"
	if j.Reason != want {
		t.Fatalf("reason %q, want %q", j.Reason, want)
	}
	consistently(t, 1500*time.Millisecond, "job pending with no owner", func() bool {
		j := getJob(t, s0, "waits")
		return j.State == StatePending && j.Owner == "" && j.Reason == want
	})

	// A node that can run it arrives and takes it: the ticket was waiting.
	s1 := openStore(t, testutil.DialNATS(t, e, "worker"), 1)
	startNode(t, fastNode(t, "worker", s1, &blockingRunner{}, 2*testutil.TinyCost))
	waitJob(t, s0, "waits", 5*time.Second, "job running on the worker", func(j *Job) bool {
		return j.State == StateRunning && j.Owner == "worker"
	})
}

func TestJobLargerThanEveryNodeWaitsWithReason(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "small"), 1)
	r := &blockingRunner{}
	startNode(t, fastNode(t, "small", s, r, testutil.TinyCost/2))
	testutil.Eventually(t, 2*time.Second, "node listed", func() bool {
		nodes, err := s.Nodes(ctx)
		return err == nil && len(nodes) == 1
	})
	if _, err := s.Submit(ctx, tinySpec("big")); err != nil {
		t.Fatal(err)
	}
	consistently(t, time.Second, "big job pending", func() bool {
		j := getJob(t, s, "big")
		return j.State == StatePending && j.Reason == "no node with capacity for 1.73e6 px/s"
	})
	if r.starts.Load() != 0 {
		t.Fatal("a node ran a job larger than its capacity")
	}
}

func TestInputThatNeverConnectsFails(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "n1")
	s := openStore(t, nc, 1)
	n := fastNode(t, "n1", s, &transcodeRunner{nc: nc, log: testutil.Logger(t)}, 10*testutil.TinyCost)
	n.MaxAttempts = 3
	startNode(t, n)

	// A port nobody listens on: the connection is refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	spec := tinySpec("dead")
	spec.Input = "rtmp://" + addr + "/live/dead"
	if _, err := s.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, s, "dead", 10*time.Second, "job failed", func(j *Job) bool { return j.State == StateFailed })
	if j.Attempts != 3 || !strings.HasPrefix(j.Reason, "failed 3 times, last: ") || !strings.Contains(j.Reason, addr) {
		t.Fatalf("failed job: attempts %d, reason %q", j.Attempts, j.Reason)
	}
	t.Logf("reason: %s", j.Reason)

	// Every failure before the last went back to pending with a growing
	// backoff, and no attempt got stuck in starting.
	hist, err := s.History(ctx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	var delays []time.Duration
	for _, h := range hist {
		if h.State == StatePending && !h.NotBefore.IsZero() {
			delays = append(delays, h.NotBefore.Sub(h.UpdatedAt))
		}
	}
	if len(delays) != 2 || delays[1] <= delays[0] {
		t.Fatalf("retry delays %v, want two, growing", delays)
	}
}

func TestStartTimeoutRetriesThenFails(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "n1"), 1)
	r := &blockingRunner{neverRunning: true}
	n := fastNode(t, "n1", s, r, 10*testutil.TinyCost)
	n.StartTimeout, n.MaxAttempts = 300*time.Millisecond, 2
	startNode(t, n)
	if _, err := s.Submit(context.Background(), tinySpec("stuck")); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, s, "stuck", 5*time.Second, "job failed", func(j *Job) bool { return j.State == StateFailed })
	if j.Reason != "failed 2 times, last: did not start within 300ms" {
		t.Fatalf("reason %q", j.Reason)
	}
	testutil.Eventually(t, time.Second, "runners cancelled", func() bool { return r.active.Load() == 0 })
	if r.starts.Load() != 2 {
		t.Fatalf("runner started %d times, want 2", r.starts.Load())
	}
}

func TestRetryAfterFailureThenStableResetsAttempts(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "n1"), 1)
	var calls int
	runner := RunnerFunc(func(ctx context.Context, spec Spec, running func()) error {
		calls++ // only this node's attempts call it, one at a time
		if calls == 1 {
			return errors.New("input not there yet")
		}
		running()
		<-ctx.Done()
		return nil
	})
	n := fastNode(t, "n1", s, runner, 10*testutil.TinyCost)
	n.Retry.StableAfter = 400 * time.Millisecond
	startNode(t, n)
	if _, err := s.Submit(context.Background(), tinySpec("flaky")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, "flaky", 5*time.Second, "running after one failure", func(j *Job) bool {
		return j.State == StateRunning && j.Attempts == 1
	})
	waitJob(t, s, "flaky", 3*time.Second, "attempts reset once stable", func(j *Job) bool {
		return j.State == StateRunning && j.Attempts == 0
	})
}

func TestLostOwnershipStopsTheRunner(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "n1"), 1)
	r := &blockingRunner{}
	startNode(t, fastNode(t, "n1", s, r, 10*testutil.TinyCost))
	if _, err := s.Submit(ctx, tinySpec("fenced")); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, s, "fenced", 5*time.Second, "running on n1", func(j *Job) bool { return j.State == StateRunning })

	// Another writer takes the job (as a node that judged n1 dead would),
	// and heartbeats listing it, so that n1 sees a live owner.
	beats, stopBeats := context.WithCancel(ctx)
	beating := make(chan struct{})
	go func() { // stopped below
		defer close(beating)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for beats.Err() == nil {
			_ = s.putNode(beats, &NodeInfo{ID: "intruder", Jobs: []string{"fenced"}})
			select {
			case <-beats.Done():
			case <-tick.C:
			}
		}
	}()
	defer func() { stopBeats(); <-beating }()
	// Retry on conflicts with n1's own writes.
	var taken *Job
	for taken == nil {
		j.Owner = "intruder"
		var err error
		taken, err = s.Update(ctx, j)
		if errors.Is(err, ErrConflict) {
			j = getJob(t, s, "fenced")
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	testutil.Eventually(t, 2*time.Second, "n1's runner stopped", func() bool { return r.active.Load() == 0 })
	t.Logf("fenced after %s", time.Since(start).Round(time.Millisecond))
	consistently(t, 500*time.Millisecond, "n1 never writes the job again", func() bool {
		return getJob(t, s, "fenced").Revision == taken.Revision
	})
}

func TestDrainHandsJobsToAnotherNode(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	sa := openStore(t, testutil.DialNATS(t, e, "a"), 1)
	ra := &blockingRunner{}
	a := startNode(t, fastNode(t, "a", sa, ra, 10*testutil.TinyCost))
	for _, id := range []string{"one", "two"} {
		if _, err := sa.Submit(ctx, tinySpec(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"one", "two"} {
		waitJob(t, sa, id, 5*time.Second, id+" running on a", func(j *Job) bool { return j.State == StateRunning && j.Owner == "a" })
	}

	sb := openStore(t, testutil.DialNATS(t, e, "b"), 1)
	rb := &blockingRunner{}
	startNode(t, fastNode(t, "b", sb, rb, 10*testutil.TinyCost))
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if len(a.Jobs()) != 0 || ra.active.Load() != 0 {
		t.Fatalf("after drain a runs %v (%d active)", a.Jobs(), ra.active.Load())
	}
	for _, id := range []string{"one", "two"} {
		waitJob(t, sb, id, 5*time.Second, id+" running on b", func(j *Job) bool { return j.State == StateRunning && j.Owner == "b" })
		hist, err := sb.History(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		handed := false
		for _, h := range hist {
			handed = handed || (h.State == StatePending && h.Reason == "handed back by node a (draining)")
		}
		if !handed {
			t.Fatalf("%s: no hand-back in its history", id)
		}
	}
	t.Logf("drain to running elsewhere: %s", time.Since(start).Round(time.Millisecond))
	// A draining node takes nothing new.
	if _, err := sa.Submit(ctx, tinySpec("three")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, sa, "three", 5*time.Second, "three running on b", func(j *Job) bool { return j.State == StateRunning && j.Owner == "b" })
	if ra.starts.Load() != 2 {
		t.Fatalf("drained node started %d runs, want 2", ra.starts.Load())
	}
}

func TestNodeConfigErrors(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "n"), 1)
	cases := map[string]*Node{
		"bad id":            {ID: "a b", Store: s},
		"no store":          {ID: "n"},
		"capacity, no run":  {ID: "n", Store: s, Capacity: 1},
		"negative capacity": {ID: "n", Store: s, Capacity: -1},
		"short lease":       {ID: "n", Store: s, Heartbeat: 500 * time.Millisecond, LeaseTTL: 900 * time.Millisecond},
		"short dead-after":  {ID: "n", Store: s, Heartbeat: 500 * time.Millisecond, NodeDeadAfter: 900 * time.Millisecond},
		"fence before dead": {ID: "n", Store: s, NodeDeadAfter: 4 * time.Second, FenceAfter: 3 * time.Second},
		"slow heartbeat":    {ID: "n", Store: s, Heartbeat: time.Second, LeaseTTL: 4 * time.Second},
	}
	for name, n := range cases {
		if err := n.Start(context.Background()); !errors.Is(err, ErrNodeConfig) {
			t.Errorf("%s: %v, want ErrNodeConfig", name, err)
		}
	}
	n := startNode(t, fastNode(t, "twice", s, nil, 0))
	if err := n.Start(context.Background()); !errors.Is(err, ErrNodeConfig) {
		t.Fatalf("second Start: %v", err)
	}
}

func TestStopWhileOwnerIsDead(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	deadConn := testutil.DialNATS(t, e, "dead")
	r := &blockingRunner{}
	startNode(t, fastNode(t, "dead", openStore(t, deadConn, 1), r, 10*testutil.TinyCost))
	client := openStore(t, testutil.DialNATS(t, e, "client"), 1)
	if _, err := client.Submit(ctx, tinySpec("orphan")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, client, "orphan", 5*time.Second, "running", func(j *Job) bool { return j.State == StateRunning })
	// A node that cannot run anything still cleans up after the dead.
	startNode(t, fastNode(t, "janitor", openStore(t, testutil.DialNATS(t, e, "janitor"), 1), nil, 0))
	deadConn.Close()
	testutil.Eventually(t, 2*time.Second, "dead node's runner stopped", func() bool { return r.active.Load() == 0 })
	if j, err := client.Stop(ctx, "orphan"); err != nil || j.State != StateStopping {
		t.Fatalf("stop: %+v, %v", j, err)
	}
	j := waitJob(t, client, "orphan", 5*time.Second, "stopped once the owner is judged dead", func(j *Job) bool { return j.State == StateStopped })
	if j.Reason != "stopped (owner dead went away while stopping)" || j.Owner != "" {
		t.Fatalf("stopped: %+v", j)
	}
}

func TestOrphanWaitsForCapacityThenMoves(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	deadConn := testutil.DialNATS(t, e, "big")
	startNode(t, fastNode(t, "big", openStore(t, deadConn, 1), &blockingRunner{}, 10*testutil.TinyCost))
	client := openStore(t, testutil.DialNATS(t, e, "client"), 1)
	if _, err := client.Submit(ctx, tinySpec("moving")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, client, "moving", 5*time.Second, "running on big", func(j *Job) bool { return j.State == StateRunning })
	// The only survivor is too small: it returns the job to the queue,
	// saying why, instead of leaving it with a dead owner.
	startNode(t, fastNode(t, "small", openStore(t, testutil.DialNATS(t, e, "small"), 1), &blockingRunner{}, testutil.TinyCost/2))
	deadConn.Close()
	j := waitJob(t, client, "moving", 5*time.Second, "pending with a reason", func(j *Job) bool {
		return j.State == StatePending && strings.HasSuffix(j.Reason, "no node with capacity for 1.73e6 px/s")
	})
	if j.Owner != "" || j.Attempts != 1 || !strings.HasPrefix(j.Reason, "owner big is dead") {
		t.Fatalf("orphan: %+v", j)
	}
	// Capacity arrives and takes it from the queue.
	startNode(t, fastNode(t, "fresh", openStore(t, testutil.DialNATS(t, e, "fresh"), 1), &blockingRunner{}, 10*testutil.TinyCost))
	waitJob(t, client, "moving", 5*time.Second, "running on fresh", func(j *Job) bool { return j.State == StateRunning && j.Owner == "fresh" })
}
