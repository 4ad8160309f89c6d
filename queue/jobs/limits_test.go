package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// rawJobs is the prism_jobs bucket seen directly, as any client on the
// bus may write it.
func rawJobs(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestCorruptRecordsAreSkippedAndPurged: records written past the store
// (garbage, or a job under another id) do not break List, Get says what
// they are, Delete purges them, and the id can then be used again.
func TestCorruptRecordsAreSkippedAndPurged(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "client")
	s := openStore(t, nc, 1)
	for _, id := range []string{"alpha", "omega"} {
		if _, err := s.Submit(ctx, tinySpec(id)); err != nil {
			t.Fatal(err)
		}
	}
	kv := rawJobs(t, nc)
	other, err := json.Marshal(&Job{Spec: tinySpec("alpha"), State: StateRunning})
	if err != nil {
		t.Fatal(err)
	}
	for key, value := range map[string][]byte{"bad": []byte("\x00{not json"), "liar": other, "null": []byte("null")} {
		if _, err := kv.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}

	list, err := s.List(ctx)
	if err != nil {
		t.Fatalf("list with corrupt records: %v", err)
	}
	if len(list) != 2 || list[0].Spec.ID != "alpha" || list[1].Spec.ID != "omega" {
		t.Fatalf("list: %v", list)
	}
	corrupt, err := s.Corrupt(ctx)
	if err != nil || !slices.Equal(corrupt, []string{"bad", "liar", "null"}) {
		t.Fatalf("corrupt: %v, %v", corrupt, err)
	}
	for _, id := range corrupt {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrCorruptJob) || !strings.Contains(err.Error(), id) {
			t.Fatalf("get %s: %v, want ErrCorruptJob naming it", id, err)
		}
	}
	if _, err := s.Submit(ctx, tinySpec("bad")); !errors.Is(err, ErrCorruptJob) {
		t.Fatalf("submit over a corrupt record: %v, want ErrCorruptJob", err)
	}
	if _, err := s.Stop(ctx, "bad"); !errors.Is(err, ErrCorruptJob) {
		t.Fatalf("stop a corrupt record: %v, want ErrCorruptJob", err)
	}

	// Delete purges a corrupt record, history and all.
	if err := s.Delete(ctx, "bad"); err != nil {
		t.Fatalf("purge: %v", err)
	}
	if _, err := s.Get(ctx, "bad"); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("get purged: %v", err)
	}
	if hist, err := kv.History(ctx, "bad"); err == nil && len(hist) > 1 {
		t.Fatalf("purged key keeps %d revisions", len(hist))
	}
	if corrupt, _ := s.Corrupt(ctx); !slices.Equal(corrupt, []string{"liar", "null"}) {
		t.Fatalf("corrupt after the purge: %v", corrupt)
	}
	if j, err := s.Submit(ctx, tinySpec("bad")); err != nil || j.State != StatePending {
		t.Fatalf("submit after the purge: %+v, %v", j, err)
	}
	// Ordinary jobs still need to have ended.
	if err := s.Delete(ctx, "alpha"); !errors.Is(err, ErrJobActive) {
		t.Fatalf("delete pending: %v", err)
	}
}

// TestNodeFencesAndSkipsCorruptRecords: a running job's record is
// overwritten with garbage. The owner stops the media (nothing says the job
// is still its own), the view drops the record, a ticket for it is
// discarded instead of cycling, and after the purge the id runs again.
func TestNodeFencesAndSkipsCorruptRecords(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "node")
	s := openStore(t, nc, 1)
	r := &blockingRunner{}
	n := startNode(t, fastNode(t, "n1", s, r, 1e9))
	if _, err := s.Submit(ctx, tinySpec("cam")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, "cam", 5*time.Second, "running", func(j *Job) bool { return j.State == StateRunning })

	kv := rawJobs(t, nc)
	if _, err := kv.Put(ctx, "cam", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*time.Second, "the owner stops the job", func() bool { return r.active.Load() == 0 })
	testutil.Eventually(t, 3*time.Second, "the view drops the record", func() bool {
		known, ok := n.KnownJobs()
		return ok && len(known) == 0
	})
	if _, err := s.Get(ctx, "cam"); !errors.Is(err, ErrCorruptJob) {
		t.Fatalf("the owner wrote over the corrupt record: %v", err)
	}

	// A ticket for the corrupt job is terminated, not handed round.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, dispatchPrefix+"cam", []byte("cam")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*time.Second, "the ticket discarded", func() bool { return ticketCount(t, s) == 0 })

	if err := s.Delete(ctx, "cam"); err != nil {
		t.Fatalf("purge: %v", err)
	}
	starts := r.starts.Load()
	if _, err := s.Submit(ctx, tinySpec("cam")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, "cam", 5*time.Second, "running again", func(j *Job) bool { return j.State == StateRunning })
	if r.starts.Load() <= starts || r.active.Load() != 1 {
		t.Fatalf("starts %d (before %d), active %d", r.starts.Load(), starts, r.active.Load())
	}
}

