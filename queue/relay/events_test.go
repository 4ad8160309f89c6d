package relay

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// sendEvent sends body to events.<stream> as a request and returns the reply.
func sendEvent(t *testing.T, nc *nats.Conn, stream, body string) EventReply {
	t.Helper()
	m, err := nc.Request(EventsSubject(stream), []byte(body), 2*time.Second)
	if err != nil {
		t.Fatalf("event %s: %v", body, err)
	}
	var r EventReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("reply %q: %v", m.Data, err)
	}
	return r
}

// eventLog reads an event reader until it closes, noting arrival times.
type eventLog struct {
	mu  sync.Mutex
	evs []pipeline.Event
	at  []time.Time
}

func (l *eventLog) read(r *pipeline.EventReader, wg *sync.WaitGroup) {
	wg.Go(func() {
		for e := range r.C {
			l.mu.Lock()
			l.evs, l.at = append(l.evs, *e), append(l.at, time.Now())
			l.mu.Unlock()
		}
	})
}

func (l *eventLog) find(id string) (pipeline.Event, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.evs {
		if e.ID == id {
			return e, l.at[i], true
		}
	}
	return pipeline.Event{}, time.Time{}, false
}

// TestEventsFollowTheMedia: events sent on NATS while a real transcoder
// publishes are bound to a frame the followers then receive (the event
// first), republished on events.<stream>.timed, kept in JetStream, handed
// to a late follower as active, and continued across a publisher change.
// Bad events are refused with a reason.
func TestEventsFollowTheMedia(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(context.Background(), EventStreamConfig(1, time.Minute)); err != nil {
		t.Fatal(err)
	}
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
		go func() { defer close(done); _ = Publish(ctx, nc, "s", job) }() // stopped by cancel
		return func() { cancel(); <-done; job.Close() }
	}
	timed := make(chan *nats.Msg, 64)
	tsub, err := nc.ChanSubscribe(TimedSubject("s"), timed)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tsub.Unsubscribe() }()

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
	frames := collect(rctx, f.Subscribe(pipeline.WithTracks(0)), &readers)
	var evs eventLog
	er := f.SubscribeEvents()
	defer er.Close()
	evs.read(er, &readers)
	testutil.Eventually(t, 20*time.Second, "10 frames", func() bool { return len(frames()) >= 10 })

	// bound checks that id reached the follower ahead of the frame it is
	// bound to, and that the frame is one the follower received.
	bound := func(id string) pipeline.Event {
		t.Helper()
		var ev pipeline.Event
		var at time.Time
		testutil.Eventually(t, 5*time.Second, "event "+id+" on the follower", func() bool {
			var ok bool
			ev, at, ok = evs.find(id)
			return ok
		})
		var frame received
		defer func() {
			if t.Failed() {
				all := frames()
				for _, r := range all {
					if r.p.PTS > ev.PTS-30000 && r.p.PTS < ev.PTS+30000 {
						t.Logf("frame PTS %d disc %v at %s", r.p.PTS, r.p.Discontinuity, r.at.Format("15:04:05.000"))
					}
				}
				t.Logf("event %+v", ev)
			}
		}()
		testutil.Eventually(t, 5*time.Second, "the frame of event "+id, func() bool {
			for _, r := range frames() {
				if r.p.PTS == ev.PTS {
					frame = r
					return true
				}
			}
			return false
		})
		if at.After(frame.at) {
			t.Errorf("event %s reached the follower %s after its frame (PTS %d)", id, at.Sub(frame.at), ev.PTS)
		}
		t.Logf("event %s: bound to frame PTS %d (%.3f s), reached the follower %s before it", id, ev.PTS, ev.MediaTime, frame.at.Sub(at))
		return ev
	}

	r := sendEvent(t, nc, "s", `{"id":"bid-1","class":"bid","data":{"amount":100}}`)
	if r.Error != "" || r.Event == nil {
		t.Fatalf("bid-1 refused: %+v", r)
	}
	ev := bound("bid-1")
	if string(ev.Data) != `{"amount":100}` || ev.Class != "bid" || ev.PDT.IsZero() {
		t.Errorf("bid-1 arrived as %+v", ev)
	}
	select {
	case m := <-timed:
		var te pipeline.Event
		if err := json.Unmarshal(m.Data, &te); err != nil || te.ID != "bid-1" || te.PTS != r.Event.PTS {
			t.Errorf("events.s.timed carried %s, want bid-1 at PTS %d", m.Data, r.Event.PTS)
		}
	case <-time.After(2 * time.Second):
		t.Error("nothing on events.s.timed")
	}

	// Refusals, each with a reason; the stream goes on.
	for body, want := range map[string]string{
		`{"id":"bad id"`:          "not a JSON event object",
		`{"id":"has space"}`:      "id",
		`{"duration":-1}`:         "duration",
		`{"scte35":{"out":"zz"}}`: "scte35.out",
		`{"data":"` + strings.Repeat("x", pipeline.MaxEventBytes) + `"}`: "bytes, at most",
	} {
		if r := sendEvent(t, nc, "s", body); !strings.Contains(r.Error, want) {
			t.Errorf("event %.40s: reply %+v, want an error with %q", body, r, want)
		}
	}
	// A body with a content type of its own is the event's data.
	m, err := nc.RequestMsg(&nats.Msg{Subject: EventsSubject("s"), Data: []byte("odds 3/1"), Header: nats.Header{"Content-Type": []string{"text/plain"}}}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var tr EventReply
	if err := json.Unmarshal(m.Data, &tr); err != nil || tr.Event == nil || string(tr.Event.Binary) != "odds 3/1" || tr.Event.ContentType != "text/plain" {
		t.Errorf("text event: reply %s", m.Data)
	}

	// A publisher change: the new one loads the events in effect from
	// JetStream, new events continue on the follower's timeline.
	stop1()
	stop2 := publish()
	defer stop2()
	// (Frames it published before this node joined it never reach here:
	// bind the event to one that does.)
	testutil.Eventually(t, 20*time.Second, "10 frames of the second publisher", func() bool {
		all := frames()
		for i, r := range all {
			if r.p.Discontinuity {
				return len(all)-i >= 10
			}
		}
		return false
	})
	var r2 EventReply
	testutil.Eventually(t, 10*time.Second, "an event taken by the second publisher", func() bool {
		r2 = sendEvent(t, nc, "s", `{"id":"bid-2","class":"bid","data":{"amount":120}}`)
		return r2.Error == ""
	})
	ev2 := bound("bid-2")
	if ev2.PTS <= ev.PTS {
		t.Errorf("bid-2 after the change at PTS %d, not after bid-1's %d", ev2.PTS, ev.PTS)
	}

	// A late follower gets what is in effect: bid-2 replaced bid-1 (same
	// class, no duration).
	g, err := Follow(context.Background(), testutil.DialNATS(t, e, "late"), "s", WithPublisherWait(10*time.Second), WithLogger(testutil.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	act := g.ActiveEvents()
	ids := []string{}
	for _, a := range act {
		ids = append(ids, a.ID)
		if a.ID == "bid-2" && a.PTS != ev2.PTS {
			t.Errorf("late follower has bid-2 at PTS %d, the first follower at %d", a.PTS, ev2.PTS)
		}
	}
	if !strings.Contains(strings.Join(ids, ","), "bid-2") || strings.Contains(strings.Join(ids, ","), "bid-1") {
		t.Errorf("late follower's active events %v, want bid-2 and not bid-1", ids)
	}
	t.Logf("late follower: active events %v", ids)
}
