package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
)

// Timed events on NATS (pipeline/event.go says what an event is):
//
//	events.<stream>        in: a pipeline.EventRequest (JSON), or any bytes
//	                       with a Content-Type header; a request is answered
//	                       with an EventReply
//	events.<stream>.timed  out: every stamped pipeline.Event, on the
//	                       publisher's timeline, for the data pipeline; the
//	                       JetStream stream EventStream keeps them
//	media.<stream>.event   the same event for the nodes following the stream,
//	                       which shift it with the media (follow.go)
//	media.<stream>.events  request → the publisher's active events
//	actions.<stream>       out: viewers' pipeline.Action messages
//
// Events are stamped once, by the stream's publisher (the worker that
// transcodes it), so every node and output agrees on their media time.
const (
	subjEvent  = "event"
	subjEvents = "events"

	// EventStream is the JetStream stream that keeps stamped events, so a
	// publisher that takes a job over (and through it every viewer that
	// joins late) still has the events in effect.
	EventStream = bus.EventStream
	// EventStreamSubjects are the subjects it keeps.
	EventStreamSubjects = "events.*.timed"
	// DefaultEventWindow is how long EventStream keeps an event.
	DefaultEventWindow = 10 * time.Minute

	// eventRate and eventBurst limit one stream's events: a flood is
	// refused (with a reason) instead of delaying the stream's media on
	// the publisher's NATS connection.
	eventRate  = 2000
	eventBurst = 2000
)

// OriginHeader names, on an events.<stream> message, where Prism got the
// event: "api" (POST …/events) or the ingest protocol of an event inside
// the publisher's stream ("rtmp"). It is the stamped event's Origin; other
// values are ignored (origin "nats").
const OriginHeader = "Prism-Origin"

// knownOrigins are the origins OriginHeader may give.
var knownOrigins = map[string]bool{"api": true, "rtmp": true, "srt": true, "whip": true}

// EventMsg is body as an events.<stream> message from origin (OriginHeader).
func EventMsg(stream, origin string, body []byte) *nats.Msg {
	m := nats.NewMsg(EventsSubject(stream))
	m.Data = body
	m.Header.Set(OriginHeader, origin)
	return m
}

// EventsSubject is where events for stream come in.
func EventsSubject(stream string) string { return "events." + stream }

// TimedSubject is where stream's stamped events go out.
func TimedSubject(stream string) string { return "events." + stream + ".timed" }

// ActionsSubject is where stream's viewer actions go out.
func ActionsSubject(stream string) string { return "actions." + stream }

// EventReply answers an event sent as a request: the stamped event, or why
// it was refused.
type EventReply struct {
	Event *pipeline.Event `json:"event,omitempty"`
	Error string          `json:"error,omitempty"`
	// Status classifies a refusal as HTTP does: 400 bad event, 409 no
	// frame to bind it to yet, 429 over the stream's rate.
	Status int `json:"status,omitempty"`
}

// ErrNoVideoYet refuses an event that arrives before the stream's first
// frame: there is no frame to bind it to.
var ErrNoVideoYet = errors.New("the stream has no video frame yet")

// ErrEventRate refuses events beyond a stream's rate.
var ErrEventRate = errors.New("too many events for this stream")

// EventStreamConfig is EventStream's configuration (OpenStore creates it).
func EventStreamConfig(replicas int, window time.Duration) jetstream.StreamConfig {
	if window <= 0 {
		window = DefaultEventWindow
	}
	return jetstream.StreamConfig{
		Name:              EventStream,
		Description:       "Prism timed events, stamped with the media time of their frame",
		Subjects:          []string{EventStreamSubjects},
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		MaxAge:            window,
		MaxMsgsPerSubject: 10000,
		MaxBytes:          256 << 20,
		MaxMsgSize:        64 << 10,
		Discard:           jetstream.DiscardOld,
	}
}

// stamper binds a publisher's incoming events to its frames and sends
// them on.
type stamper struct {
	nc       *nats.Conn
	stream   string
	instance string
	mediaSub string // media.<stream>.event

	mu       sync.Mutex
	pts, dur int64 // newest video frame published, its duration (90 kHz)
	ingest   time.Time
	haveLast bool
	seq      uint64
	rate     pipeline.TokenBucket
	counts   pipeline.EventStats
	active   pipeline.EventFanout // no readers: the active list only
}