func TestStoreLimits(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "client")
	s := openStore(t, nc, 1)

	// The JetStream resources are bounded.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for bucket, want := range map[string][2]int64{
		JobsBucket:  {DefaultMaxRecordBytes, DefaultJobsMaxBytes},
		NodesBucket: {nodesMaxValueSize, nodesMaxBytes},
	} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.(*jetstream.KeyValueBucketStatus).Config()
		if int64(cfg.MaxValueSize) != want[0] || cfg.MaxBytes != want[1] {
			t.Errorf("%s: max value %d, max bytes %d; want %d, %d", bucket, cfg.MaxValueSize, cfg.MaxBytes, want[0], want[1])
		}
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxBytes != dispatchMaxBytes || c.MaxMsgs != dispatchMaxMsgs || c.MaxMsgSize != dispatchMaxMsgSize || c.Discard != jetstream.DiscardOld {
		t.Errorf("dispatch stream: max bytes %d, msgs %d, msg size %d, discard %v", c.MaxBytes, c.MaxMsgs, c.MaxMsgSize, c.Discard)
	}

	// A reason longer than maxReasonLen (a runner's error quoting FFmpeg)
	// is clipped, so records stay near their submitted size.
	if _, err := s.Submit(ctx, tinySpec("long")); err != nil {
		t.Fatal(err)
	}
	j := getJob(t, s, "long")
	j.Reason = strings.Repeat("é", maxReasonLen)
	if _, err := s.Update(ctx, j); err != nil {
		t.Fatal(err)
	}
	if r := getJob(t, s, "long").Reason; len(r) > maxReasonLen || !strings.HasSuffix(r, "…") || !strings.HasPrefix(r, "éé") {
		t.Fatalf("reason of %d bytes: %q", len(r), r)
	}
}

func TestMaxJobs(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "client")
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := OpenStore(octx, nc, StoreConfig{CheckLadder: ladder.Check, MaxJobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := s.Submit(ctx, tinySpec(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Submit(ctx, tinySpec("c")); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("third job: %v, want ErrTooManyJobs", err)
	}
	// Jobs already in the store are not new ones: submitting them again,
	// or restarting an ended one with another spec, still works.
	if _, err := s.Submit(ctx, tinySpec("a")); err != nil {
		t.Fatalf("same spec again: %v", err)
	}
	if _, err := s.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	other := tinySpec("a")
	other.Outputs = []string{OutputWebRTC}
	if _, err := s.Submit(ctx, other, Replace()); err != nil {
		t.Fatalf("restart an ended job: %v", err)
	}
	// A corrupt record takes room too: it holds space in the bucket.
	if _, err := s.Stop(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := rawJobs(t, nc).Put(ctx, "junk", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, tinySpec("c")); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("with a corrupt record: %v, want ErrTooManyJobs", err)
	}
	if err := s.Delete(ctx, "junk"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, tinySpec("c")); err != nil {
		t.Fatalf("after deleting: %v", err)
	}
}

func TestRecordSizeLimit(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "client")
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	const limit = 16 << 10
	checked := 0
	s, err := OpenStore(octx, nc, StoreConfig{MaxRecordBytes: limit, CheckLadder: func(ref, inline string) (float64, error) {
		checked++
		return ladder.Check(ref, inline)
	}})
	if err != nil {
		t.Fatal(err)
	}
	big := tinySpec("big")
	big.LadderYAML += "# " + strings.Repeat("x", limit) + "\n"
	_, err = s.Submit(ctx, big)
	if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "spec") {
		t.Fatalf("oversized spec: %v, want ErrInvalidSpec naming spec", err)
	}
	if checked != 0 {
		t.Fatal("the ladder of an oversized spec was parsed")
	}
	// What Submit refuses, the bucket refuses from anyone.
	if _, err := rawJobs(t, nc).Put(ctx, "big", make([]byte, limit+1)); err == nil {
		t.Fatal("the bucket took a value over its max value size")
	}
	// Just under the limit is fine.
	fits := tinySpec("fits")
	fits.LadderYAML += "# " + strings.Repeat("x", limit-recordSlack-len(fits.LadderYAML)-400) + "\n"
	if _, err := s.Submit(ctx, fits); err != nil {
		t.Fatalf("spec under the limit: %v", err)
	}
}
