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

// TestStreamStartsJoinOnCachedKeyframe runs a stream over a real job and connects
// two viewers the way sessions do (askJoinKeyframe at the POST, activate at
// connect). The first connects right after its join IDR reached the stream:
// its queue starts with that IDR and the frames since, then the live ones,
// every frame once and in order, and audio from activation on. The second
// connects when its rung's last keyframe is too old to start on: it gets no
// cached frames, asks for one more IDR, and starts on it.
func TestStreamStartsJoinOnCachedKeyframe(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	cfg := testConfig()
	st := newStream("test", job, &cfg, testLogger())
	mk := func(rung int) *session {
		s := &session{st: st, queue: newUnitQueue(cfg.ViewerQueue), log: testLogger()}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.interest.Store(1 << uint(rung))
		if !st.add(s) {
			t.Fatal("stream closed")
		}
		return s
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st.run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	keyAt := func(rung int) (time.Time, int) {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.starts[rung].keyAt, len(st.starts[rung].units)
	}
	cachedPTS := func(rung int) (int64, bool) {
		st.mu.Lock()
		defer st.mu.Unlock()
		if len(st.starts[rung].units) == 0 {
			return 0, false
		}
		return st.starts[rung].units[0].pts, true
	}
	var got []*unit
	collect := func(s *session, video int) func() bool {
		return func() bool {
			for q, ok := s.queue.pop(); ok; q, ok = s.queue.pop() {
				got = append(got, q.u)
			}
			n := 0
			for _, u := range got {
				if u.video {
					n++
				}
			}
			return n >= video
		}
	}

	// The first viewer connects just after its join IDR arrived.
	a := mk(2)
	asked := time.Now()
	st.askJoinKeyframe()
	testutil.Eventually(t, 5*time.Second, "the join IDR in the 180p start cache", func() bool {
		at, n := keyAt(2)
		return at.After(asked) && n >= 2
	})
	keyPTS, _ := cachedPTS(2)
	st.activate(a)
	testutil.Eventually(t, 5*time.Second, "30 frames for the first viewer", collect(a, 30))
	var video []*unit
	audio := 0
	for _, u := range got {
		if !u.video {
			audio++
			continue
		}
		video = append(video, u)
	}
	if !video[0].keyframe || video[0].rung != 2 || video[0].pts != keyPTS {
		t.Fatalf("first video unit: rung %d keyframe %v pts %d, want the cached 180p IDR (pts %d)",
			video[0].rung, video[0].keyframe, video[0].pts, keyPTS)
	}
	for i := 1; i < len(video); i++ {
		if video[i].rung != 2 || video[i].pts-video[i-1].pts != 3000 { // 30 fps in 90 kHz
			t.Fatalf("frame %d: rung %d pts +%d: want every 180p frame once, in order", i, video[i].rung, video[i].pts-video[i-1].pts)
		}
	}
	if audio == 0 {
		t.Errorf("no audio with the first %d frames", len(video))
	}
	if st.startedCached.Load() != 1 {
		t.Errorf("started on a cached keyframe: %d, want 1", st.startedCached.Load())
	}

	// The second viewer, on a rung nobody watches, connects when its last
	// keyframe is older than the cache keeps.
	b := mk(1)
	testutil.Eventually(t, 5*time.Second, "the 270p keyframe to age past the start cache", func() bool {
		at, _ := keyAt(1)
		age := time.Since(at)
		return at.After(asked) && age > startCacheMaxAge+50*time.Millisecond && age < 600*time.Millisecond
	})
	stalePTS, stale := cachedPTS(1)
	st.activate(b)
	// Its forwarder skips to the IDR it asked for (the next one).
	got = nil
	testutil.Eventually(t, 2*time.Second, "a 270p IDR for the second viewer", func() bool {
		collect(b, 0)()
		for _, u := range got {
			if u.video && u.keyframe && u.rung == 1 {
				return true
			}
		}
		return false
	})
	for _, u := range got {
		if u.video && stale && u.pts <= stalePTS {
			t.Fatalf("the second viewer got a frame (pts %d) from the stale keyframe on (pts %d)", u.pts, stalePTS)
		}
	}
	kf := st.kf.stats()
	if st.startedWaiting.Load() != 1 || kf.Requests[keyReasonJoin] != 2 {
		t.Errorf("started waiting %d, keyframe requests %v: want 1, the join and the late join's", st.startedWaiting.Load(), kf.Requests)
	}
}
