package relay

import (
	"bytes"
	"context"
	"math"
	"sync"
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
// timestamps keep increasing by as much as the outage lasted, the first
// packet after the change is marked.
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
	rctx, stopReading := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	defer readers.Wait()
	defer stopReading()
	got := collect(rctx, f.Subscribe(pipeline.WithTracks(0)), &readers)
	testutil.Eventually(t, 20*time.Second, "30 frames of the first publisher", func() bool { return len(got()) >= 30 })
	stop1()
	stop2 := publish()
	defer stop2()
	marked := -1
	testutil.Eventually(t, 20*time.Second, "30 frames of the second publisher", func() bool {
		all := got()
		for i, r := range all {
			if r.p.Discontinuity {
				marked = i
			}
		}
		return marked > 0 && len(all) >= marked+30
	})
	all := got()
	for i := 1; i < len(all); i++ {
		if all[i].p.PTS <= all[i-1].p.PTS {
			t.Fatalf("PTS went from %d to %d across the publisher change", all[i-1].p.PTS, all[i].p.PTS)
		}
		if all[i].p.Discontinuity && i != marked {
			t.Errorf("packet %d marked too, want only the first after the change", i)
		}
	}
	if f.Changes() != 1 {
		t.Errorf("changes %d, want 1", f.Changes())
	}
	// Media time advances by the outage as the publishers' ingest stamps
	// tell it (the stream keeps the new publisher's first packets, so its
	// first frame's start-up delay is not counted as outage).
	prev, first := all[marked-1], all[marked]
	media := float64(first.p.PTS-prev.p.PTS) / 90000
	wall := first.p.Ingest.Sub(prev.p.Ingest).Seconds()
	t.Logf("outage %.3fs (ingest to ingest; %.3fs arrival to arrival), media time advanced %.3fs", wall, first.at.Sub(prev.at).Seconds(), media)
	if math.Abs(media-wall) > 1.0/30+0.1 {
		t.Errorf("media time advanced %.3fs across an outage of %.3fs, want the outage", media, wall)
	}

	// A node that starts following only now joins the timeline f serves:
	// the same TimelineID, and the same timestamps for the same packets.
	nc2 := testutil.DialNATS(t, e, "late")
	g, err := Follow(context.Background(), nc2, "s", WithPublisherWait(10*time.Second), WithLogger(testutil.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.TimelineID() != f.TimelineID() {
		t.Errorf("a follower started after the change is on timeline %q, the first follower on %q", g.TimelineID(), f.TimelineID())
	}
	late := collect(rctx, g.Subscribe(pipeline.WithTracks(0)), &readers)
	testutil.Eventually(t, 20*time.Second, "10 frames on the late follower", func() bool { return len(late()) >= 10 })
	matched := 0
	for _, lp := range late() {
		// Among the second publisher's frames: the first one, a
		// transcoder of the same source, made byte-identical frames.
		for _, r := range got()[marked:] {
			if bytes.Equal(r.p.Data, lp.p.Data) {
				matched++
				if r.p.PTS != lp.p.PTS {
					t.Errorf("the same frame at PTS %d on the first follower, %d on the late one", r.p.PTS, lp.p.PTS)
				}
				break
			}
		}
	}
	if matched == 0 {
		t.Error("no frame of the late follower found on the first")
	}
	t.Logf("late follower: timeline %s, %d frames with the same timestamps as the first follower's", g.TimelineID(), matched)
}
