// Package ingest is what every push listener (rtmp, srt, whip) shares: the
// publish request a listener hands to the node before it accepts any media,
// the sentinel refusals, and Session, the publisher's compressed media as a
// pipeline.Source.
//
// A listener parses its protocol in Go and writes access units into the
// Session; it never decodes. The node relays the Session over NATS to the
// worker that runs the ladder, so a malformed bitstream can end that worker
// and never the node. Nothing here depends on anything above pipeline/.
package ingest

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Protocols of the listeners, as Request.Protocol and metric labels.
const (
	RTMP = "rtmp"
	SRT  = "srt"
	WHIP = "whip"
)

// Refusals a Handler returns (wrapped, with the reason). Listeners map them
// to their protocol's answer: RTMP NetStream.Publish.Unauthorized/BadName,
// SRT reject codes, WHIP HTTP statuses.
var (
	// ErrUnauthorized: no credential, a wrong key, an expired token.
	ErrUnauthorized = errors.New("not authorised to publish")
	// ErrBadSecret: SRT passphrase missing or wrong.
	ErrBadSecret = errors.New("wrong or missing passphrase")
	// ErrNotFound: the stream name is invalid or not configured for publishing.
	ErrNotFound = errors.New("no such stream to publish")
	// ErrConflict: the stream already has a publisher.
	ErrConflict = errors.New("stream already has a publisher")
	// ErrUnsupported: a codec or track layout Prism cannot ingest.
	ErrUnsupported = errors.New("unsupported media")
)

// Request is a publisher asking to publish, before any media is accepted.
type Request struct {
	Protocol string
	Stream   string
	// Key is the credential presented: the RTMP stream key or its ?token=,
	// the SRT streamid's key or token, the WHIP bearer token. Never log it.
	Key    string
	Remote net.Addr
	// Query holds the extra parameters the publisher sent (RTMP URL query,
	// SRT streamid fields), without the credential.
	Query url.Values
}

// InputPrefix starts the job input of a pushed stream: "ingest://<stream>".
// It is no URL FFmpeg opens: the worker reads the stream's source from NATS.
const InputPrefix = "ingest://"

// Input is the job input of the pushed stream.
func Input(stream string) string { return InputPrefix + stream }

// StreamOfInput returns the pushed stream a job input names, if it does.
func StreamOfInput(input string) (string, bool) {
	s, ok := strings.CutPrefix(input, InputPrefix)
	return s, ok && pipeline.ValidName(s)
}

