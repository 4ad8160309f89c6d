package webrtc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
)

// eventJob is a real transcoder that also carries timed events, as a
// followed stream (queue/relay.Stream) does.
type eventJob struct {
	*transcode.Transcoder
	fan pipeline.EventFanout
}

func (j *eventJob) SubscribeEvents() *pipeline.EventReader { return j.fan.Subscribe() }
func (j *eventJob) ActiveEvents() []pipeline.Event         { return j.fan.ActiveEvents() }

// frameTap reads one rung of a job, as the stamper sees the stream: the
// newest frame's PTS, and every frame's Ingest by PTS.
type frameTap struct {
	mu     sync.Mutex
	latest int64
	have   bool
	ingest map[int64]time.Time
}

func tapFrames(t *testing.T, job pipeline.Source) *frameTap {
	t.Helper()
	id := -1
	for _, tr := range job.Tracks() {
		if tr.Kind == pipeline.KindVideo && tr.Codec == pipeline.CodecH264 {
			id = tr.ID
			break
		}
	}
	if id < 0 {
		t.Fatal("no H.264 track")
	}
	tap := &frameTap{ingest: map[int64]time.Time{}}
	r := job.Subscribe(pipeline.WithTracks(id), pipeline.WithName("test:tap"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := r.Read(ctx)
			if err != nil {
				return
			}
			tap.mu.Lock()
			tap.latest, tap.have = p.PTS, true
			tap.ingest[p.PTS] = p.Ingest
			tap.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); r.Close(); <-done })
	testutil.Eventually(t, 5*time.Second, "the tap's first frame", func() bool {
		tap.mu.Lock()
		defer tap.mu.Unlock()
		return tap.have
	})
	return tap
}

// event stamps an event on the newest frame plus ahead ticks, as the
// publisher's stamper does (ahead = one frame: the next frame).
func (tap *frameTap) event(id string, ahead int64, duration float64) *pipeline.Event {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return tap.eventLocked(id, ahead, duration)
}

// eventOnNewFrame waits for the tap's next frame and stamps the event as
// soon as it is read: bound to that frame (ahead 0), the event races the
// frame's own packets to the viewer, the hardest case.
func (tap *frameTap) eventOnNewFrame(id string, ahead int64, duration float64) *pipeline.Event {
	tap.mu.Lock()
	was := tap.latest
	tap.mu.Unlock()
	for {
		tap.mu.Lock()
		if tap.latest != was {
			defer tap.mu.Unlock()
			return tap.eventLocked(id, ahead, duration)
		}
		tap.mu.Unlock()
		time.Sleep(200 * time.Microsecond)
	}
}

func (tap *frameTap) eventLocked(id string, ahead int64, duration float64) *pipeline.Event {
	pts := tap.latest + ahead
	pdt := tap.ingest[tap.latest].Add(time.Duration(ahead) * time.Second / pipeline.EventClock)
	return &pipeline.Event{Stream: "test", ID: id, Class: "bid", Data: json.RawMessage(fmt.Sprintf(`{"id":%q}`, id)),
		Duration: duration, PTS: pts, MediaTime: float64(pts) / pipeline.EventClock, PDT: pdt, Received: time.Now(),
		Origin: "api"}
}

func (tap *frameTap) ingestOf(pts int64) (time.Time, bool) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	in, ok := tap.ingest[pts]
	return in, ok
}

// messagesOf returns the viewer's data channel messages of one type, with
// their arrival times.
func messagesOf(v *viewer, typ string) ([]map[string]any, []time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var ms []map[string]any
	var at []time.Time
	for i, m := range v.messages {
		if m["type"] == typ {
			ms, at = append(ms, m), append(at, v.messageAt[i])
		}
	}
	return ms, at
}

func rtpOf(m map[string]any) uint32 {
	f, _ := m["rtp"].(float64)
	return uint32(f)
}

// frameTicks is one frame at 30 fps in RTP (90 kHz) ticks.
const frameTicks = pipeline.EventClock / 30

// withFrame is how late after its frame's first packet an event still
// arrives with the frame: the frame's own packets and the SCTP write loop
// take that long, and a receiver decodes and presents a frame later still
// (TestBrowserEvents measures the frame Chromium shows it on).
const withFrame = 10 * time.Millisecond

