package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Timed events: data (a bid, odds, a product card, an ad break) bound to
// the media time of one frame, so that every output shows it on that
// frame. An event is stamped once, where the stream is transcoded
// (queue/relay's publisher), and travels with the media: a node following
// the stream shifts it with the media across publisher changes.

// EventClock is the clock of Event.PTS: the video clock (90 kHz).
const EventClock = 90000

// Limits on an event as it comes in.
const (
	MaxEventBytes    = 16 << 10 // the whole request body
	maxEventIDLen    = 128
	maxEventClassLen = 64
	// MaxEventDuration bounds Duration: a longer "event" is state, and
	// belongs in the data pipeline.
	MaxEventDuration = 24 * time.Hour
)

// ErrEvent is wrapped by every refusal of an event's content.
var ErrEvent = errors.New("event refused")

var eventIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)

// EventRequest is an event as a caller sends it (JSON on NATS
// events.<stream> or POST /api/v1/streams/<name>/events). Without At or
// MediaTime it is bound to the frame live at ingest when it arrives.
type EventRequest struct {
	ID    string          `json:"id,omitempty"`    // default: generated
	Class string          `json:"class,omitempty"` // e.g. "bid"; EXT-X-DATERANGE CLASS
	Data  json.RawMessage `json:"data,omitempty"`  // any JSON value
	// Duration in seconds; 0: until the next event of the same class.
	Duration float64 `json:"duration,omitempty"`
	// At binds the event to the frame whose program date time this is.
	At *time.Time `json:"at,omitempty"`
	// MediaTime binds the event to this media time (seconds, on the
	// timeline events.<stream>.timed reports).
	MediaTime *float64 `json:"media_time,omitempty"`
	// SCTE35 carries a splice command for EXT-X-DATERANGE's SCTE35-OUT,
	// SCTE35-IN or SCTE35-CMD.
	SCTE35 *SCTE35 `json:"scte35,omitempty"`
}

// SCTE35 holds splice_info_section bytes as hexadecimal ("0xFC30...").
type SCTE35 struct {
	Out string `json:"out,omitempty"`
	In  string `json:"in,omitempty"`
	Cmd string `json:"cmd,omitempty"`
}

