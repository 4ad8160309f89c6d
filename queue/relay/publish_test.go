package relay

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

func TestRelayRoundTripWithChunks(t *testing.T) {
	testutil.LeakCheck(t)
	const maxPayload = 1024
	e := testutil.StartNATS(t, bus.EmbeddedConfig{MaxPayload: maxPayload})
	pubConn, subConn := testutil.DialNATS(t, e, "publisher"), testutil.DialNATS(t, e, "viewer")
	if got := subConn.MaxPayload(); got != maxPayload {
		t.Fatalf("max payload %d", got)
	}
	job := fake.NewSource()
	defer job.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- Publish(ctx, pubConn, "cam1", job) }()

	var remote pipeline.Source
	var received atomic.Int64
	testutil.Eventually(t, 2*time.Second, "stream published", func() bool {
		var err error
		remote, err = Follow(ctx, subConn, "cam1", WithPublisherWait(0), WithReceivedBytes(func(n int) { received.Add(int64(n)) }))
		return err == nil
	})
	defer remote.Close()
	if n := received.Load(); n != 0 {
		t.Errorf("%d media bytes received before any packet", n)
	}
	if !reflect.DeepEqual(remote.Tracks(), job.Tracks()) {
		t.Fatalf("tracks %+v, want %+v", remote.Tracks(), job.Tracks())
	}
	reader := remote.Subscribe(pipeline.Lossless())
	defer reader.Close()

	room := maxPayload - headerLen
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	ingest := time.Unix(1_700_000_000, 123456789)
	sent := []*pipeline.Packet{
		{Track: 0, Data: pattern(100_000, 1), PTS: 0, DTS: -3000, Duration: 3000, Keyframe: true, Ingest: ingest}, // 103 chunks
		{Track: 1, Data: pattern(300, 2), PTS: 0, DTS: 0, Duration: 1024},
		{Track: 0, Data: pattern(room, 3), PTS: 3000, DTS: 0, Duration: 3000, Ingest: ingest.Add(33 * time.Millisecond)}, // exactly one message
		{Track: 0, Data: pattern(room+1, 4), PTS: 6000, DTS: 3000, Duration: 3000},                                       // two chunks, the second 1 byte
		{Track: 1, Data: nil, PTS: 1024, DTS: 1024, Duration: 1024},                                                      // empty
		{Track: 0, Data: pattern(5, 5), PTS: 1 << 40, DTS: 1<<40 - 1, Duration: 3000, Keyframe: true, Discontinuity: true},
	}
	for _, p := range sent {
		job.Publish(p)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	for i, want := range sent {
		got, err := reader.Read(rctx)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if got.Track != want.Track || !bytes.Equal(got.Data, want.Data) || got.PTS != want.PTS || got.DTS != want.DTS ||
			got.Duration != want.Duration || got.Keyframe != want.Keyframe || !got.Ingest.Equal(want.Ingest) || got.Discontinuity != want.Discontinuity {
			t.Fatalf("packet %d: got track %d len %d pts %d dts %d dur %d key %v ingest %v; want track %d len %d pts %d dts %d dur %d key %v ingest %v",
				i, got.Track, len(got.Data), got.PTS, got.DTS, got.Duration, got.Keyframe, got.Ingest,
				want.Track, len(want.Data), want.PTS, want.DTS, want.Duration, want.Keyframe, want.Ingest)
		}
	}
	// Every message is counted, with its header.
	var payload, messages int64
	for _, p := range sent {
		payload += int64(len(p.Data))
		messages += int64(max(1, (len(p.Data)+room-1)/room))
	}
	if got, want := received.Load(), payload+messages*headerLen; got != want {
		t.Errorf("received %d media bytes, want %d (%d payload bytes in %d messages)", got, want, payload, messages)
	}

	// Keyframe requests reach the job with their reasons (one at
	// subscription, more now; the remote side sends at most one per reason
	// per 100 ms, so keep asking).
	before := job.Keyframes()
	testutil.Eventually(t, 2*time.Second, "keyframe request reached the job", func() bool {
		remote.RequestKeyframe(pipeline.KeyframePLI)
		return job.Keyframes() > before
	})
	if r := job.KeyframeReasons(); r[0] != pipeline.KeyframeFollower || r[len(r)-1] != pipeline.KeyframePLI {
		t.Errorf("keyframe reasons %v: want %q first (the follower joining), %q last", r, pipeline.KeyframeFollower, pipeline.KeyframePLI)
	}
	testutil.Eventually(t, 3*time.Second, "publisher stats", func() bool { return remote.Stats().MediaTime == 42*time.Second })

	// The job ends: the publisher says so and the remote job ends cleanly.
	job.Close()
	select {
	case <-remote.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("remote job did not end with the publisher")
	}
	if err := remote.Err(); err != nil {
		t.Fatalf("remote err %v, want nil for a clean end", err)
	}
	if err := <-pubDone; err != nil {
		t.Fatalf("publisher: %v", err)
	}
}

