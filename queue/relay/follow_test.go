package relay

import (
	"context"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// TestStreamSurvivesPublisherChange: the publisher of a stream is
// replaced (as after a failover); the followed stream keeps its readers, its
// timestamps keep increasing, the first packets after the change are marked.
func TestStreamSurvivesPublisherChange(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	l, err := ladder.Resolve("tiny", testutil.TinyLadder)
	if err != nil {
		t.Fatal(err)
	}
	publish := func() (stop func()) {
		job, err := transcode.Start(context.Background(), transcode.Options{Input: testutil.TinyInput, Ladder: l, Realtime: true, CPUs: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = Publish(ctx, nc, "s", job) }() // stopped by cancel: its error says so
		return func() { cancel(); <-done; job.Close() }
	}
	stop1 := publish()
	var f *Stream
	testutil.Eventually(t, 5*time.Second, "the first publisher", func() bool {
		f, err = Follow(context.Background(), nc, "s", WithPublisherWait(10*time.Second), WithLogger(testutil.Logger(t)))
		return err == nil
	})
	defer f.Close()
	r := f.Subscribe(pipeline.WithTracks(0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	read := func(n int) (pts []int64, marked int) {
		for len(pts) < n {
			p, err := r.Read(ctx)
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			pts = append(pts, p.PTS)
			if p.Discontinuity {
				marked++
			}
		}
		return pts, marked
	}
	before, _ := read(30)
	stop1()
	stop2 := publish()
	defer stop2()
	after, marked := read(30)
	all := append(before, after...)
	for i := 1; i < len(all); i++ {
		if all[i] <= all[i-1] {
			t.Fatalf("PTS went from %d to %d across the publisher change", all[i-1], all[i])
		}
	}
	if marked != 1 || f.Changes() != 1 {
		t.Errorf("discontinuity marks %d, changes %d; want 1 and 1", marked, f.Changes())
	}
	if gap := float64(after[0]-before[len(before)-1]) / 90000; gap > 1 {
		t.Errorf("timestamps jumped %.2fs across the change, want a continuation", gap)
	}
}