// Event is a stamped event: what every output and events.<stream>.timed
// deliver.
type Event struct {
	Stream string          `json:"stream"`
	ID     string          `json:"id"`
	Class  string          `json:"class,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	// Binary is a non-JSON body (its ContentType says what it is).
	Binary      []byte  `json:"binary,omitempty"`
	ContentType string  `json:"content_type,omitempty"`
	Duration    float64 `json:"duration,omitempty"` // seconds; 0: until replaced
	SCTE35      *SCTE35 `json:"scte35,omitempty"`
	// PTS is the media time of the frame the event is bound to, in
	// EventClock ticks, on the timeline of whoever hands it out (the
	// publisher's on NATS, the followed stream's on a node's outputs).
	PTS       int64     `json:"pts"`
	MediaTime float64   `json:"media_time"` // PTS in seconds
	PDT       time.Time `json:"pdt"`        // program date time of that frame
	Received  time.Time `json:"received"`   // when the publisher got it
	Origin    string    `json:"origin"`     // "nats", "api", or the ingest protocol of an event inside the stream ("rtmp")
	Seq       uint64    `json:"seq"`        // per publisher, from 1
	Instance  string    `json:"instance,omitempty"`
}

// End is the event's end as a program date time; zero when it lasts
// until the next of its class.
func (e *Event) End() time.Time {
	if e.Duration <= 0 {
		return time.Time{}
	}
	return e.PDT.Add(time.Duration(e.Duration * float64(time.Second)))
}

// Validate checks a request's fields; the error wraps ErrEvent and says
// which field is wrong.
func (r *EventRequest) Validate() error {
	switch {
	case len(r.ID) > maxEventIDLen || (r.ID != "" && !eventIDRE.MatchString(r.ID)):
		return fmt.Errorf("%w: id %q: at most %d of letters, digits, '.', '_', ':' and '-'", ErrEvent, r.ID, maxEventIDLen)
	case len(r.Class) > maxEventClassLen || (r.Class != "" && !eventIDRE.MatchString(r.Class)):
		return fmt.Errorf("%w: class %q: at most %d of letters, digits, '.', '_', ':' and '-'", ErrEvent, r.Class, maxEventClassLen)
	case r.Duration < 0 || r.Duration > MaxEventDuration.Seconds():
		return fmt.Errorf("%w: duration %g s: between 0 and %g", ErrEvent, r.Duration, MaxEventDuration.Seconds())
	case r.At != nil && r.MediaTime != nil:
		return fmt.Errorf("%w: give at or media_time, not both", ErrEvent)
	case r.MediaTime != nil && *r.MediaTime < 0:
		return fmt.Errorf("%w: media_time %g: negative", ErrEvent, *r.MediaTime)
	}
	if s := r.SCTE35; s != nil {
		for name, v := range map[string]string{"out": s.Out, "in": s.In, "cmd": s.Cmd} {
			if v != "" && !validHex(v) {
				return fmt.Errorf("%w: scte35.%s: want hexadecimal bytes such as 0xFC30", ErrEvent, name)
			}
		}
	}
	return nil
}

func validHex(s string) bool {
	if len(s) < 4 || (s[:2] != "0x" && s[:2] != "0X") || len(s)%2 != 0 || len(s) > 2+2*4096 {
		return false
	}
	for _, c := range s[2:] {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// ParseEventRequest reads a request body: JSON (EventRequest) when
// contentType is empty or JSON, otherwise the bytes themselves as the
// event's data.
func ParseEventRequest(body []byte, contentType string) (EventRequest, []byte, error) {
	if len(body) > MaxEventBytes {
		return EventRequest{}, nil, fmt.Errorf("%w: %d bytes, at most %d", ErrEvent, len(body), MaxEventBytes)
	}
	if contentType != "" && !isJSON(contentType) {
		return EventRequest{}, slices.Clone(body), nil
	}
	var r EventRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return EventRequest{}, nil, fmt.Errorf("%w: not a JSON event object: %w", ErrEvent, err)
	}
	return r, nil, r.Validate()
}

func isJSON(ct string) bool {
	for i := range len(ct) {
		if ct[i] == ';' {
			ct = ct[:i]
			break
		}
	}
	return ct == "application/json" || ct == "text/json"
}

// Action is a viewer's message, published to NATS actions.<stream> with the
// frame the viewer saw when it was sent.
type Action struct {
	Stream string          `json:"stream"`
	Viewer string          `json:"viewer"`
	Output string          `json:"output"` // "webrtc", "hls"
	Data   json.RawMessage `json:"data"`
	// PTS and MediaTime are the frame on the viewer's screen, on the
	// timeline of the node that served it; PDT is its program date time.
	PTS       int64     `json:"pts"`
	MediaTime float64   `json:"media_time"`
	PDT       time.Time `json:"pdt,omitzero"`
	Received  time.Time `json:"received"` // server receive time
}

// MaxActionBytes caps a viewer's action message.
const MaxActionBytes = 4 << 10

// EventSource is a Source that also carries timed events (a followed
// stream). Outputs type-assert for it.
type EventSource interface {
	// SubscribeEvents returns a reader of events from now on.
	SubscribeEvents() *EventReader
	// ActiveEvents lists the events still in effect: the newest of each
	// class without a duration, and those whose duration has not ended.
	ActiveEvents() []Event
}

// EventReaderBuffer is each event reader's bound: a reader this far behind
// drops events (counted) instead of holding up the stream.
const EventReaderBuffer = 4096

// EventReader receives events from an EventFanout.
type EventReader struct {
	C       <-chan *Event
	c       chan *Event
	fanout  *EventFanout
	dropped uint64 // under fanout.mu
}

// Dropped is how many events this reader missed because it was behind.
func (r *EventReader) Dropped() uint64 {
	r.fanout.mu.Lock()
	defer r.fanout.mu.Unlock()
	return r.dropped
}

// Close detaches the reader; C is closed.
func (r *EventReader) Close() { r.fanout.remove(r) }

// EventFanout hands events to readers and keeps the active ones.
type EventFanout struct {
	mu        sync.Mutex
	readers   map[*EventReader]struct{}
	active    []Event
	closed    bool
	published uint64
	dropped   uint64 // over all readers
}

// Counts returns how many events were published and how many readers
// dropped.
func (f *EventFanout) Counts() (published, dropped uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.published, f.dropped
}

// activeCap bounds the active list: the oldest go first.
const activeCap = 64

// Subscribe returns a reader of events from now on (what an
// EventSource's SubscribeEvents hands out).
func (f *EventFanout) Subscribe() *EventReader {
	c := make(chan *Event, EventReaderBuffer)
	r := &EventReader{C: c, c: c, fanout: f}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(c)
		return r
	}
	if f.readers == nil {
		f.readers = map[*EventReader]struct{}{}
	}
	f.readers[r] = struct{}{}
	return r
}

func (f *EventFanout) remove(r *EventReader) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.readers[r]; ok {
		delete(f.readers, r)
		close(r.c)
	}
}

// Publish hands e to every reader (a full reader drops it) and records it
// as active.
func (f *EventFanout) Publish(e *Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.record(*e, time.Now())
	f.published++
	for r := range f.readers {
		select {
		case r.c <- e:
		default:
			r.dropped++
			f.dropped++
		}
	}
}

// Seed adds events to the active list without delivering them (what a
// late follower learns from the publisher, what a new publisher loads
// from JetStream). An event already listed, or older than the one of its
// class listed, is left out: seeds may arrive after newer events.
func (f *EventFanout) Seed(evs []Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for _, e := range evs {
		if !f.supersededLocked(&e) {
			f.record(e, now)
		}
	}
}

func (f *EventFanout) supersededLocked(e *Event) bool {
	for _, a := range f.active {
		if a.ID == e.ID || (a.Class == e.Class && a.Duration <= 0 && e.Duration <= 0 && !a.PDT.Before(e.PDT)) {
			return true
		}
	}
	return false
}

func (f *EventFanout) record(e Event, now time.Time) {
	f.active = slices.DeleteFunc(f.active, func(a Event) bool {
		return a.ID == e.ID || (e.Duration <= 0 && a.Duration <= 0 && a.Class == e.Class) || expired(&a, now)
	})
	f.active = append(f.active, e)
	if len(f.active) > activeCap {
		f.active = slices.Delete(f.active, 0, len(f.active)-activeCap)
	}
}

// activeGrace keeps an ended event listed a while: viewers are behind the
// live edge, and their players decide by media time whether it still shows.
const activeGrace = 30 * time.Second

func expired(e *Event, now time.Time) bool {
	end := e.End()
	return !end.IsZero() && now.Sub(end) > activeGrace
}

// ActiveEvents lists the events still in effect (EventSource.ActiveEvents).
func (f *EventFanout) ActiveEvents() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	out := make([]Event, 0, len(f.active))
	for _, e := range f.active {
		if !expired(&e, now) {
			out = append(out, e)
		}
	}
	return out
}

// Close closes every reader; later subscribers get a closed reader.
func (f *EventFanout) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	for r := range f.readers {
		close(r.c)
	}
	f.readers = nil
}