func TestRelayFromRealTranscoder(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	const maxPayload = 4096 // 180p keyframes are larger: they travel in chunks
	e := testutil.StartNATS(t, bus.EmbeddedConfig{MaxPayload: maxPayload})
	pubConn, subConn := testutil.DialNATS(t, e, "worker"), testutil.DialNATS(t, e, "edge")
	l, err := ladder.Resolve("", `name: longgop
gop: 10s
keyframe_min_interval: 500ms
rungs:
  - {name: 180p, height: 180, bitrate: 300k, preset: ultrafast}
`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job, err := transcode.Start(ctx, transcode.Options{Input: testutil.TinyInput, Ladder: l, Realtime: true, CPUs: 1, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer job.Close()
	local := job.Subscribe(pipeline.Lossless())
	defer local.Close()
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan error, 1)
	go func() { pubDone <- Publish(pubCtx, pubConn, "live", job) }()
	defer func() {
		stopPub()
		err := <-pubDone // stopped by stopPub: its error says so
		_ = err
	}()

	var remote pipeline.Source
	testutil.Eventually(t, 2*time.Second, "stream published", func() bool {
		remote, err = Follow(ctx, subConn, "live", WithPublisherWait(0))
		return err == nil
	})
	defer remote.Close()
	if !reflect.DeepEqual(remote.Tracks(), job.Tracks()) {
		t.Fatalf("tracks differ:\n%+v\n%+v", remote.Tracks(), job.Tracks())
	}
	rr := remote.Subscribe(pipeline.Lossless())
	defer rr.Close()

	// Everything the local reader saw, by track and DTS.
	type key struct {
		track int
		dts   int64
	}
	var mu sync.Mutex
	seen := map[key]*pipeline.Packet{}
	var wg sync.WaitGroup
	lctx, lcancel := context.WithCancel(ctx)
	wg.Go(func() { // reads the local reader until the test is done comparing
		for {
			p, err := local.Read(lctx)
			if err != nil {
				return
			}
			mu.Lock()
			seen[key{p.Track, p.DTS}] = p
			mu.Unlock()
		}
	})
	defer func() { lcancel(); wg.Wait() }()

	// The remote side joins at a keyframe it asked for (the GOP is 10 s,
	// so an early keyframe is the job answering), and every packet it gets
	// is byte-identical to the job's own.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	matched, chunked, keyframes := 0, 0, 0
	var firstKey time.Time
	for matched < 60 || keyframes < 2 {
		p, err := rr.Read(rctx)
		if err != nil {
			t.Fatalf("after %d packets (%d keyframes): %v", matched, keyframes, err)
		}
		if p.Keyframe && job.Tracks()[p.Track].Kind == pipeline.KindVideo {
			keyframes++
			if keyframes == 1 {
				firstKey = time.Now()
			} else if since := time.Since(firstKey); since > 5*time.Second {
				t.Fatalf("second keyframe after %s: the request did not reach the job", since)
			}
		}
		if keyframes == 1 {
			// Ask again (at most every 100 ms, the remote side coalesces):
			// a second keyframe long before the 10 s GOP ends proves the
			// request reached the job.
			remote.RequestKeyframe(pipeline.KeyframePLI)
		}
		var want *pipeline.Packet
		testutil.Eventually(t, time.Second, "local copy of the packet", func() bool {
			mu.Lock()
			defer mu.Unlock()
			want = seen[key{p.Track, p.DTS}]
			return want != nil
		})
		if !bytes.Equal(p.Data, want.Data) || p.PTS != want.PTS || p.Keyframe != want.Keyframe || p.Duration != want.Duration || !p.Ingest.Equal(want.Ingest) {
			t.Fatalf("packet track %d dts %d differs", p.Track, p.DTS)
		}
		if len(p.Data) > maxPayload-headerLen {
			chunked++
		}
		matched++
	}
	if chunked == 0 {
		t.Fatal("no packet needed chunks; lower the test's max payload")
	}
	t.Logf("%d packets identical, %d of them chunked, %d keyframes", matched, chunked, keyframes)

	// Described without following: the job's tracks, and statistics of a
	// running transcoder (speed and frame rates above zero).
	// The frame rate is over the last few seconds: a job a second old may
	// not have a window yet, so ask until it has.
	var info StreamInfo
	var stats pipeline.SourceStats
	testutil.Eventually(t, 5*time.Second, "described stats with speed and fps above 0", func() bool {
		info, stats, err = Describe(ctx, subConn, "live")
		if err != nil {
			t.Fatal(err)
		}
		return stats.Speed > 0 && len(stats.Tracks) > 0 && stats.Tracks[0].FPS > 0
	})
	if !reflect.DeepEqual(info.Tracks, job.Tracks()) {
		t.Fatalf("described tracks differ:\n%+v\n%+v", info.Tracks, job.Tracks())
	}
	t.Logf("described: speed %.2f, %s at %.1f fps", stats.Speed, stats.Tracks[0].Track, stats.Tracks[0].FPS)
}

func TestFollowErrors(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "viewer")
	ctx := context.Background()
	if _, err := Follow(ctx, nc, "nobody", WithPublisherWait(0)); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("no publisher: %v", err)
	}
	if _, err := Follow(ctx, nc, "bad.name", WithPublisherWait(0)); !errors.Is(err, pipeline.ErrStreamName) {
		t.Fatalf("bad name: %v", err)
	}
	if err := Publish(ctx, nc, "bad name", fake.NewSource()); !errors.Is(err, pipeline.ErrStreamName) {
		t.Fatalf("publish bad name: %v", err)
	}
}

func TestStreamEndsWhenPublisherVanishes(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	pubConn, subConn := testutil.DialNATS(t, e, "publisher"), testutil.DialNATS(t, e, "viewer")
	job := fake.NewSource()
	defer job.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- Publish(ctx, pubConn, "cam2", job) }()
	var remote pipeline.Source
	testutil.Eventually(t, 2*time.Second, "stream published", func() bool {
		var err error
		remote, err = Follow(ctx, subConn, "cam2", WithStaleAfter(600*time.Millisecond), WithPublisherWait(0))
		return err == nil
	})
	defer remote.Close()

	// The publisher's process dies: its connection drops without a word.
	pubConn.Close()
	start := time.Now()
	select {
	case <-remote.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("remote job still waiting for a dead publisher")
	}
	if !errors.Is(remote.Err(), ErrStreamGone) {
		t.Fatalf("err %v, want ErrStreamGone", remote.Err())
	}
	t.Logf("ended %s after the publisher vanished: %v", time.Since(start).Round(time.Millisecond), remote.Err())
	cancel()
	err := <-pubDone // its connection is gone: whatever it returns is expected
	_ = err
}
