package jobs

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/relay"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// openStore opens the store with the real ladder check.
func openStore(t *testing.T, nc *nats.Conn, replicas int) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := OpenStore(ctx, nc, StoreConfig{Replicas: replicas, CheckLadder: ladder.Check})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tinySpec(id string) Spec {
	return Spec{ID: id, Input: testutil.TinyInput, Ladder: "tiny", LadderYAML: testutil.TinyLadder, Outputs: []string{OutputHLS}}
}

// fastNode is a node with test timings: short heartbeats and leases where
// the test does not measure the defaults.
func fastNode(t *testing.T, id string, s *Store, r Runner, capacity float64) *Node {
	t.Helper()
	return &Node{
		ID: id, Store: s, Runner: r, Capacity: capacity, Roles: []string{RoleTranscode},
		Heartbeat: 100 * time.Millisecond, LeaseTTL: 500 * time.Millisecond,
		Retry: RetryPolicy{First: 20 * time.Millisecond}, Log: testutil.Logger(t),
	}
}

// startNode starts n and closes it at the end of the test.
func startNode(t *testing.T, n *Node) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// getJob reads a job, failing the test on error.
func getJob(t *testing.T, s *Store, id string) *Job {
	t.Helper()
	j, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// waitJob polls until the job satisfies cond and returns it.
func waitJob(t *testing.T, s *Store, id string, timeout time.Duration, what string, cond func(*Job) bool) *Job {
	t.Helper()
	var last *Job
	testutil.Eventually(t, timeout, what, func() bool {
		j, err := s.Get(context.Background(), id)
		if err == nil {
			last = j
		}
		return err == nil && cond(j)
	})
	return last
}

// consistently polls cond for d and fails the test the first time it is
// false: for "this never happens" assertions, without a bare sleep.
func consistently(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s stopped holding", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// blockingRunner is a Runner for lifecycle tests: it reports running at
// once (unless neverRunning), then blocks until cancelled, counting starts
// and stops.
type blockingRunner struct {
	neverRunning bool
	fail         error // returned at once instead of running, when set
	starts       atomic.Int32
	active       atomic.Int32
}

func (b *blockingRunner) Run(ctx context.Context, spec Spec, running func()) error {
	b.starts.Add(1)
	if b.fail != nil {
		return b.fail
	}
	b.active.Add(1)
	defer b.active.Add(-1)
	if !b.neverRunning {
		running()
	}
	<-ctx.Done()
	return nil
}

// transcodeRunner runs the real transcoder and publishes its media over
// NATS: what a Prism node does with a job.
type transcodeRunner struct {
	nc     *nats.Conn
	log    *slog.Logger
	starts atomic.Int32
	active atomic.Int32
}

func (r *transcodeRunner) Run(ctx context.Context, spec Spec, running func()) error {
	r.starts.Add(1)
	l, err := ladder.Resolve(spec.Ladder, spec.LadderYAML)
	if err != nil {
		return err
	}
	job, err := transcode.Start(ctx, transcode.Options{Input: spec.Input, Ladder: l, Realtime: true, CPUs: 1, Logger: r.log})
	if err != nil {
		return err
	}
	r.active.Add(1)
	defer r.active.Add(-1)
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubErr := make(chan error, 1)
	go func() { pubErr <- relay.Publish(pubCtx, r.nc, spec.ID, job) }() // waited for below
	running()
	select {
	case <-ctx.Done():
	case <-job.Done():
	}
	stopPub()
	perr := <-pubErr
	jerr := job.Close()
	if ctx.Err() != nil {
		return nil // stopped from outside
	}
	return errors.Join(jerr, perr)
}
