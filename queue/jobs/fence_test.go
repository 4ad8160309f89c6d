package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

// TestCutOffOwnerFencesAfterFenceAfter: the owner's only server goes away
// (its connection stays open, reconnecting). It keeps the job through a
// JetStream-election-sized outage and stops the runner once its heartbeats
// have gone unacknowledged for FenceAfter, not before.
func TestCutOffOwnerFencesAfterFenceAfter(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "owner"), 1)
	r := &blockingRunner{}
	n := fastNode(t, "owner", s, r, 10*testutil.TinyCost)
	n.FenceAfter = 2 * time.Second
	startNode(t, n)
	if _, err := s.Submit(ctx, tinySpec("cam")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, "cam", 5*time.Second, "running", func(j *Job) bool { return j.State == StateRunning })
	e.Close()
	cut := time.Now()
	consistently(t, 1500*time.Millisecond, "the cut-off owner keeps running before FenceAfter", func() bool { return r.active.Load() == 1 })
	testutil.Eventually(t, 3*time.Second, "the cut-off owner stops its runner", func() bool { return r.active.Load() == 0 })
	took := time.Since(cut)
	t.Logf("fenced %s after the server went away (FenceAfter %s)", took.Round(time.Millisecond), n.FenceAfter)
	// FenceAfter counts from the sending of the last acknowledged
	// heartbeat, up to one heartbeat before the server went away, and cut
	// is taken once Close returned: two heartbeats of slack.
	if took < n.FenceAfter-2*n.Heartbeat {
		t.Fatalf("fenced after %s, before FenceAfter %s (less two heartbeats)", took, n.FenceAfter)
	}
}
