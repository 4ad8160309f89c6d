package webrtc

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
)

// Timed events (pipeline.Event) reach a viewer on its data channel, each
// with the RTP timestamp of the frame it is bound to, so that the player
// shows it when that frame is on screen:
//
//	{"type":"event","id":"bid-7","class":"bid","data":{...},"duration":5,
//	 "media_time":12.3,"pts":1107000,"pdt":"...","rtp":123456789,"seq":7}
//
// Events read together (a burst) go as one message,
// {"type":"events","events":[<event>,...]}.
//
// Events are stamped on a frame at or after the newest one of the stream
// when they arrive, so they are forwarded at once: the player holds them
// until their frame shows. Those still in effect when the channel opens go
// out right after the "rungs" message, flagged "active":true.

// eventMessage is a pipeline.Event as the viewer gets it.
type eventMessage struct {
	Type        string           `json:"type"`
	ID          string           `json:"id"`
	Class       string           `json:"class,omitempty"`
	Data        json.RawMessage  `json:"data,omitempty"`
	Binary      []byte           `json:"binary,omitempty"` // base64 in JSON
	ContentType string           `json:"content_type,omitempty"`
	Duration    float64          `json:"duration,omitempty"`
	SCTE35      *pipeline.SCTE35 `json:"scte35,omitempty"`
	MediaTime   float64          `json:"media_time"`
	PTS         int64            `json:"pts"`
	PDT         time.Time        `json:"pdt,omitzero"`
	// RTP is the RTP timestamp the bound frame carries on the video track:
	// what requestVideoFrameCallback reports as metadata.rtpTimestamp.
	RTP    uint32 `json:"rtp"`
	Seq    uint64 `json:"seq,omitempty"`
	Active bool   `json:"active,omitempty"` // sent on open: already in effect
}

// maxEventBacklog bounds what the data channel may hold unsent before
// further events are dropped (counted): a viewer whose SCTP association is
// stuck must not make the server buffer every event for it.
const maxEventBacklog = 1 << 20

// eventKey identifies one stamped event, to send an event once when it is
// both in the active list sent on open and read from the subscription.
type eventKey struct {
	id  string
	seq uint64
	pts int64
}

// eventSource is the stream's source as an EventSource, nil when it
// carries no events.
func (s *session) eventSource() pipeline.EventSource {
	if s.st == nil {
		return nil
	}
	es, _ := s.st.job.(pipeline.EventSource)
	return es
}

// openEvents runs on run's goroutine once the data channel is open (the
// rungs went out already): it subscribes, then sends the active events.
// Subscribing first loses nothing: an event published before it is in
// the active list, one after is read from the subscription; one published
// in between is in both, and sent once (s.seen).
func (s *session) openEvents() {
	es := s.eventSource()
	if es == nil || s.events != nil {
		return
	}
	s.events = es.SubscribeEvents()
	s.evC = s.events.C
	active := es.ActiveEvents()
	s.seen = make(map[eventKey]struct{}, len(active))
	for i := range active {
		e := &active[i]
		s.seen[eventKey{e.ID, e.Seq, e.PTS}] = struct{}{}
		s.sendEvent(e, true)
	}
}

// closeEvents ends the subscription (run, at teardown).
func (s *session) closeEvents() {
	if s.events != nil {
		s.noteReaderDrops()
		s.events.Close()
		s.events, s.evC = nil, nil
	}
}

// onEvent sends an event read from the subscription, with every other one
// already waiting, as one message (run).
func (s *session) onEvent(e *pipeline.Event, ok bool) {
	batch := s.admitEvent(s.batch[:0], e, ok)
	for s.evC != nil && len(batch) < maxEventBatch {
		select {
		case e, ok := <-s.evC:
			batch = s.admitEvent(batch, e, ok)
			continue
		default:
		}
		break
	}
	s.sendEvents(batch)
	clear(batch)
	s.batch = batch[:0]
}

// admitEvent adds e to batch unless it was sent already (from the active
// list on open); !ok ends the subscription.
func (s *session) admitEvent(batch []*pipeline.Event, e *pipeline.Event, ok bool) []*pipeline.Event {
	if !ok {
		s.evC = nil // the source's fanout closed: no more events
		return batch
	}
	if _, dup := s.seen[eventKey{e.ID, e.Seq, e.PTS}]; dup {
		delete(s.seen, eventKey{e.ID, e.Seq, e.PTS})
		return batch
	}
	return append(batch, e)
}

