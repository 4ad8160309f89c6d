package webrtc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestStuckViewerDoesNotStallOthers runs a stream over a real job with two
// viewers' queues: one drained as fast as units come, one never drained
// (a viewer whose goroutine is stuck). The stuck one drops whole units and
// asks for one keyframe per gap; the other gets every unit; neither the
// stream's job reader nor the transcoder lose anything.
func TestStuckViewerDoesNotStallOthers(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	cfg := testConfig()
	st := newStream("test", job, &cfg, testLogger())
	mk := func() *session {
		s := &session{st: st, queue: newUnitQueue(cfg.ViewerQueue)}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.active.Store(true)
		s.interest.Store(1) // the top rung
		return s
	}
	fast, stuck := mk(), mk()
	st.add(fast)
	st.add(stuck)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); st.run(ctx) }()
	var received, videoFrames int
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-fast.queue.notify:
				for q, ok := fast.queue.pop(); ok; q, ok = fast.queue.pop() {
					received++
					if q.u.video {
						videoFrames++
					}
				}
			}
		}
	}()
	time.Sleep(5 * time.Second) // 5 s of media: ~150 frames and ~250 audio packets
	cancel()
	wg.Wait()
	for q, ok := fast.queue.pop(); ok; q, ok = fast.queue.pop() { // what came after the last wake-up
		received++
		if q.u.video {
			videoFrames++
		}
	}

	kf := st.kf.stats()
	t.Logf("fast viewer: %d units (%d frames); stuck viewer dropped %d; keyframe requests %v; reader dropped %d; job dropped %d",
		received, videoFrames, stuck.queue.droppedUnits(), kf.Requests, st.reader.Dropped(), job.Stats().Dropped)
	if videoFrames < 100 {
		t.Fatalf("only %d frames in 5 s", videoFrames)
	}
	// Both were offered the same units: the fast viewer took all of them,
	// the stuck one kept a full queue and dropped the rest.
	if fast.queue.droppedUnits() != 0 {
		t.Errorf("the fast viewer dropped %d units", fast.queue.droppedUnits())
	}
	if stuck.queue.n != cfg.ViewerQueue || stuck.queue.droppedUnits()+uint64(stuck.queue.n) != uint64(received) {
		t.Errorf("stuck viewer: %d queued + %d dropped, want a full queue (%d) and the rest of the %d units dropped",
			stuck.queue.n, stuck.queue.droppedUnits(), cfg.ViewerQueue, received)
	}
	if kf.Requests[keyReasonDrop] != 1 {
		t.Errorf("keyframe requests %v: want one for the stuck viewer's gap", kf.Requests)
	}
	if st.reader.Dropped() != 0 || job.Stats().Dropped != 0 {
		t.Errorf("reader dropped %d, transcoder dropped %d: a stuck viewer must cost nobody else", st.reader.Dropped(), job.Stats().Dropped)
	}
}