// TestEvents plays a real transcoder wrapped with an EventFanout to pion
// viewers with a data channel:
//
//   - sync: events stamped on the next frame (as the publisher's stamper
//     does) reach the viewer with that frame (at most withFrame after its
//     first RTP packet), those on the newest frame at most one frame after
//     it, and their rtp is
//     the RTP timestamp of a frame the viewer received (±1 frame);
//   - late join: a viewer that connects while an event is in effect gets
//     it flagged active right after the rungs;
//   - actions: an action with the rtp of a received frame reaches OnAction
//     with that frame's PTS and Ingest (as PDT); an oversized one and a
//     flood are refused with reasons, and counted.
func TestEvents(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := &eventJob{Transcoder: startJob(t, smallSource, smallLadder)}
	srv, hs := startServer(t, job, testConfig(), nil)
	actions := make(chan pipeline.Action, 100)
	srv.OnAction = func(a pipeline.Action) error { actions <- a; return nil }
	t.Cleanup(job.fan.Close)
	st, err := srv.stream("test")
	if err != nil {
		t.Fatal(err)
	}
	base := st.pk.videoBase
	tap := tapFrames(t, job)

	v := newViewer(t, viewerOptions{dataChannel: true, firstPackets: true})
	defer v.close(true)
	v.mustConnect(t, hs.URL, "test")
	select {
	case <-v.dcOpen:
	case <-time.After(10 * time.Second):
		t.Fatal("the data channel did not open")
	}
	testutil.Eventually(t, 10*time.Second, "30 frames", func() bool { return len(v.snapshot()) >= 30 })

	t.Run("sync", func(t *testing.T) {
		var sent []*pipeline.Event
		var published []time.Time
		for i := range 12 {
			// Half on the newest frame as soon as it is read (the frame is on
			// its way to the viewer already: the hard case), half on the
			// next frame (what the stamper does).
			e := tap.eventOnNewFrame(fmt.Sprintf("sync-%d", i), int64(i%2)*frameTicks, 2)
			published = append(published, time.Now())
			job.fan.Publish(e)
			sent = append(sent, e)
			time.Sleep(time.Duration(70+37*i%90) * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // the last events' frames arrive
		got, at := messagesOf(v, "event")
		byID := map[string]int{}
		for i, m := range got {
			byID[m["id"].(string)] = i
		}
		frames := v.snapshot()
		v.mu.Lock()
		first := make(map[uint32]time.Time, len(v.firstSeen))
		for ts, when := range v.firstSeen {
			first[ts] = when
		}
		v.mu.Unlock()
		var leads, transit []string
		for k, e := range sent {
			i, ok := byID[e.ID]
			if !ok {
				t.Errorf("event %s never arrived", e.ID)
				continue
			}
			m := got[i]
			want := base + uint32(e.PTS)
			if rtpOf(m) != want || m["pts"] != float64(e.PTS) || m["class"] != "bid" || m["active"] != nil {
				t.Errorf("event %s: message %v, want rtp %d pts %d", e.ID, m, want, e.PTS)
			}
			// The frame it is bound to, as received (±1 frame).
			near := int64(1) << 40
			for _, f := range frames {
				near = min(near, abs64(int64(int32(f.ts-want))))
			}
			if near > frameTicks {
				t.Errorf("event %s: rtp %d is %d ticks from any frame received", e.ID, want, near)
			}
			arrived, ok := first[want]
			if !ok {
				t.Errorf("event %s: no packet with its rtp %d arrived", e.ID, want)
				continue
			}
			lead := arrived.Sub(at[i]) // > 0: the event came first
			leads = append(leads, fmt.Sprintf("%.1f", lead.Seconds()*1000))
			transit = append(transit, fmt.Sprintf("%.1f", at[i].Sub(published[k]).Seconds()*1000))
			switch {
			case lead < -time.Second/30:
				t.Errorf("event %s arrived %s after its frame's first packet: more than one frame late", e.ID, -lead)
			case k%2 == 1 && lead < -withFrame:
				// Stamped on the next frame, as the stamper does: it goes
				// out right behind that frame's packets (the session holds
				// a frame's events to send them as one message).
				t.Errorf("event %s on the next frame arrived %s after that frame's first packet, more than %s", e.ID, -lead, withFrame)
			}
		}
		testutil.Report(t, "events sync: %d events (on the newest frame, on the next, alternately), lead of the event over its "+
			"frame's first RTP packet (ms, + = event first): %s; publish to arrival (ms): %s",
			len(sent), strings.Join(leads, " "), strings.Join(transit, " "))
		if s := srv.Stats().Streams[0].Events; s.Sent < uint64(len(sent)) || s.Dropped != 0 {
			t.Errorf("stream event stats %+v: want %d sent, none dropped", s, len(sent))
		}
	})

	t.Run("late join", func(t *testing.T) {
		banner := tap.event("banner", frameTicks, 60)
		job.fan.Publish(banner)
		v2 := newViewer(t, viewerOptions{dataChannel: true})
		defer v2.close(true)
		v2.mustConnect(t, hs.URL, "test")
		testutil.Eventually(t, 10*time.Second, "the active banner on open", func() bool {
			evs, _ := messagesOf(v2, "event")
			for _, m := range evs {
				if m["id"] == "banner" {
					return true
				}
			}
			return false
		})
		v2.mu.Lock()
		defer v2.mu.Unlock()
		if len(v2.messages) == 0 || v2.messages[0]["type"] != "rungs" {
			t.Fatalf("first message %v, want the rungs", v2.messages)
		}
		for _, m := range v2.messages[1:] {
			if m["type"] == "event" && m["id"] == "banner" {
				if m["active"] != true || rtpOf(m) != base+uint32(banner.PTS) || m["duration"] != 60.0 {
					t.Errorf("banner on open: %v, want active with rtp %d", m, base+uint32(banner.PTS))
				}
			}
		}
	})

	t.Run("actions", func(t *testing.T) {
		send := func(s string) {
			t.Helper()
			if err := v.dc.SendText(s); err != nil {
				t.Fatal(err)
			}
		}
		frames := v.snapshot()
		f := frames[len(frames)-3]
		send(fmt.Sprintf(`{"type":"action","data":{"bid":5},"rtp":%d}`, f.ts))
		var a pipeline.Action
		select {
		case a = <-actions:
		case <-time.After(5 * time.Second):
			t.Fatal("no action reached OnAction")
		}
		ingest, ok := tap.ingestOf(a.PTS)
		switch {
		case base+uint32(a.PTS) != f.ts:
			t.Errorf("action PTS %d: rtp %d, want the frame's %d", a.PTS, base+uint32(a.PTS), f.ts)
		case !ok || a.PDT.IsZero() || !a.PDT.Equal(ingest):
			t.Errorf("action PDT %v, want the frame's Ingest %v (known %v)", a.PDT, ingest, ok)
		case a.Stream != "test" || a.Output != "webrtc" || string(a.Data) != `{"bid":5}` || a.Received.IsZero() ||
			a.MediaTime != float64(a.PTS)/pipeline.EventClock:
			t.Errorf("action %+v", a)
		}
		if id := v.location[strings.LastIndex(v.location, "/")+1:]; a.Viewer != viewerID(id) || a.Viewer == id {
			t.Errorf("action viewer %q: want the session's public name, not its ID", a.Viewer)
		}
		testutil.Report(t, "action: rtp %d -> pts %d, pdt %s (frame ingest %s)", f.ts, a.PTS,
			a.PDT.Format(time.RFC3339Nano), ingest.Format(time.RFC3339Nano))

		errorsBefore, _ := messagesOf(v, "error")
		send(fmt.Sprintf(`{"type":"action","data":{"pad":%q},"rtp":%d}`, strings.Repeat("x", pipeline.MaxActionBytes), f.ts))
		const flood = 40
		for range flood {
			send(fmt.Sprintf(`{"type":"action","data":{"bid":1},"rtp":%d}`, f.ts))
		}
		testutil.Eventually(t, 5*time.Second, "an answer to every action", func() bool {
			acks, _ := messagesOf(v, "ack")
			errs, _ := messagesOf(v, "error")
			return len(acks)+len(errs)-len(errorsBefore) >= flood+2
		})
		errs, _ := messagesOf(v, "error")
		errs = errs[len(errorsBefore):]
		var large, rate int
		for _, m := range errs {
			msg, _ := m["error"].(string)
			switch {
			case strings.Contains(msg, fmt.Sprintf("at most %d", pipeline.MaxActionBytes)):
				large++
			case strings.Contains(msg, "per second"):
				rate++
			default:
				t.Errorf("unexpected refusal %q", msg)
			}
		}
		accepted := flood - rate
		testutil.Report(t, "actions: oversized refused %d; flood of %d: %d accepted, %d refused for rate", large, flood, accepted, rate)
		if large != 1 || accepted > actionBurst+2 || rate < flood-actionBurst-2 {
			t.Errorf("oversized refused %d (want 1), flood accepted %d refused %d: want about %d accepted", large, accepted, rate, actionBurst-1)
		}
		acts := srv.Stats().Streams[0].Actions
		if acts.Refused[refusedTooLarge] != 1 || acts.Refused[refusedRate] != uint64(rate) || acts.Accepted != uint64(1+accepted) {
			t.Errorf("action stats %+v", acts)
		}
	})
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestFrameRingResolve: an action's rtp maps back to the PTS of the frame
// across the 32-bit wrap of RTP timestamps, relative to the last frame
// sent, and gets that frame's Ingest (interpolated between frames).
func TestFrameRingResolve(t *testing.T) {
	const base = uint32(0xFFFF_F000)
	var r frameRing
	if _, _, err := r.resolve(base, base); err == nil {
		t.Fatal("resolved before any frame")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// PTS around 2^32 ticks (13 h 15 min): the RTP timestamps wrap twice
	// (base + pts and pts itself).
	start := int64(1)<<32 - 5*frameTicks
	for i := range int64(300) {
		r.add(start+i*frameTicks, t0.Add(time.Duration(i)*time.Second/30))
	}
	for _, i := range []int64{299, 250, 120, 60} {
		pts := start + i*frameTicks
		got, pdt, err := r.resolve(base+uint32(pts), base)
		if err != nil || got != pts || !pdt.Equal(t0.Add(time.Duration(i)*time.Second/30)) {
			t.Errorf("frame %d: pts %d pdt %v err %v, want pts %d", i, got, pdt, err, pts)
		}
	}
	mid := start + 250*frameTicks + frameTicks/2
	if got, pdt, err := r.resolve(base+uint32(mid), base); err != nil || got != mid ||
		pdt.Sub(t0.Add(250*time.Second/30+time.Second/60)).Abs() > time.Microsecond {
		t.Errorf("between frames: pts %d pdt %v err %v", got, pdt, err)
	}
	// Frames 0..43 fell out of the ring: frame 0 is 44 frames (over 1 s)
	// from the oldest kept, and refused, as is one far in the future.
	if _, _, err := r.resolve(base+uint32(start), base); err == nil {
		t.Error("resolved a frame 10 s old, beyond the ring and the window")
	}
	if _, _, err := r.resolve(base+uint32(start+10_000_000), base); err == nil {
		t.Error("resolved a frame far in the future")
	}
}

// TestBrowserEvents plays the stream in headless Chromium with the player
// page: events stamped on the next frame (as the publisher's stamper
// does) must show, by the page's requestVideoFrameCallback rtpTimestamp,
// on their frame, at most one frame off (window.prismEvents, reported).
func TestBrowserEvents(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := &eventJob{Transcoder: startJob(t, smallSource, smallLadder)}
	reports := make(chan []byte, 1)
	srv, hs := startServer(t, job, testConfig(), nil, func(mux *http.ServeMux) {
		mux.HandleFunc("/report", pageReports(reports))
	})
	t.Cleanup(job.fan.Close)
	tap := tapFrames(t, job)
	b := testutil.StartBrowser(t, hs.URL+"/whep-player?stream=test&report=/report&seconds=8")
	testutil.Eventually(t, 30*time.Second, "Chromium to receive 30 frames", func() bool {
		vs := srv.Stats().Viewers
		return len(vs) == 1 && vs[0].Frames >= 30 && vs[0].Connected
	})
	time.Sleep(500 * time.Millisecond) // the data channel opens after DTLS
	const n = 10
	for i := range n {
		job.fan.Publish(tap.event(fmt.Sprintf("page-%d", i), frameTicks, 1))
		time.Sleep(250 * time.Millisecond)
	}
	var raw []byte
	select {
	case raw = <-reports:
	case <-time.After(40 * time.Second):
		t.Fatalf("no report from the page within 40 s; Chromium said:\n%s", tail(b.Output(), 3000))
	}
	var rep struct {
		Events []struct {
			ID       string  `json:"id"`
			RTP      uint32  `json:"rtp"`
			ShownRTP *uint32 `json:"shownRtp"`
			Arrival  *uint32 `json:"arrivalRtp"` // the frame on screen when it arrived
			Output   string  `json:"output"`
		} `json:"events"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("report %s: %v", raw, err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("page errors %v", rep.Errors)
	}
	var errs, early []int
	for _, e := range rep.Events {
		if !strings.HasPrefix(e.ID, "page-") {
			continue
		}
		if e.ShownRTP == nil || e.Output != "webrtc" {
			t.Errorf("event %s (rtp %d) never shown: %+v", e.ID, e.RTP, e)
			continue
		}
		d := int(int32(*e.ShownRTP-e.RTP)) / frameTicks
		errs = append(errs, d)
		if e.Arrival != nil {
			early = append(early, int(int32(e.RTP-*e.Arrival))/frameTicks)
		}
		if d < -1 || d > 1 {
			t.Errorf("event %s shown %d frames from its frame (rtp %d, shown at %d)", e.ID, d, e.RTP, *e.ShownRTP)
		}
	}
	testutil.Report(t, "Chromium: %d of %d events shown; error in frames (shown frame minus bound frame): %v; "+
		"frames ahead of the screen on arrival (bound frame minus frame on screen): %v", len(errs), n, errs, early)
	if len(errs) != n {
		t.Errorf("%d events shown, want %d: %s", len(errs), n, raw)
	}
}
