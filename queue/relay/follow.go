package relay

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/pipeline"
)

// Stream is a stream as the outputs of a node see it: one pipeline.Source
// that outlives the publishers behind it. It is the one place media comes
// in from NATS, and its fan-out is the only one between NATS and the
// outputs. When a publisher goes away (its node died, the job moved or its
// input restarted) and another takes over, the stream subscribes again,
// shifts the new publisher's timestamps so that they continue after the old
// ones by the real outage, marks the first packets as a discontinuity and
// asks for a keyframe: players and WebRTC sessions keep going after a gap
// as long as the outage.
type Stream struct {
	nc     *nats.Conn
	stream string
	log    *slog.Logger
	opts   options

	fanout pipeline.Fanout
	events pipeline.EventFanout // timed events, shifted like the media
	tracks []pipeline.Track
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	current *subscription // the publisher followed now; nil between publishers
	stats   pipeline.SourceStats
	err     error
	changes int // publisher changes survived
	// timeline is the instance of the publisher the stream's timeline
	// began with: its timestamps, and every later publisher's shifted
	// after them. Usually the first publisher followed; for a node that
	// starts following after a publisher change, the one another node
	// following since before reports (timeline.go).
	timeline string
	// position is what this node answers to a timeline request: the
	// current publisher and the offset that puts it on the timeline,
	// once known (zero Instance until then).
	position timelinePosition
	answer   *nats.Subscription
	frames   pipeline.FrameLog // the first video track's newest frames, for PTSAt
}

var (
	_ pipeline.Source      = (*Stream)(nil)
	_ pipeline.EventSource = (*Stream)(nil)
	_ pipeline.FrameClock  = (*Stream)(nil)
)

// WithLogger sets where the stream logs publisher changes (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Follow subscribes to stream and keeps following it across publishers
// until ctx ends, Close, the stream's tracks change, or no publisher
// appears within the publisher wait (WithPublisherWait). It fails with
// ErrStreamNotFound when no publisher answers now.
func Follow(ctx context.Context, nc *nats.Conn, stream string, opts ...Option) (*Stream, error) {
	return follow(ctx, nc, stream, false, opts)
}

// FollowSource is Follow for a pushed stream's source (PublishSource): the
// worker running the stream's job reads the publisher's access units from
// it, across publisher reconnects within the publisher wait.
func FollowSource(ctx context.Context, nc *nats.Conn, stream string, opts ...Option) (*Stream, error) {
	return follow(ctx, nc, stream, true, opts)
}

