package webrtc

import (
	"encoding/json"
	"slices"
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
// Several events bound to one frame go as one message, the frame's fields
// once:
//
//	{"type":"events","rtp":123456789,"pts":1107000,"media_time":12.3,"pdt":"...",
//	 "events":[{"id":"bid-7","class":"bid","data":{...},"seq":7},...]}
//
// Events are stamped on a frame at or after the newest one of the stream
// when they arrive. A session holds those it read until it sends the next
// video frame (at most flushEventsAfter, for a stream whose video stalls)
// and sends them right behind that frame's packets: one message per frame
// rather than per read, and the frame never waits for SCTP. Events bound
// to the next frame, as the stamper binds them, thus arrive with their
// frame, before the player can show it. An event bound to a frame already
// sent goes at once. At 1000 events a second to 200 viewers the SCTP and
// DTLS work per message and per byte, on both sides, and frames waiting
// behind it, were what raised media latency.
// Those still in effect when the channel opens go out right after the
// "rungs" message, one by one, flagged "active":true.

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

// onEvent takes an event read from the subscription, with every other one
// already waiting, into the batch sent behind the next video frame (run).
// The batch holds only events read since the last frame went out (drain
// flushes it then), so only the ones read now can be late.
func (s *session) onEvent(e *pipeline.Event, ok bool) {
	from := len(s.batch)
	s.batch = s.admitEvent(s.batch, e, ok)
	for s.evC != nil && len(s.batch) < maxEventBatch {
		select {
		case e, ok := <-s.evC:
			s.batch = s.admitEvent(s.batch, e, ok)
			continue
		default:
		}
		break
	}
	switch {
	case len(s.batch) >= maxEventBatch:
		s.flushEvents()
	case s.sentVideo && slices.ContainsFunc(s.batch[from:], func(e *pipeline.Event) bool { return e.PTS <= s.videoPTS }):
		// One bound to a frame already sent (an explicit time, or a frame
		// on its way when stamped): late already, so at once.
		s.flushEvents()
	case len(s.batch) > 0 && s.evFlushC == nil:
		s.evFlush.Reset(flushEventsAfter)
		s.evFlushC = s.evFlush.C
	}
}

// flushEventsAfter bounds how long a read event waits for a video frame
// to go out with: a bit more than a frame at 25 fps.
const flushEventsAfter = 50 * time.Millisecond

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

// pumpEvents sends the events read so far and every one still waiting.
// drain calls it after each video unit.
func (s *session) pumpEvents() {
	for s.evC != nil {
		select {
		case e, ok := <-s.evC:
			s.onEvent(e, ok)
			continue
		default:
		}
		break
	}
	s.flushEvents()
}

// flushEvents sends the batch (run).
func (s *session) flushEvents() {
	if s.evFlushC != nil {
		s.evFlush.Stop()
		s.evFlushC = nil
	}
	if len(s.batch) == 0 {
		return
	}
	s.sendEvents(s.batch)
	clear(s.batch)
	s.batch = s.batch[:0]
}

// maxEventBatch bounds the events in one message: at most about 32 KB
// of them, within every data channel's message size.
const maxEventBatch = 128

// sendEvents sends batch: each run of events bound to one frame as one
// message ("events"), a lone event as "event".
func (s *session) sendEvents(batch []*pipeline.Event) {
	for len(batch) > 0 {
		n := 1
		for n < len(batch) && sameFrame(batch[n], batch[0]) {
			n++
		}
		if n == 1 {
			s.sendEvent(batch[0], false)
		} else {
			s.sendGroup(batch[:n])
		}
		batch = batch[n:]
	}
}

func sameFrame(a, b *pipeline.Event) bool {
	return a.PTS == b.PTS && a.MediaTime == b.MediaTime && a.PDT.Equal(b.PDT)
}

// sendGroup sends events bound to one frame as one "events" message.
func (s *session) sendGroup(group []*pipeline.Event) {
	dc := s.dc.Load()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen || dc.BufferedAmount() > maxEventBacklog {
		s.eventDropped(uint64(len(group)))
		return
	}
	first := group[0]
	head, err := json.Marshal(eventGroup{Type: "events", RTP: s.st.pk.videoBase + uint32(first.PTS), PTS: first.PTS,
		MediaTime: first.MediaTime, PDT: first.PDT})
	if err != nil {
		s.eventDropped(uint64(len(group)))
		return
	}
	buf := append(s.batchBuf[:0], head[:len(head)-1]...) // without its "}"
	buf = append(buf, `,"events":[`...)
	sent := uint64(0)
	for _, e := range group {
		b, err := s.st.events.get(e, true, func() ([]byte, error) { return encodeGroupItem(e) })
		if err != nil {
			s.eventDropped(1)
			continue
		}
		if sent > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
		sent++
	}
	buf = append(buf, "]}"...)
	s.batchBuf = buf
	if sent == 0 {
		return
	}
	if dc.SendText(string(buf)) != nil {
		s.eventDropped(sent)
		return
	}
	s.eventsSent.Add(sent)
	if s.srv != nil {
		s.srv.counters.eventsSent(s.st.name, sent)
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
		b, err = s.st.events.get(e, false, func() ([]byte, error) { return s.st.encodeEvent(e, false) })
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

// eventGroup is the frame's part of an "events" message.
type eventGroup struct {
	Type      string    `json:"type"`
	RTP       uint32    `json:"rtp"`
	PTS       int64     `json:"pts"`
	MediaTime float64   `json:"media_time"`
	PDT       time.Time `json:"pdt,omitzero"`
}

// groupItem is an event inside an "events" message: its own fields, the
// frame's are the message's. id comes first (a test counts events by it).
type groupItem struct {
	ID          string           `json:"id"`
	Class       string           `json:"class,omitempty"`
	Data        json.RawMessage  `json:"data,omitempty"`
	Binary      []byte           `json:"binary,omitempty"`
	ContentType string           `json:"content_type,omitempty"`
	Duration    float64          `json:"duration,omitempty"`
	SCTE35      *pipeline.SCTE35 `json:"scte35,omitempty"`
	Seq         uint64           `json:"seq,omitempty"`
}

func encodeGroupItem(e *pipeline.Event) ([]byte, error) {
	return json.Marshal(groupItem{ID: e.ID, Class: e.Class, Data: e.Data, Binary: e.Binary, ContentType: e.ContentType,
		Duration: e.Duration, SCTE35: e.SCTE35, Seq: e.Seq})
}

// eventCache holds the encodings of the stream's newest events, by the
// event the fan-out handed every session (one pointer for all): at 1000
// events a second to 200 viewers, encoding each once instead of per
// viewer is most of the send path's CPU.
type eventCache struct {
	mu   sync.Mutex
	msgs map[*pipeline.Event]*eventEncodings
	ring [eventCacheSize]*pipeline.Event // insertion order, to evict the oldest
	next int
}

// eventEncodings are an event's message alone and its element of an
// "events" message, each encoded when first asked for.
type eventEncodings struct{ alone, item []byte }

const eventCacheSize = 256

// get returns e's element of an "events" message (item) or its message
// alone, encoding it once.
func (c *eventCache) get(e *pipeline.Event, item bool, encode func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	enc, ok := c.msgs[e]
	if ok {
		if item && enc.item != nil {
			return enc.item, nil
		}
		if !item && enc.alone != nil {
			return enc.alone, nil
		}
	}
	b, err := encode()
	if err != nil {
		return nil, err
	}
	if !ok {
		if c.msgs == nil {
			c.msgs = make(map[*pipeline.Event]*eventEncodings, eventCacheSize)
		}
		if old := c.ring[c.next]; old != nil {
			delete(c.msgs, old)
		}
		enc = &eventEncodings{}
		c.ring[c.next], c.msgs[e] = e, enc
		c.next = (c.next + 1) % eventCacheSize
	}
	if item {
		enc.item = b
	} else {
		enc.alone = b
	}
	return b, nil
}