// pumpEvents sends every event already waiting. drain calls it before each
// video unit: an event read at the same time as its frame then leaves
// ahead of the frame's RTP packets, not after them.
func (s *session) pumpEvents() {
	for s.evC != nil {
		select {
		case e, ok := <-s.evC:
			s.onEvent(e, ok)
		default:
			return
		}
	}
}

// maxEventBatch bounds the events in one message: about 32 KB of them,
// within every data channel's message size. One SCTP message per batch
// instead of per event is what lets 1000 events a second reach hundreds
// of viewers: per-message overhead, not bytes, was the limit.
const maxEventBatch = 128

// sendEvents sends batch: one "event" message, or several as
// {"type":"events","events":[...]}.
func (s *session) sendEvents(batch []*pipeline.Event) {
	switch len(batch) {
	case 0:
		return
	case 1:
		s.sendEvent(batch[0], false)
		return
	}
	dc := s.dc.Load()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen || dc.BufferedAmount() > maxEventBacklog {
		s.eventDropped(uint64(len(batch)))
		return
	}
	buf := append(s.batchBuf[:0], `{"type":"events","events":[`...)
	for i, e := range batch {
		b, err := s.st.events.get(e, func() ([]byte, error) { return s.st.encodeEvent(e, false) })
		if err != nil {
			s.eventDropped(1)
			continue
		}
		if i > 0 && buf[len(buf)-1] != '[' {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
	}
	buf = append(buf, "]}"...)
	s.batchBuf = buf
	if dc.SendText(string(buf)) != nil {
		s.eventDropped(uint64(len(batch)))
		return
	}
	n := uint64(len(batch))
	s.eventsSent.Add(n)
	if s.srv != nil {
		s.srv.counters.eventsSent(s.st.name, n)
	}
}

func (s *session) sendEvent(e *pipeline.Event, active bool) {
	dc := s.dc.Load()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen || dc.BufferedAmount() > maxEventBacklog {
		s.eventDropped(1)
		return
	}
	var b []byte
	var err error
	if active {
		b, err = s.st.encodeEvent(e, true)
	} else {
		b, err = s.st.events.get(e, func() ([]byte, error) { return s.st.encodeEvent(e, false) })
	}
	if err != nil || dc.SendText(string(b)) != nil {
		s.eventDropped(1)
		return
	}
	s.eventsSent.Add(1)
	if s.srv != nil {
		s.srv.counters.eventsSent(s.st.name, 1)
	}
}

func (s *session) eventDropped(n uint64) {
	s.eventsDropped.Add(n)
	if s.srv != nil {
		s.srv.counters.eventsDropped(s.st.name, n)
	}
}

// noteReaderDrops counts the events the subscription lost because this
// session fell behind (run, at every tick and at the end).
func (s *session) noteReaderDrops() {
	if s.events == nil {
		return
	}
	if d := s.events.Dropped(); d > s.readerDrops {
		s.eventDropped(d - s.readerDrops)
		s.readerDrops = d
	}
}

// encodeEvent is e's message for the stream's viewers (the RTP timestamp
// base is the stream's, the same for every viewer).
func (st *stream) encodeEvent(e *pipeline.Event, active bool) ([]byte, error) {
	return json.Marshal(eventMessage{
		Type: "event", ID: e.ID, Class: e.Class, Data: e.Data, Binary: e.Binary, ContentType: e.ContentType,
		Duration: e.Duration, SCTE35: e.SCTE35, MediaTime: e.MediaTime, PTS: e.PTS, PDT: e.PDT,
		RTP: st.pk.videoBase + uint32(e.PTS), Seq: e.Seq, Active: active,
	})
}

// eventCache holds the messages of the stream's newest events, by the
// event the fan-out handed every session (one pointer for all): at 1000
// events a second to 200 viewers, encoding each once instead of per
// viewer is most of the send path's CPU.
type eventCache struct {
	mu   sync.Mutex
	msgs map[*pipeline.Event][]byte
	ring [eventCacheSize]*pipeline.Event // insertion order, to evict the oldest
	next int
}

const eventCacheSize = 256

func (c *eventCache) get(e *pipeline.Event, encode func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.msgs[e]; ok {
		return b, nil
	}
	b, err := encode()
	if err != nil {
		return nil, err
	}
	if c.msgs == nil {
		c.msgs = make(map[*pipeline.Event][]byte, eventCacheSize)
	}
	if old := c.ring[c.next]; old != nil {
		delete(c.msgs, old)
	}
	c.ring[c.next], c.msgs[e] = e, b
	c.next = (c.next + 1) % eventCacheSize
	return b, nil
}