func follow(ctx context.Context, nc *nats.Conn, stream string, source bool, opts []Option) (*Stream, error) {
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	o.source = source
	if o.log == nil {
		o.log = slog.Default()
	}
	first, err := subscribe(ctx, nc, stream, o)
	if err != nil {
		return nil, err
	}
	s := &Stream{nc: nc, stream: stream, log: o.log, opts: o, tracks: first.info.Tracks, current: first, timeline: first.info.Instance, done: make(chan struct{})}
	var start timelinePosition
	if !source {
		// Join the timeline the other nodes serve, if they follow this
		// publisher since before it took over; then answer for it too.
		if pos, ok := askTimeline(ctx, nc, stream, first.info.Instance); ok {
			start = pos
			s.timeline = pos.Timeline
			s.log.Info("stream joins the timeline other nodes serve", "stream", stream, "timeline", pos.Timeline, "publisher", pos.Instance, "offset_s", pos.Offset)
		}
		if s.answer, err = s.answerTimeline(); err != nil {
			_ = first.sub.Unsubscribe()
			return nil, fmt.Errorf("%s: answering timeline requests: %w", stream, err)
		}
		// The events in effect now, for viewers that join during one.
		evs := askActive(ctx, nc, stream)
		for i := range evs {
			shiftEvent(&evs[i], start.Offset)
		}
		s.events.Seed(evs)
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	go s.run(first, start.Offset) // owned by s: ends on Close, ctx or when the stream is gone
	return s, nil
}

func (s *Stream) run(sub *subscription, offset float64) {
	defer close(s.done)
	defer s.fanout.Close()
	defer s.events.Close()
	if s.answer != nil {
		defer func() { _ = s.answer.Unsubscribe() }()
	}
	defer func() { sub.close() }() // sub is the one followed last
	shift := timeShift{maxGap: s.opts.publisherWait + s.opts.staleAfter, offset: offset}
	announced := ""
	// Events of a new publisher wait until its offset is known (its first
	// keyframe), then go out shifted like its media.
	var held []pipeline.Event
	release := func() {
		for i := range held {
			shiftEvent(&held[i], shift.offset)
			s.events.Publish(&held[i])
		}
		held = nil
	}
	event := func(e pipeline.Event) {
		if len(held) < pipeline.EventReaderBuffer {
			held = append(held, e)
		}
		if !shift.pending {
			release()
		}
	}
	firstVideo := slices.IndexFunc(s.tracks, func(t pipeline.Track) bool { return t.Kind == pipeline.KindVideo })
	emit := func(p *pipeline.Packet, kind pipeline.Kind) {
		if p.Track < 0 || p.Track >= len(s.tracks) {
			return
		}
		if out := shift.apply(p, s.tracks[p.Track], time.Now()); out != nil {
			s.fanout.Publish(out, kind)
			if p.Track == firstVideo && !out.Ingest.IsZero() {
				pts := out.PTS
				if r := s.tracks[p.Track].ClockRate; r > 0 && r != pipeline.EventClock {
					pts = pts * pipeline.EventClock / int64(r)
				}
				s.mu.Lock()
				s.frames.Add(pts, out.Ingest)
				s.mu.Unlock()
			}
		}
		if len(held) > 0 && !shift.pending {
			release()
		}
		if !shift.pending && announced != sub.info.Instance {
			if announced != "" {
				s.log.Info("stream follows its new publisher", "stream", s.stream, "publisher", sub.info.Instance, "offset_s", shift.offset)
			}
			announced = sub.info.Instance
			s.mu.Lock()
			s.position = timelinePosition{Timeline: s.timeline, Instance: announced, Offset: shift.offset}
			s.mu.Unlock()
		}
	}
	stats := func(st pipeline.SourceStats) {
		s.mu.Lock()
		s.stats = st
		s.mu.Unlock()
	}
	for {
		err := sub.receive(s.ctx, emit, stats, event)
		s.mu.Lock()
		s.current = nil
		s.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		if s.opts.publisherWait <= 0 {
			s.end(err)
			return
		}
		s.log.Info("stream publisher went away, waiting for the next", "stream", s.stream, "reason", err)
		prev := sub.info.Instance
		next, err := s.await(sub)
		if err != nil {
			s.end(err)
			return
		}
		if next.info.Instance == prev {
			// The same publisher answered again (it had only paused, or its
			// responder outlived its media for a moment): no change, its
			// timestamps go on as they were.
			s.mu.Lock()
			s.current = next
			s.mu.Unlock()
			sub = next
			continue
		}
		if changed := !sameTracks(s.tracks, next.info.Tracks); changed && (!s.opts.source || !sameCodecs(s.tracks, next.info.Tracks)) {
			sub = next
			s.end(fmt.Errorf("%s: %w", s.stream, ErrTracksChanged))
			return
		}
		next.joinReason = pipeline.KeyframeFailover
		s.mu.Lock()
		s.current, s.changes = next, s.changes+1
		s.position = timelinePosition{} // until the new publisher's offset is known
		s.mu.Unlock()
		shift.restart()
		sub = next
	}
}

// await polls for a new publisher for at most the publisher wait, still
// subscribed through prev, whose messages meanwhile are kept: the new
// publisher's go to its subscription (resubscribe).
func (s *Stream) await(prev *subscription) (*subscription, error) {
	deadline := time.Now().Add(s.opts.publisherWait)
	o := s.opts
	o.requestTimeout = min(o.requestTimeout, 250*time.Millisecond)
	for {
		prev.drain()
		next, err := resubscribe(s.ctx, prev, o)
		if err == nil {
			return next, nil
		}
		if s.ctx.Err() != nil {
			return nil, s.ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: no publisher for %s: %w", s.stream, s.opts.publisherWait, err)
		}
		select {
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Stream) end(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("stream ended", "stream", s.stream, "error", err)
	}
}

func sameTracks(a, b []pipeline.Track) bool {
	return slices.EqualFunc(a, b, func(x, y pipeline.Track) bool {
		return x.Name == y.Name && x.Kind == y.Kind && x.Codec == y.Codec && x.Width == y.Width &&
			x.Height == y.Height && x.ClockRate == y.ClockRate
	})
}

// sameCodecs: a pushed source may come back at another size (the decoder
// follows in-band parameter sets, the scaler rebuilds its graph); another
// codec or track layout ends the stream.
func sameCodecs(a, b []pipeline.Track) bool {
	return slices.EqualFunc(a, b, func(x, y pipeline.Track) bool {
		return x.Kind == y.Kind && x.Codec == y.Codec && x.ClockRate == y.ClockRate
	})
}

// timeShift keeps one timeline across publishers: each new publisher
// starts its own clock near zero, so one offset in seconds is added to all
// its tracks (keeping audio and video in sync). The offset places the new
// publisher's first packet as far after the previous publisher's newest one
// as it entered the pipeline after it, by the packets' Ingest times: media
// time advances by the real outage, as PROGRAM-DATE-TIME does. Ingest is
// stamped once, by the publisher's side, and travels with the packets, so
// every node following the stream computes the same offset and serves the
// same timeline after the failover (an arrival clock differed by 30 ms
// between nodes, and hls.js behind a round-robin proxy rejected playlists
// that put the discontinuity on different segments). Packets without an
// Ingest are dated by arrival.
type timeShift struct {
	offset float64 // seconds added to the current publisher
	end    float64 // end of the newest packet forwarded, in seconds
	start  float64 // start (PTS) of that packet, in seconds
	frame  float64 // duration of the last video frame forwarded, in seconds
	lastAt time.Time
	// maxGap bounds the measured outage: no real one is longer than the
	// publisher wait plus the silence that ended the previous publisher.
	maxGap time.Duration

	pending  bool          // a publisher change waits for its first video keyframe
	firstAt  time.Time     // when the new publisher's first packet arrived
	firstPTS float64       // its PTS, in seconds
	fresh    map[int]bool  // tracks that still need their discontinuity mark
	lastDTS  map[int]int64 // per track, to keep DTS strictly increasing
}

// minFrame is the least step across a publisher change when no video frame
// duration is known yet.
const minFrame = 1.0 / 30

func (s *timeShift) restart() {
	s.pending, s.firstAt = true, time.Time{}
	s.fresh = map[int]bool{}
}

// gap is the outage to put between the previous publisher's newest packet
// and the new publisher's first: the measured one, at least a frame, at
// most maxGap.
func (s *timeShift) gap() float64 {
	least := s.frame
	if least <= 0 {
		least = minFrame
	}
	if s.lastAt.IsZero() {
		return least
	}
	g := s.firstAt.Sub(s.lastAt)
	if s.maxGap > 0 {
		g = min(g, s.maxGap)
	}
	return max(g.Seconds(), least)
}

// apply shifts p, which arrived at now (dated by its Ingest when it has
// one), onto the stream's timeline; nil means drop it.
func (s *timeShift) apply(p *pipeline.Packet, tr pipeline.Track, now time.Time) *pipeline.Packet {
	if !p.Ingest.IsZero() {
		now = p.Ingest
	}
	if s.lastDTS == nil {
		s.lastDTS = map[int]int64{}
	}
	if tr.Kind == pipeline.KindContainer {
		// Multiplexed bytes carry their own timestamps (the worker's demuxer
		// and timeline handle the jump); mark the change only.
		q := *p
		if s.fresh != nil && !s.fresh[p.Track] {
			s.fresh[p.Track] = true
			q.Discontinuity = true
		}
		s.pending = false
		return &q
	}
	rate := float64(tr.ClockRate)
	if s.pending {
		if s.firstAt.IsZero() {
			// Whatever track comes first dates the new publisher: its
			// packets are on one clock, so the keyframe below keeps its
			// place relative to it.
			s.firstAt, s.firstPTS = now, float64(p.PTS)/rate
		}
		// Start the new publisher at a video keyframe, so the first picture
		// every output sends after the gap decodes.
		if tr.Kind != pipeline.KindVideo || !p.Keyframe {
			return nil
		}
		at := max(s.end, s.start+s.gap())
		s.offset = at - s.firstPTS
		s.pending = false
	}
	q := *p
	shift := int64(math.Round(s.offset * rate))
	q.PTS += shift
	q.DTS += shift
	if last, ok := s.lastDTS[p.Track]; ok && q.DTS <= last {
		return nil // overlap with the previous publisher
	}
	s.lastDTS[p.Track] = q.DTS
	if s.fresh != nil && !s.fresh[p.Track] {
		s.fresh[p.Track] = true
		q.Discontinuity = true
	}
	if end := float64(q.PTS+q.Duration) / rate; end > s.end {
		s.end, s.start = end, float64(q.PTS)/rate
	}
	if tr.Kind == pipeline.KindVideo && q.Duration > 0 {
		s.frame = float64(q.Duration) / rate
	}
	s.lastAt = now
	return &q
}

// SubscribeEvents implements pipeline.EventSource: the stream's timed
// events from now on, on the stream's timeline.
func (s *Stream) SubscribeEvents() *pipeline.EventReader { return s.events.Subscribe() }

// ActiveEvents implements pipeline.EventSource.
func (s *Stream) ActiveEvents() []pipeline.Event { return s.events.ActiveEvents() }

// Tracks implements pipeline.Source.
func (s *Stream) Tracks() []pipeline.Track { return s.tracks }

// Subscribe implements pipeline.Source.
func (s *Stream) Subscribe(opts ...pipeline.ReaderOption) *pipeline.Reader {
	return s.fanout.Subscribe(opts...)
}

// RequestKeyframe implements pipeline.Source: it asks the current
// publisher, if any, whose job's keyframe budget decides.
func (s *Stream) RequestKeyframe(reason string) {
	s.mu.Lock()
	cur := s.current
	s.mu.Unlock()
	if cur != nil {
		cur.requestKeyframe(reason)
	}
}

// Stats implements pipeline.Source: the publisher's latest report.
func (s *Stream) Stats() pipeline.SourceStats {
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	// The publisher's stamping counters, and what reached this node.
	ev := pipeline.EventStats{}
	if st.Events != nil {
		ev = *st.Events
	}
	ev.Received, ev.Dropped = s.events.Counts()
	st.Events = &ev
	return st
}

// Info describes the publisher followed now (the last one between
// publishers).
func (s *Stream) Info() StreamInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		return s.current.info
	}
	return StreamInfo{Stream: s.stream, Tracks: s.tracks}
}

// PTSAt is the PTS (pipeline.EventClock, on this stream's timeline) of the
// newest frame that entered at or before pdt, among the last few seconds
// of frames: the media time of what an LL-HLS viewer saw at that PDT.
func (s *Stream) PTSAt(pdt time.Time) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames.PTSAt(pdt)
}

// TimelineID names the stream's media timeline: the instance of the first
// publisher it followed. Every node that started following under that
// publisher forwards its timestamps unchanged, so they share the timeline
// (outputs/hls numbers LL-HLS from it); a node that starts under a later
// publisher sees that one's timestamps, another timeline.
func (s *Stream) TimelineID() string { return s.timeline }

// Changes returns how many publisher changes the stream survived.
func (s *Stream) Changes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes
}

// Done implements pipeline.Source.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err implements pipeline.Source: nil for a clean end or Close.
func (s *Stream) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close implements pipeline.Source. It stops following the stream (its
// publisher keeps running) and waits for the stream's goroutine.
func (s *Stream) Close() error {
	s.cancel()
	<-s.done
	return s.Err()
}
