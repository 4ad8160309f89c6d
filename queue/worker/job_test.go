package worker

import (
	"context"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/relay"
)

// TestRealtimeReachesTheJob runs a job in-process, publishing on a real
// NATS server, and reads it back the way a serving node does: a paced job
// (the default) runs at 1x; realtime: false runs as fast as it can.
func TestRealtimeReachesTheJob(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	speed := func(id string, realtime *bool) float64 {
		t.Helper()
		r := &InProcess{NC: nc, Log: testutil.Logger(t)}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		spec := jobs.Spec{ID: id, Input: testutil.TinyInput, Ladder: "tiny", LadderYAML: testutil.TinyLadder, Realtime: realtime}
		go func() { done <- r.Run(ctx, spec, func() {}) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}()
		var s *relay.Stream
		testutil.Eventually(t, 10*time.Second, id+" published", func() bool {
			var err error
			s, err = relay.Follow(ctx, nc, id, relay.WithPublisherWait(0))
			return err == nil
		})
		defer s.Close()
		var st float64
		testutil.Eventually(t, 15*time.Second, id+" reporting 3 s of media", func() bool {
			stats := s.Stats()
			st = stats.Speed
			return stats.MediaTime >= 3*time.Second
		})
		return st
	}
	off := false
	paced, fast := speed("paced", nil), speed("unpaced", &off)
	t.Logf("speed paced %.2fx, unpaced %.2fx", paced, fast)
	if paced > 1.2 {
		t.Errorf("default (realtime) job ran at %.2fx, want about 1x", paced)
	}
	if fast < 1.5 {
		t.Errorf("realtime: false ran at %.2fx, want faster than real time", fast)
	}
}