// stats returns the stamping counters.
func (s *stamper) stats() *pipeline.EventStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counts
	return &c
}

func newStamper(nc *nats.Conn, stream, instance string) *stamper {
	return &stamper{nc: nc, stream: stream, instance: instance, mediaSub: mediaPrefix(stream) + subjEvent,
		rate: pipeline.NewTokenBucket(eventRate, eventBurst)}
}

// publishFrame publishes a video packet and records it as the newest
// frame (all rungs share PTS). Stamping holds the same lock while it binds
// an event to the next frame and sends it, so the event always goes out
// ahead of that frame's packets.
func (s *stamper) publishFrame(p *pipeline.Packet, clockRate int, publish func(*pipeline.Packet) error) error {
	pts, dur := p.PTS, p.Duration
	if clockRate != pipeline.EventClock && clockRate > 0 {
		pts = pts * pipeline.EventClock / int64(clockRate)
		dur = dur * pipeline.EventClock / int64(clockRate)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := publish(p)
	if s.haveLast && pts <= s.pts {
		return err // another rung's copy of a frame already seen
	}
	s.pts, s.dur, s.haveLast = pts, dur, true
	s.ingest = p.Ingest
	if s.ingest.IsZero() {
		s.ingest = time.Now()
	}
	return err
}

// handle is the events.<stream> subscription's callback (nats.go's
// goroutine).
func (s *stamper) handle(m *nats.Msg) {
	s.mu.Lock()
	origin := "nats"
	if o := m.Header.Get(OriginHeader); knownOrigins[o] {
		origin = o
	}
	e, err := s.stamp(m.Data, m.Header.Get("Content-Type"), origin, time.Now())
	if err == nil {
		err = s.send(e)
	}
	switch {
	case err == nil:
		s.counts.Stamped++
	case errors.Is(err, ErrEventRate):
		s.counts.Limited++
	default:
		s.counts.Refused++
	}
	s.mu.Unlock()
	if m.Reply == "" {
		return
	}
	var r EventReply
	if err != nil {
		r.Error, r.Status = err.Error(), 400
		switch {
		case errors.Is(err, ErrNoVideoYet):
			r.Status = 409
		case errors.Is(err, ErrEventRate):
			r.Status = 429
		}
	} else {
		r.Event = e
	}
	if b, merr := json.Marshal(r); merr == nil {
		_ = m.Respond(b)
	}
}

// stamp binds an event to a frame (under mu).
func (s *stamper) stamp(body []byte, contentType, origin string, now time.Time) (*pipeline.Event, error) {
	req, binary, err := pipeline.ParseEventRequest(body, contentType)
	if err != nil {
		return nil, err
	}
	if !s.rate.Take(now) {
		return nil, fmt.Errorf("%w: %s: more than %d a second", ErrEventRate, s.stream, eventRate)
	}
	if !s.haveLast {
		return nil, fmt.Errorf("%w: %s", ErrNoVideoYet, s.stream)
	}
	s.seq++
	e := &pipeline.Event{Stream: s.stream, ID: req.ID, Class: req.Class, Data: req.Data, Duration: req.Duration,
		SCTE35: req.SCTE35, Received: now.UTC(), Origin: origin, Seq: s.seq, Instance: s.instance}
	if binary != nil {
		e.Binary, e.ContentType = binary, contentType
	}
	if e.ID == "" {
		e.ID = s.instance + "-" + strconv.FormatUint(s.seq, 10)
	}
	next := max(s.dur, 1)
	switch {
	case req.At != nil:
		// A wall-clock time: the frame with that program date time.
		e.PDT = req.At.UTC()
		e.PTS = s.pts + int64(math.Round(e.PDT.Sub(s.ingest).Seconds()*pipeline.EventClock))
	case req.MediaTime != nil:
		e.PTS = int64(math.Round(*req.MediaTime * pipeline.EventClock))
		e.PDT = s.pdtOf(e.PTS)
	default:
		// The frame live at ingest now: the next one to be published, so
		// the event goes out ahead of the frame it is bound to.
		e.PTS = s.pts + next
		e.PDT = s.pdtOf(e.PTS)
	}
	e.MediaTime = float64(e.PTS) / pipeline.EventClock
	return e, nil
}

// pdtOf is the program date time of pts, by the newest frame's (under mu).
func (s *stamper) pdtOf(pts int64) time.Time {
	return s.ingest.Add(time.Duration((pts - s.pts) * int64(time.Second) / pipeline.EventClock)).UTC()
}

// send publishes e to the followers and the data pipeline (under mu).
func (s *stamper) send(e *pipeline.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: %w", pipeline.ErrEvent, err)
	}
	if len(b) > int(s.nc.MaxPayload()) {
		return fmt.Errorf("%w: %d bytes stamped, more than the server's %d", pipeline.ErrEvent, len(b), s.nc.MaxPayload())
	}
	s.active.Publish(e)
	if err := s.nc.Publish(s.mediaSub, b); err != nil {
		return err
	}
	return s.nc.Publish(TimedSubject(s.stream), b)
}

