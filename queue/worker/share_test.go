package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/transcode/ladder"
)

func TestCPUShare(t *testing.T) {
	for _, ca := range []struct {
		cores          int
		cost, capacity float64
		want           float64
	}{
		{2, 6e7, 1.2e8, 1},      // half of a 2-core node
		{16, 3e7, 9.6e8, 1},     // half a core's worth: one core at least
		{16, 1.5e8, 9.6e8, 2.5}, // to a tenth of a core
		{16, 1e8, 9.6e8, 1.7},
		{4, 5e8, 2e8, 4}, // never more than the node's cores
		{4, 0, 2e8, 0},   // unknown cost: no share
		{4, 1e8, 0, 0},   // no capacity: no share
		{0, 1e8, 2e8, 0},
	} {
		if got := CPUShare(ca.cores, ca.cost, ca.capacity); got != ca.want {
			t.Errorf("CPUShare(%d, %g, %g) = %g, want %g", ca.cores, ca.cost, ca.capacity, got, ca.want)
		}
	}
}

// TestWorkerGetsItsCPUShare: a node's Supervisor starts each worker with
// --cpus, the job's part of the node's cores by the capacity the node
// holds for it; without Shares it passes none.
func TestWorkerGetsItsCPUShare(t *testing.T) {
	testutil.LeakCheck(t)
	// Four tiny jobs fill the node: each gets a quarter of its 8 cores.
	if got := workerArgs(t, Shares{Cores: 8, Capacity: 4 * testutil.TinyCost}); got != "worker --nats nats://127.0.0.1:1 --cpus 2" {
		t.Errorf("worker arguments %q, want --cpus 2 (8 cores x 1/4 of the capacity)", got)
	}
	if got := workerArgs(t, Shares{}); got != "worker --nats nats://127.0.0.1:1" {
		t.Errorf("worker arguments without shares %q, want no --cpus", got)
	}
}

// workerArgs runs one tiny job on a node (real NATS, job store and
// Supervisor) with 4 tiny jobs' capacity, and returns the arguments its
// worker was started with.
func workerArgs(t *testing.T, shares Shares) string {
	t.Helper()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := jobs.OpenStore(ctx, nc, jobs.StoreConfig{Replicas: 1, CheckLadder: ladder.Check})
	if err != nil {
		t.Fatal(err)
	}
	// The worker records its arguments, says it runs, and runs until stopped.
	argsFile := filepath.Join(t.TempDir(), "args")
	exe := fakeWorker(t, `echo "$@" > `+argsFile+`; echo running; exec sleep 60`)
	sup := &Supervisor{Exe: exe, NATSURL: "nats://127.0.0.1:1", Shares: shares, Log: testutil.Logger(t)}
	n := &jobs.Node{ID: "n1", Store: store, Runner: sup, Capacity: 4 * testutil.TinyCost,
		Roles: []string{jobs.RoleTranscode}, StartTimeout: 10 * time.Second, Log: testutil.Logger(t)}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	if _, err := store.Submit(ctx, jobs.Spec{ID: "cam", Input: testutil.TinyInput, Ladder: "tiny", LadderYAML: testutil.TinyLadder}); err != nil {
		t.Fatal(err)
	}
	waitState(t, store, "cam", 10*time.Second, jobs.StateRunning)
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Stop(ctx, "cam"); err != nil {
		t.Fatal(err)
	}
	waitState(t, store, "cam", 10*time.Second, jobs.StateStopped)
	return strings.TrimSpace(string(b))
}
