package webrtc

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// TestLoadEvents (opt-in with the load test: PRISM_LOAD=1): the load
// test's viewers, each with a data channel, twice: once without events and
// once with PRISM_LOAD_EVENT_RATE (default 1000) events a second on the
// stream, each bound to the next frame as the stamper binds them. It
// compares ingest-to-frame-sent latency between the two runs and checks
// that every event sent in the window reached every viewer.
func TestLoadEvents(t *testing.T) {
	if os.Getenv(envLoad) != "1" {
		t.Skip("set PRISM_LOAD=1 to run the events load test")
	}
	viewers, seconds := envInt(envLoadViewers, 200), envInt(envLoadSeconds, 30)
	rate := envInt("PRISM_LOAD_EVENT_RATE", 1000)
	t.Setenv(envLoadEvents, "1")
	type result struct {
		p50, p95    time.Duration
		w           *loadWindow
		sent, lost  uint64
		fanoutDrops uint64
		published   int64
	}
	run := func(t *testing.T, rate int) result {
		job := startJob(t, smallSource, smallLadder)
		ej := &eventJob{Transcoder: job}
		cfg := testConfig()
		cfg.MaxSessions = viewers + 10
		cfg.MaxSessionsPerIP = cfg.MaxSessions
		srv, hs := startServer(t, ej, cfg, nil)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var latest, dur, ingest atomic.Int64
		var published atomic.Int64
		if rate > 0 {
			video := job.Tracks()[0].ID
			r := job.Subscribe(pipeline.WithTracks(video), pipeline.WithName("events-tap"))
			wg.Go(func() { // the newest frame, as the publisher's stamper sees it
				defer r.Close()
				for {
					p, err := r.Read(ctx)
					if err != nil {
						return
					}
					latest.Store(p.PTS)
					dur.Store(max(p.Duration, 1))
					ingest.Store(p.Ingest.UnixNano())
				}
			})
			wg.Go(func() { // rate events a second, in batches every 10 ms
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				var seq uint64
				for {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					if latest.Load() == 0 {
						continue
					}
					for range rate / 100 {
						seq++
						// As the stamper binds them: the next frame, its
						// program date time from the newest one's.
						last, next := latest.Load(), dur.Load()
						pts := last + next
						pdt := time.Unix(0, ingest.Load()+next*int64(time.Second)/pipeline.EventClock).UTC()
						ej.fan.Publish(&pipeline.Event{Stream: "test", ID: "e" + itoa(seq), Class: "bid", Data: []byte(`{"amount":1}`),
							PTS: pts, MediaTime: float64(pts) / pipeline.EventClock, PDT: pdt, Seq: seq})
						published.Add(1)
					}
				}
			})
		}
		w := runLoad(t, srv, hs.URL, viewers, seconds, func() uint64 { return job.Stats().Dropped }, envInt(envLoadWarmup, 1))
		cancel()
		wg.Wait()
		res := result{w: w, published: published.Load()}
		res.p50, res.p95, _ = srv.Latency("test")
		for _, s := range w.stats1.Streams {
			res.sent += s.Events.Sent
			res.lost += s.Events.Dropped
		}
		for _, s := range w.stats0.Streams {
			res.sent -= s.Events.Sent
			res.lost -= s.Events.Dropped
		}
		_, res.fanoutDrops = ej.fan.Counts()
		return res
	}
	var plain, events result
	t.Run("plain", func(t *testing.T) { plain = run(t, 0) })
	t.Run("events", func(t *testing.T) { events = run(t, rate) })
	if plain.w == nil || events.w == nil {
		t.Fatal("a run did not finish")
	}
	t.Logf("%d viewers, %d s windows, one ladder (%s): ingest to frame sent p50 %s p95 %s without events; with %d events/s p50 %s p95 %s",
		viewers, seconds, "smallLadder", plain.p50, plain.p95, rate, events.p50, events.p95)
	t.Logf("fps median %.1f without, %.1f with events; server CPU %.2f cores without, %.2f with",
		plain.w.summary.FPSMedian, events.w.summary.FPSMedian, plain.w.cores(), events.w.cores())
	t.Logf("events published on the stream: %d over the run; in the window: sent %d (%d per viewer), dropped %d on the server, %d by slow readers; received by the viewers %d (fewest %d)",
		events.published, events.sent, events.sent/uint64(max(viewers, 1)), events.lost, events.fanoutDrops, events.w.summary.EventsTotal, events.w.summary.EventsMin)
	if events.lost != 0 || events.fanoutDrops != 0 {
		t.Errorf("events lost: %d on sessions, %d by readers", events.lost, events.fanoutDrops)
	}
	// The window's edges are a few milliseconds apart on the two sides.
	if float64(events.w.summary.EventsTotal) < 0.99*float64(events.sent) {
		t.Errorf("viewers received %d events, the server sent %d", events.w.summary.EventsTotal, events.sent)
	}
	if events.p50 > plain.p50+plain.p50/2+10*time.Millisecond {
		t.Errorf("events raised the median latency from %s to %s", plain.p50, events.p50)
	}
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