// answerActive is the media.<stream>.events responder: the events in
// effect, each on this publisher's timeline (an event a previous publisher
// stamped is placed by its program date time).
func (s *stamper) answerActive(m *nats.Msg) {
	evs := s.active.ActiveEvents()
	s.mu.Lock()
	for i := range evs {
		if evs[i].Instance != s.instance && s.haveLast {
			evs[i].PTS = s.pts + int64(math.Round(evs[i].PDT.Sub(s.ingest).Seconds()*pipeline.EventClock))
			evs[i].MediaTime = float64(evs[i].PTS) / pipeline.EventClock
			evs[i].Instance = s.instance
		}
	}
	s.mu.Unlock()
	if b, err := json.Marshal(evs); err == nil {
		_ = m.Respond(b)
	}
}

// replay loads the events EventStream kept for the stream within its
// window (a publisher taking a job over), as active ones. Without
// JetStream, or without the stream, there is nothing to load.
func (s *stamper) replay(ctx context.Context) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// All it keeps: the stream's MaxAge is the window. (No stream info
	// first: a worker's NATS user may only read its own stream's events.)
	c, err := js.OrderedConsumer(ctx, EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{TimedSubject(s.stream)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return
	}
	var evs []pipeline.Event
	for ctx.Err() == nil {
		// Bounded wait: a pull to a stream without a leader (a NATS
		// server just lost) must not outlive the replay's deadline.
		batch, err := c.Fetch(256, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			break
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var e pipeline.Event
			if json.Unmarshal(m.Data(), &e) == nil {
				evs = append(evs, e)
			}
		}
		if n < 256 || batch.Error() != nil {
			break
		}
	}
	s.active.Seed(evs)
}

// start subscribes the publisher's event subjects; stop undoes it. The
// callbacks run on nats.go's goroutines, which end with the unsubscribes.
func (s *stamper) start(ctx context.Context) (stop func(), err error) {
	in, err := s.nc.Subscribe(EventsSubject(s.stream), s.handle)
	if err != nil {
		return nil, err
	}
	active, err := s.nc.Subscribe(mediaPrefix(s.stream)+subjEvents, s.answerActive)
	if err != nil {
		_ = in.Unsubscribe()
		return nil, err
	}
	// Loading what a previous publisher stamped must not hold up the
	// media: creating a consumer waits for the JetStream meta leader,
	// seconds after a NATS server was lost (a node and the meta leader
	// killed together resumed in 7.2 s instead of 2.2 s). Seed keeps
	// newer events over the older ones it loads.
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.replay(rctx) }) // owned here: cancelled and waited for by stop
	return func() {
		cancel()
		wg.Wait()
		_ = in.Unsubscribe()
		_ = active.Unsubscribe()
	}, nil
}

// askActive asks stream's publisher for its active events.
func askActive(ctx context.Context, nc *nats.Conn, stream string) []pipeline.Event {
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, mediaPrefix(stream)+subjEvents, nil)
	if err != nil {
		return nil
	}
	var evs []pipeline.Event
	if json.Unmarshal(m.Data, &evs) != nil {
		return nil
	}
	return evs
}

// shiftEvent puts e (stamped by the publisher followed now) on the
// stream's timeline.
func shiftEvent(e *pipeline.Event, offset float64) {
	e.PTS += int64(math.Round(offset * pipeline.EventClock))
	e.MediaTime = float64(e.PTS) / pipeline.EventClock
}

// PublishAction sends a viewer's action to NATS actions.<stream>.
func PublishAction(nc *nats.Conn, a pipeline.Action) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return nc.Publish(ActionsSubject(a.Stream), b)
}
