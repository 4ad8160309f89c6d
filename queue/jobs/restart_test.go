package jobs

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/relay"
)

// TestServerRestartJobsContinue restarts the embedded server (same store
// directory, port and token) under two running nodes: they reconnect, the
// job keeps running on its owner without being restarted (the same
// publisher instance still serves its media), leases are renewed again and
// new jobs are placed.
func TestServerRestartJobsContinue(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	ctx := context.Background()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := bus.EmbeddedConfig{DataDir: dir, Token: "restart-token", Log: quiet}
	first, err := bus.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(first.Close)
	cfg.Listen = first.Server().Addr().String() // the same port after the restart

	type member struct {
		nc     *nats.Conn
		runner *transcodeRunner
	}
	var members []member
	for _, id := range []string{"n1", "n2"} {
		nc := testutil.DialNATS(t, first, id)
		r := &transcodeRunner{nc: nc, log: testutil.Logger(t)}
		startNode(t, &Node{ID: id, Store: openStore(t, nc, 1), Runner: r, Capacity: 4 * testutil.TinyCost, Log: testutil.Logger(t)})
		members = append(members, member{nc, r})
	}
	client := openStore(t, testutil.DialNATS(t, first, "client"), 1)
	if _, err := client.Submit(ctx, tinySpec("steady")); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, client, "steady", 10*time.Second, "job running", func(j *Job) bool { return j.State == StateRunning })
	viewer := members[0].nc
	publisher := func() string {
		var info relay.StreamInfo
		testutil.Eventually(t, 5*time.Second, "media subscription", func() bool {
			remote, err := relay.Follow(ctx, viewer, "steady", relay.WithPublisherWait(0))
			if err != nil {
				return false
			}
			info = remote.Info()
			return remote.Close() == nil
		})
		return info.Instance
	}
	instance := publisher()

	first.Close()
	testutil.Eventually(t, 2*time.Second, "clients disconnected", func() bool {
		for _, m := range members {
			if m.nc.Status() == nats.CONNECTED {
				return false
			}
		}
		return true
	})
	down := time.Now()
	// Stay down for longer than NodeDeadAfter: the owner, cut off like
	// everyone, keeps its job running (it could not publish anyway), and
	// nobody judges it dead: nobody was healthy meanwhile.
	consistently(t, DefaultNodeDeadAfter+500*time.Millisecond, "the job runs on while the server is down", func() bool {
		return members[0].runner.active.Load()+members[1].runner.active.Load() == 1
	})
	second, err := bus.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(second.Close)
	testutil.Eventually(t, 5*time.Second, "clients reconnected", func() bool {
		for _, m := range members {
			if m.nc.Status() != nats.CONNECTED {
				return false
			}
		}
		return true
	})
	t.Logf("server down, back and clients reconnected after %s", time.Since(down).Round(time.Millisecond))

	// The owner heartbeats again, listing the job, and nobody took the job
	// over: for a while after the reconnect (long enough for any node to
	// judge) the record stays as it was.
	testutil.Eventually(t, 5*time.Second, "the owner's heartbeat lists the job", func() bool {
		nodes, err := client.Nodes(ctx)
		for _, n := range nodes {
			if n.ID == j.Owner && len(n.Jobs) == 1 {
				return err == nil
			}
		}
		return false
	})
	consistently(t, 2*DefaultNodeDeadAfter, "the job keeps its owner", func() bool {
		return getJob(t, client, "steady").Revision == j.Revision
	})
	after := getJob(t, client, "steady")
	if after.Owner != j.Owner || after.State != StateRunning || after.Attempts != 0 {
		t.Fatalf("after the restart: owner %s state %s attempts %d; before: owner %s", after.Owner, after.State, after.Attempts, j.Owner)
	}
	if got := publisher(); got != instance {
		t.Fatalf("publisher instance %s after the restart, want %s: the job was restarted", got, instance)
	}
	for _, m := range members {
		if m.runner.starts.Load() > 1 {
			t.Fatalf("a runner started %d times", m.runner.starts.Load())
		}
	}

	// The store came back from disk: new work is dispatched and placed.
	if _, err := client.Submit(ctx, tinySpec("fresh")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, client, "fresh", 10*time.Second, "new job running", func(j *Job) bool { return j.State == StateRunning })
}
