package jobs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
)

// ticketCount is how many dispatch tickets wait in the stream.
func ticketCount(t *testing.T, s *Store) uint64 {
	t.Helper()
	info, err := s.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestSubmitGetListStop(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "client"), 1)

	a, err := s.Submit(ctx, tinySpec("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	if a.State != StatePending || a.Cost != testutil.TinyCost || a.Revision == 0 || a.Owner != "" {
		t.Fatalf("submitted: %+v", a)
	}
	if a.Reason != "no live node" {
		t.Fatalf("reason %q: no node is up yet", a.Reason)
	}
	if _, err := s.Submit(ctx, Spec{ID: "beta", Input: testutil.TinyInput, Ladder: "mobile"}); err != nil {
		t.Fatal(err)
	}

	got := getJob(t, s, "alpha")
	if !got.Spec.equal(&a.Spec) || got.Revision != a.Revision || got.State != StatePending {
		t.Fatalf("get: %+v, want %+v", got, a)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Spec.ID != "alpha" || list[1].Spec.ID != "beta" {
		t.Fatalf("list: %v", list)
	}
	if n := ticketCount(t, s); n != 2 {
		t.Fatalf("%d tickets, want one per job", n)
	}

	// Nobody runs alpha yet: stopping it stops it at once.
	st, err := s.Stop(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateStopped || st.Revision <= a.Revision {
		t.Fatalf("stopped: %+v", st)
	}
	again, err := s.Stop(ctx, "alpha")
	if err != nil || again.Revision != st.Revision {
		t.Fatalf("stopping again changed it: %+v, %v", again, err)
	}
	if _, err := s.Stop(ctx, "nope"); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("stop unknown: %v", err)
	}

	// A running job becomes stopping, for its owner to act on.
	b := getJob(t, s, "beta")
	b.State, b.Owner = StateRunning, "n1"
	if _, err := s.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Stop(ctx, "beta"); err != nil || st.State != StateStopping || st.Owner != "n1" {
		t.Fatalf("stop running: %+v, %v", st, err)
	}

	hist, err := s.History(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].State != StatePending || hist[1].State != StateStopped || hist[0].Revision >= hist[1].Revision {
		t.Fatalf("history: %+v", hist)
	}
}

func TestSubmitIsIdempotent(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "client"), 1)

	// Eight clients submit the same job at once: one record, one ticket.
	var wg sync.WaitGroup
	revs := make([]uint64, 8)
	errs := make([]error, 8)
	for i := range revs {
		wg.Go(func() {
			j, err := s.Submit(ctx, tinySpec("same"))
			errs[i] = err
			if err == nil {
				revs[i] = j.Revision
			}
		})
	}
	wg.Wait()
	for i := range revs {
		if errs[i] != nil || revs[i] != revs[0] {
			t.Fatalf("submission %d: revision %d (first %d), %v", i, revs[i], revs[0], errs[i])
		}
	}
	if n := ticketCount(t, s); n != 1 {
		t.Fatalf("%d tickets after duplicate submissions, want 1", n)
	}

	// The same id with other work is refused while the job lives.
	other := tinySpec("same")
	other.Input = "rtmp://example.invalid/live"
	if _, err := s.Submit(ctx, other); !errors.Is(err, ErrJobExists) {
		t.Fatalf("different spec: %v, want ErrJobExists", err)
	}
	// An empty output list is the same as a missing one.
	noOutputs := tinySpec("quiet")
	noOutputs.Outputs = []string{}
	q1, err := s.Submit(ctx, noOutputs)
	if err != nil {
		t.Fatal(err)
	}
	noOutputs.Outputs = nil
	if q2, err := s.Submit(ctx, noOutputs); err != nil || q2.Revision != q1.Revision {
		t.Fatalf("nil vs empty outputs: %v", err)
	}

	// Once ended, the id keeps its spec: other work needs an explicit
	// replace (nobody takes over a stream's name by resubmitting it).
	if _, err := s.Stop(ctx, "same"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, other); !errors.Is(err, ErrJobExists) {
		t.Fatalf("other work under an ended job's id without replace: %v, want ErrJobExists", err)
	}
	re, err := s.Submit(ctx, other, Replace())
	if err != nil {
		t.Fatal(err)
	}
	if re.State != StatePending || re.Spec.Input != other.Input || re.Revision <= revs[0] {
		t.Fatalf("resubmitted: %+v", re)
	}
	if n := ticketCount(t, s); n != 3 {
		t.Fatalf("%d tickets, want 3 (same, quiet, same again)", n)
	}
}

