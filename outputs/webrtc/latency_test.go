package webrtc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
)

const (
	source720 = transcode.LavfiPrefix + "testsrc2=size=1280x720:rate=30[out0];sine=frequency=440:sample_rate=48000[out1]"
	ladder720 = `name: latency
gop: 1s
rungs:
  - {name: 720p, height: 720, bitrate: 2800k, preset: veryfast, tune: zerolatency}
audio: {aac: {bitrate: 64k}, opus: {bitrate: 64k}}
`
)

// TestLatency measures, per video frame of a 720p x264 zerolatency rung,
// the time from the source frame entering the pipeline (Packet.Ingest) to
// the viewer receiving the frame's last RTP packet, split into the
// transcoder's part (until the encoded frame is published to the job's
// readers) and what WebRTC delivery adds (packetize, queue, SRTP, loopback
// UDP, the viewer's reassembly).
func TestLatency(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, source720, ladder720)
	srv, hs := startServer(t, job, testConfig(), nil)

	// When each encoded frame reached the job's readers.
	type published struct{ ingest, at time.Time }
	var mu sync.Mutex
	pub := map[int64]published{}
	probe := job.Subscribe(pipeline.WithTracks(job.Tracks()[0].ID), pipeline.WithName("latency-probe"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			p, err := probe.Read(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			pub[p.PTS] = published{ingest: p.Ingest, at: time.Now()}
			mu.Unlock()
		}
	}()
	defer func() { cancel(); probe.Close(); wg.Wait() }()

	v := newViewer(t, viewerOptions{})
	defer v.close(true)
	v.mustConnect(t, hs.URL, "test")
	testutil.Eventually(t, 10*time.Second, "video", func() bool { return len(v.snapshot()) > 0 })
	warm := len(v.snapshot()) + 30 // skip the first second
	testutil.Eventually(t, 15*time.Second, "6 s of frames", func() bool { return len(v.snapshot()) >= warm+150 })

	srv.mu.Lock()
	base := srv.streams["test"].pk.videoBase
	srv.mu.Unlock()
	var total, transcoder, delivery []time.Duration
	mu.Lock()
	for _, f := range v.snapshot()[warm:] {
		p, ok := pub[int64(f.ts-base)]
		if !ok {
			continue
		}
		total = append(total, f.arrival.Sub(p.ingest))
		transcoder = append(transcoder, p.at.Sub(p.ingest))
		delivery = append(delivery, f.arrival.Sub(p.at))
	}
	mu.Unlock()
	if len(total) < 140 {
		t.Fatalf("matched %d frames to their ingest time, want ~150", len(total))
	}
	sortDurations(total)
	sortDurations(transcoder)
	sortDurations(delivery)
	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	testutil.Report(t, "720p, %d frames: ingest->viewer p50 %s p95 %s max %s | transcoder p50 %s p95 %s | WebRTC delivery p50 %s p95 %s max %s",
		len(total), ms(percentile(total, .5)), ms(percentile(total, .95)), ms(total[len(total)-1]),
		ms(percentile(transcoder, .5)), ms(percentile(transcoder, .95)),
		ms(percentile(delivery, .5)), ms(percentile(delivery, .95)), ms(delivery[len(delivery)-1]))
	if p95 := percentile(delivery, .95); p95 > 100*time.Millisecond {
		t.Errorf("WebRTC delivery adds %s at p95, want <= 100ms", p95)
	}
	if p95 := percentile(total, .95); p95 > 300*time.Millisecond {
		t.Errorf("ingest to viewer %s at p95: far from sub-second budgets", p95)
	}
}