// Handler admits publishers. Publish authorises req and returns the session
// its media goes into, or an error wrapping one of the refusals above. It is
// called before the listener reads any media.
type Handler interface {
	Publish(ctx context.Context, req Request) (*Session, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req Request) (*Session, error)

// Publish implements Handler.
func (f HandlerFunc) Publish(ctx context.Context, req Request) (*Session, error) { return f(ctx, req) }

// Session is one publisher's compressed media, as a pipeline.Source whose
// tracks are the source's own (codec, size, extradata) and whose packets
// are access units (H.264/H.265 Annex-B, AV1 OBUs, VP8 frames, raw AAC,
// Opus packets) or, for SRT, MPEG-TS bytes on one container track.
//
// The listener owns the writing side (SetTracks, WritePacket, End); the
// node owns the reading side. All methods are safe for concurrent use.
type Session struct {
	Request Request
	Started time.Time

	fanout pipeline.Fanout
	ready  chan struct{}
	done   chan struct{}

	mu        sync.Mutex
	tracks    []pipeline.Track
	err       error
	ended     bool
	onKey     func()
	onClose   func()
	onEvent   func(pipeline.EventRequest)
	events    uint64 // handed to onEvent
	bytes     uint64
	packets   uint64
	keyframes uint64
	lastKey   time.Time
	lastPkt   time.Time
	meter     *pipeline.RateMeter
}

// NewSession returns a session for req, with no tracks yet.
func NewSession(req Request) *Session {
	return &Session{Request: req, Started: time.Now(), ready: make(chan struct{}), done: make(chan struct{}), meter: pipeline.NewRateMeter(3)}
}

// OnKeyframeRequest sets what RequestKeyframe does (a WHIP listener sends
// a PLI; RTMP and SRT publishers cannot be asked). Call before SetTracks.
func (s *Session) OnKeyframeRequest(fn func()) {
	s.mu.Lock()
	s.onKey = fn
	s.mu.Unlock()
}

// OnEvent sets where the timed events the publisher sends inside its
// stream go (RTMP onCuePoint and onTextData): the node sends them to the
// stream's events.<stream>, to be stamped like any other. Call before
// SetTracks; without it such events are dropped.
func (s *Session) OnEvent(fn func(pipeline.EventRequest)) {
	s.mu.Lock()
	s.onEvent = fn
	s.mu.Unlock()
}

// WriteEvent hands an event the publisher sent inside its stream to the
// OnEvent function; false when there is none. It must not block for long:
// the listener calls it between media messages.
func (s *Session) WriteEvent(req pipeline.EventRequest) bool {
	s.mu.Lock()
	fn := s.onEvent
	if fn != nil {
		s.events++
	}
	s.mu.Unlock()
	if fn == nil {
		return false
	}
	fn(req)
	return true
}

// OnClose sets how Close stops the publisher (close its connection). Call
// before SetTracks.
func (s *Session) OnClose(fn func()) {
	s.mu.Lock()
	s.onClose = fn
	s.mu.Unlock()
}

// SetTracks announces the tracks, once, before the first packet. Track IDs
// are set to their index.
func (s *Session) SetTracks(tracks []pipeline.Track) error {
	if len(tracks) == 0 {
		return errors.New("ingest: a session needs at least one track")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracks != nil {
		return errors.New("ingest: tracks already set")
	}
	s.tracks = make([]pipeline.Track, len(tracks))
	for i, t := range tracks {
		t.ID = i
		s.tracks[i] = t
	}
	close(s.ready)
	return nil
}

// Ready is closed once the tracks are known.
func (s *Session) Ready() <-chan struct{} { return s.ready }

// WritePacket publishes one access unit to the session's readers. The
// packet must not be modified afterwards. Ingest is set to now if zero.
func (s *Session) WritePacket(p *pipeline.Packet) {
	s.mu.Lock()
	if s.ended || p.Track < 0 || p.Track >= len(s.tracks) {
		s.mu.Unlock()
		return
	}
	kind := s.tracks[p.Track].Kind
	now := time.Now()
	if p.Ingest.IsZero() {
		p.Ingest = now
	}
	s.bytes += uint64(len(p.Data))
	s.packets++
	s.lastPkt = now
	if p.Keyframe && kind == pipeline.KindVideo {
		s.keyframes++
		s.lastKey = now
	}
	s.meter.Add(len(p.Data), now)
	s.mu.Unlock()
	s.fanout.Publish(p, kind)
}

// End ends the session: readers drain what they hold and then see
// pipeline.ErrClosed; Err returns err (nil: the publisher stopped cleanly).
func (s *Session) End(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.err = true, err
	s.mu.Unlock()
	s.fanout.Close()
	close(s.done)
}

// Tracks implements pipeline.Source (nil until SetTracks).
func (s *Session) Tracks() []pipeline.Track {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tracks
}

// Subscribe implements pipeline.Source.
func (s *Session) Subscribe(opts ...pipeline.ReaderOption) *pipeline.Reader {
	return s.fanout.Subscribe(opts...)
}

// RequestKeyframe implements pipeline.Source: the publisher is asked
// whatever the reason (it has no budget to spend it against).
func (s *Session) RequestKeyframe(string) {
	s.mu.Lock()
	fn := s.onKey
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// Counters is what a session has carried so far.
type Counters struct {
	Bytes, Packets, Keyframes uint64
	Events                    uint64  // timed events from inside the stream (WriteEvent)
	Bitrate                   float64 // bits per second over the last seconds
	LastKeyframe              time.Time
	LastPacket                time.Time
}

// Counters returns the session's counters.
func (s *Session) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, bps := s.meter.Rate(time.Now())
	return Counters{Bytes: s.bytes, Packets: s.packets, Keyframes: s.keyframes, Events: s.events, Bitrate: bps, LastKeyframe: s.lastKey, LastPacket: s.lastPkt}
}

// Stats implements pipeline.Source.
func (s *Session) Stats() pipeline.SourceStats {
	c := s.Counters()
	fr, _ := s.meter.Totals()
	return pipeline.SourceStats{
		Uptime: time.Since(s.Started),
		Tracks: []pipeline.TrackStats{{Track: "source", Frames: fr, Bytes: c.Bytes, Bitrate: c.Bitrate}},
	}
}

// Done implements pipeline.Source.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err implements pipeline.Source.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close implements pipeline.Source: it disconnects the publisher (through
// OnClose) and ends the session.
func (s *Session) Close() error {
	s.mu.Lock()
	fn := s.onClose
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
	s.End(nil)
	return nil
}

var _ pipeline.Source = (*Session)(nil)