func TestUpdateDetectsConflicts(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "client"), 1)
	if _, err := s.Submit(ctx, tinySpec("cas")); err != nil {
		t.Fatal(err)
	}
	// Two writers read the same revision; the second write must lose.
	a, b := getJob(t, s, "cas"), getJob(t, s, "cas")
	a.Owner, a.State = "n1", StateStarting
	b.Owner, b.State = "n2", StateStarting
	if _, err := s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update(ctx, b)
	if !errors.Is(err, ErrConflict) || !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("second writer: %v, want ErrConflict", err)
	}
	if got := getJob(t, s, "cas"); got.Owner != "n1" {
		t.Fatalf("owner %q after the conflict, want n1", got.Owner)
	}
}

func TestSubmitRejectsMalformedSpecs(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "client"), 1)
	valid := tinySpec("ok")
	cases := []struct {
		name  string
		edit  func(*Spec)
		field string // the message must name it
	}{
		{"empty id", func(s *Spec) { s.ID = "" }, "id"},
		{"id with a dot", func(s *Spec) { s.ID = "a.b" }, "id"},
		{"id with a space", func(s *Spec) { s.ID = "a b" }, "id"},
		{"id too long", func(s *Spec) { s.ID = strings.Repeat("x", 65) }, "id"},
		{"no input", func(s *Spec) { s.Input = " " }, "input"},
		{"control character in input", func(s *Spec) { s.Input = "rtmp://x/\n" }, "input"},
		{"input too long", func(s *Spec) { s.Input = "rtmp://" + strings.Repeat("x", maxInputLen) }, "input"},
		{"no ladder", func(s *Spec) { s.Ladder, s.LadderYAML = "", "" }, "ladder"},
		{"unknown shipped ladder", func(s *Spec) { s.Ladder, s.LadderYAML = "huge", "" }, `no built-in ladder "huge"`},
		{"missing ladder file", func(s *Spec) { s.Ladder, s.LadderYAML = "/nonexistent/l.yaml", "" }, "ladder"},
		{"invalid inline ladder", func(s *Spec) { s.LadderYAML = "name: x\nrungs: 5\n" }, "rungs"},
		{"unknown output", func(s *Spec) { s.Outputs = []string{"rtmp"} }, "outputs[0]"},
		{"duplicate output", func(s *Spec) { s.Outputs = []string{"hls", "webrtc", "hls"} }, "outputs[2]"},
		{"unknown encoder", func(s *Spec) { s.Constraints.Encoder = "x265" }, "constraints.encoder"},
		{"too many publish targets", func(s *Spec) {
			for range MaxPublishTargets + 1 {
				s.Publish = append(s.Publish, PublishTarget{URL: "https://whip.example/live"})
			}
		}, "publish"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := valid
			spec.Outputs = append([]string(nil), valid.Outputs...)
			c.edit(&spec)
			_, err := s.Submit(context.Background(), spec)
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("err %v, want ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("err %q does not name %q", err, c.field)
			}
			if errors.Is(err, pipeline.ErrStreamName) != (c.field == "id") {
				t.Fatalf("err %v: stream-name sentinel mismatch", err)
			}
		})
	}
	if jobs, err := s.List(context.Background()); err != nil || len(jobs) != 0 {
		t.Fatalf("rejected specs left jobs: %v, %v", jobs, err)
	}
}

func TestStoreConfigErrors(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "client")
	for _, cfg := range []StoreConfig{{Replicas: 7}, {History: 5}, {History: 65}, {MaxJobs: -1}, {MaxRecordBytes: 100}, {JobsMaxBytes: 1000}} {
		if _, err := OpenStore(context.Background(), nc, cfg); err == nil {
			t.Fatalf("%+v accepted", cfg)
		}
	}
	// Three replicas on a single server cannot be placed: OpenStore keeps
	// trying until its context ends, then says what it could not create.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := OpenStore(ctx, nc, StoreConfig{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), JobsBucket) {
		t.Fatalf("R3 on one server: %v", err)
	}
}

func TestDeleteOnlyEndedJobs(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "client"), 1)
	if _, err := s.Submit(ctx, tinySpec("old")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "old"); !errors.Is(err, ErrJobActive) {
		t.Fatalf("delete pending: %v, want ErrJobActive", err)
	}
	if _, err := s.Stop(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "old"); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := s.Delete(ctx, "old"); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if jobs, _ := s.List(ctx); len(jobs) != 0 {
		t.Fatalf("list after delete: %v", jobs)
	}
	// The id is free again.
	if j, err := s.Submit(ctx, tinySpec("old")); err != nil || j.State != StatePending {
		t.Fatalf("resubmit after delete: %+v, %v", j, err)
	}
}
