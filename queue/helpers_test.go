package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/ladderref"
	"github.com/prism-streaming/prism/transcode"
)

// tinyLadder is one 320x180 rung with audio: cheap enough for the 2-core
// test machine, real enough to go through every stage.
const tinyLadder = `name: tiny
gop: 1s
rungs:
  - {name: 180p, height: 180, bitrate: 200k, preset: ultrafast}
audio: {aac: {bitrate: 64k}, opus: {bitrate: 32k}}
`

// tinyCost is tinyLadder's nominal cost: 320x180 at 30 fps.
const tinyCost = 320 * 180 * 30

const lavfiInput = "lavfi:testsrc2=size=320x180:rate=30[out0];sine=sample_rate=48000[out1]"

// leakCheck must be the first call of a test: cleanups run last-in,
// first-out, so the goroutine count is checked after every server,
// connection and node the test registered has been shut down.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(testutil.CheckGoroutines(t))
}

// testLog collects the package's logs and prints them only when the test
// fails (or always with PRISM_TEST_LOG=1), so a passing run stays quiet.
func testLog(t *testing.T) *slog.Logger {
	t.Helper()
	if os.Getenv("PRISM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	buf := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startServer starts an embedded server that the test shuts down.
func startServer(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// dial opens a TCP client connection to e, closed by the test.
func dial(t *testing.T, e *Embedded, name string) *nats.Conn {
	t.Helper()
	nc, err := Connect(e.ClientURL(), ConnectOptions{Name: name, Token: e.Token(), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// openStore opens the store with the real ladder check.
func openStore(t *testing.T, nc *nats.Conn, replicas int) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := OpenStore(ctx, nc, StoreConfig{Replicas: replicas, CheckLadder: ladderref.Check})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tinySpec(id string) JobSpec {
	return JobSpec{ID: id, Input: lavfiInput, Ladder: "tiny", LadderYAML: tinyLadder, Outputs: []string{OutputHLS}}
}

// fastNode is a node with test timings: short heartbeats and leases where
// the test does not measure the defaults.
func fastNode(t *testing.T, id string, s *Store, r Runner, capacity float64) *Node {
	t.Helper()
	return &Node{
		ID: id, Store: s, Runner: r, Capacity: capacity, Roles: []string{RoleTranscode},
		Heartbeat: 100 * time.Millisecond, LeaseTTL: 500 * time.Millisecond,
		RetryBackoff: 20 * time.Millisecond, Log: testLog(t),
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

func (b *blockingRunner) Run(ctx context.Context, spec JobSpec, running func()) error {
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

func (r *transcodeRunner) Run(ctx context.Context, spec JobSpec, running func()) error {
	r.starts.Add(1)
	l, err := ladderref.Resolve(spec.Ladder, spec.LadderYAML)
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
	go func() { pubErr <- PublishMedia(pubCtx, r.nc, spec.ID, job) }() // waited for below
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

// startCluster starts n embedded servers routed to each other, with
// JetStream clustered (so streams use 3 replicas).
func startCluster(t *testing.T, n int) []*Embedded {
	t.Helper()
	servers, err := StartLocalCluster(n, t.TempDir(), "cluster-token")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		t.Cleanup(s.Shutdown)
	}
	return servers
}
