package relay

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
)

// received is one packet as a reader of the followed stream saw it.
type received struct {
	p  *pipeline.Packet
	at time.Time
}

// collect reads r into a list until ctx ends; the returned function gives a
// copy of what was read so far.
func collect(ctx context.Context, r *pipeline.Reader, wg *sync.WaitGroup) func() []received {
	var mu sync.Mutex
	var got []received
	wg.Go(func() { // ends with ctx
		for {
			p, err := r.Read(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, received{p, time.Now()})
			mu.Unlock()
		}
	})
	return func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

// TestReconnectAdvancesByTheOutage: a pushed stream's publisher drops and
// comes back 2 s later with its clock at zero (relay.FollowSource in the
// job's worker). The followed stream's time advances by the outage, within
// a frame, the same for audio and video, and no DTS goes back.
func TestReconnectAdvancesByTheOutage(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	ingestConn, workerConn := testutil.DialNATS(t, e, "ingest"), testutil.DialNATS(t, e, "worker")
	ctx, cancel := context.WithCancel(context.Background())
	var pubs sync.WaitGroup
	defer pubs.Wait()
	defer cancel()
	tracks := []pipeline.Track{
		{ID: 0, Name: "video", Kind: pipeline.KindVideo, Codec: pipeline.CodecH264, ClockRate: 90000, Width: 320, Height: 180},
		{ID: 1, Name: "audio", Kind: pipeline.KindAudio, Codec: pipeline.CodecAAC, ClockRate: 48000, SampleRate: 48000, Channels: 2},
	}
	publish := func() *fake.Source {
		src := fake.NewSource(tracks...)
		pubs.Go(func() { _ = PublishSource(ctx, ingestConn, "cam", src) }) // ends with StopSource or ctx
		return src
	}
	// send is one second of media from a publisher's own clock, 30 fps
	// video (an IDR first) and 1024-sample AAC frames, interleaved by time.
	send := func(src *fake.Source) (sent int, at time.Time) {
		v, a := 0, 0
		for v < 30 {
			if float64(a*1024)/48000 < float64(v)/30 {
				src.Publish(&pipeline.Packet{Track: 1, PTS: int64(a * 1024), DTS: int64(a * 1024), Duration: 1024, Keyframe: true, Data: []byte{1}})
				a++
				continue
			}
			pts := int64(v * 3000)
			src.Publish(&pipeline.Packet{Track: 0, PTS: pts, DTS: pts, Duration: 3000, Keyframe: v == 0, Data: []byte{0, 0, 0, 1, 0x65}})
			v++
		}
		return v + a, time.Now()
	}

	src := publish()
	testutil.Eventually(t, 3*time.Second, "the source live", func() bool { return SourceLive(ctx, workerConn, "cam", 200*time.Millisecond) })
	stream, err := FollowSource(ctx, workerConn, "cam", WithPublisherWait(10*time.Second), WithLogger(testutil.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	rctx, stopReading := context.WithCancel(ctx)
	var readers sync.WaitGroup
	defer readers.Wait()
	defer stopReading()
	got := collect(rctx, stream.Subscribe(pipeline.Lossless()), &readers)
	testutil.Eventually(t, 3*time.Second, "the follower subscribed", func() bool { return src.Readers() > 0 })
	n, lastSent := send(src)
	testutil.Eventually(t, 3*time.Second, "the first second forwarded", func() bool { return len(got()) == n })

	// The publisher drops; the outage lasts 2 s from its last packet.
	if err := StopSource(ingestConn, "cam"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "2 s of outage", func() bool { return time.Since(lastSent) >= 2*time.Second })
	src = publish()
	testutil.Eventually(t, 5*time.Second, "the follower on the new publisher", func() bool {
		return stream.Changes() == 1 && src.Readers() > 0
	})
	firstSent := time.Now()
	if m, _ := send(src); m != n {
		t.Fatalf("sent %d, then %d", n, m)
	}
	outage := firstSent.Sub(lastSent).Seconds()
	testutil.Eventually(t, 3*time.Second, "the second publisher forwarded", func() bool { return len(got()) == 2*n })

	all := got()
	lastDTS := map[int]int64{}
	var before, after [2]*pipeline.Packet // newest before the change, first after, per track
	for _, r := range all {
		p := r.p
		if d, ok := lastDTS[p.Track]; ok && p.DTS <= d {
			t.Fatalf("track %d: DTS %d after %d", p.Track, p.DTS, d)
		}
		lastDTS[p.Track] = p.DTS
		switch {
		case after[p.Track] == nil && p.Discontinuity:
			after[p.Track] = p
		case after[p.Track] == nil:
			before[p.Track] = p
		}
	}
	if after[0] == nil || after[1] == nil || before[0] == nil || before[1] == nil {
		t.Fatalf("no marked packet after the change on both tracks: %v", after)
	}
	if !after[0].Keyframe {
		t.Fatalf("video resumed on %+v, want the new publisher's IDR", after[0])
	}
	// The new publisher's first video and audio packets were both at its
	// zero (video first), so their PTS now are each track's shift: the
	// same seconds, or audio and video drifted apart.
	vShift, aShift := float64(after[0].PTS)/90000, float64(after[1].PTS)/48000
	if math.Abs(vShift-aShift) > 1.0/48000+1.0/90000 {
		t.Errorf("video shifted %.6fs, audio %.6fs: want the same", vShift, aShift)
	}
	vAdvance := float64(after[0].PTS-before[0].PTS) / 90000
	t.Logf("outage %.3fs: video advanced %.3fs, video shift %.4fs, audio shift %.4fs", outage, vAdvance, vShift, aShift)
	if math.Abs(vAdvance-outage) > 1.0/30+0.02 {
		t.Errorf("video advanced %.3fs across an outage of %.3fs, want the outage within a frame", vAdvance, outage)
	}
}
