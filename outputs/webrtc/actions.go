package webrtc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Viewer actions: the viewer sends
//
//	{"type":"action","data":<any JSON>,"rtp":<rtpTimestamp of the frame on screen>}
//
// (rtp from requestVideoFrameCallback's metadata.rtpTimestamp), and the
// session hands Server.OnAction a pipeline.Action bound to that frame: its
// PTS on the stream's timeline and its program date time (the frame's
// Ingest). The viewer gets {"type":"ack","pts":..,"media_time":..,"pdt":..}
// or {"type":"error","error":"..."} saying why it was refused.

// Per-session action rate: enough for a person pressing buttons, not for
// a script flooding the sink (NATS) through one data channel.
const (
	actionRate  = 10 // per second
	actionBurst = 20
)

// Why actions are refused; they label StreamStats.Actions.Refused.
const (
	refusedDisabled  = "disabled"  // Server.OnAction is nil
	refusedTooLarge  = "too_large" // over pipeline.MaxActionBytes
	refusedMalformed = "malformed" // no data or no rtp
	refusedRate      = "rate"      // over the session's token bucket
	refusedNoFrame   = "no_frame"  // rtp is no frame sent recently
	refusedSink      = "sink"      // OnAction failed
)

// ErrActionRefused is wrapped by every refusal of a viewer's action.
var ErrActionRefused = errors.New("action refused")

// frameWindow is how far from a frame the session sent an action's rtp may
// fall and still be given a program date time: between frames the time is
// interpolated; beyond the ring's frames the viewer cannot be showing it.
const frameWindow = pipeline.EventClock // 1 s

// frameRingSize: about 8.5 s of frames at 30 fps, more than a viewer's
// jitter buffer and an action's way back.
const frameRingSize = 256

type sentFrame struct {
	pts    int64
	ingest time.Time
}

// frameRing keeps the video frames sent last: run adds, the data
// channel's goroutine looks up.
type frameRing struct {
	mu   sync.Mutex
	buf  [frameRingSize]sentFrame
	n    int // frames in buf
	next int // where the next goes
}

func (r *frameRing) add(pts int64, ingest time.Time) {
	r.mu.Lock()
	r.buf[r.next] = sentFrame{pts: pts, ingest: ingest}
	r.next = (r.next + 1) % frameRingSize
	r.n = min(r.n+1, frameRingSize)
	r.mu.Unlock()
}

// resolve maps an RTP timestamp of the video track back to the media PTS
// (the 32-bit wrap taken relative to the last frame sent) and the frame's
// program date time.
func (r *frameRing) resolve(ts, base uint32) (int64, time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return 0, time.Time{}, fmt.Errorf("%w: no video frame sent yet", ErrActionRefused)
	}
	last := r.buf[(r.next+frameRingSize-1)%frameRingSize]
	pts := last.pts + int64(int32(ts-base-uint32(last.pts)))
	best, dist := sentFrame{}, int64(-1)
	for i := range r.n {
		f := r.buf[i]
		d := f.pts - pts
		if d < 0 {
			d = -d
		}
		if dist < 0 || d < dist {
			best, dist = f, d
		}
	}
	if dist > frameWindow {
		return 0, time.Time{}, fmt.Errorf("%w: rtp %d is no frame sent in the last %d frames", ErrActionRefused, ts, r.n)
	}
	pdt := best.ingest
	if !pdt.IsZero() && dist != 0 {
		pdt = pdt.Add(time.Duration(pts-best.pts) * time.Second / pipeline.EventClock)
	}
	return pts, pdt, nil
}

// tokenBucket limits a session's actions; every data channel of the
// session shares it.
type tokenBucket struct {
	mu sync.Mutex
	b  pipeline.TokenBucket
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Rate == 0 {
		b.b = pipeline.NewTokenBucket(actionRate, actionBurst)
	}
	return b.b.Take(now)
}

type ackMessage struct {
	Type      string    `json:"type"`
	PTS       int64     `json:"pts"`
	MediaTime float64   `json:"media_time"`
	PDT       time.Time `json:"pdt,omitzero"`
}

// viewerID is the session's name in actions: derived from the session ID
// but not it, since the session ID is the capability to PATCH and DELETE
// the session and actions go to other systems (NATS).
func viewerID(sessionID string) string {
	h := sha256.Sum256([]byte("prism-viewer:" + sessionID))
	return hex.EncodeToString(h[:8])
}

// onAction handles an action message (the data channel's goroutine): it
// is bound to the frame, handed to the sink, and answered.
func (s *session) onAction(raw []byte, msg *clientMessage) {
	now := time.Now()
	a, reason, err := s.action(raw, msg, now)
	if err != nil {
		s.actionsRefused.Add(1)
		if s.srv != nil {
			s.srv.counters.actionRefused(s.st.name, reason)
		}
		s.send(errorMessage{Type: "error", Error: err.Error()})
		return
	}
	s.actionsAccepted.Add(1)
	s.srv.counters.actionAccepted(s.st.name)
	s.send(ackMessage{Type: "ack", PTS: a.PTS, MediaTime: a.MediaTime, PDT: a.PDT})
}

// action checks and binds one action; on refusal it says why, and which
// reason it is counted under.
func (s *session) action(raw []byte, msg *clientMessage, now time.Time) (pipeline.Action, string, error) {
	var sink func(pipeline.Action) error
	if s.srv != nil {
		sink = s.srv.OnAction
	}
	switch {
	case sink == nil:
		return pipeline.Action{}, refusedDisabled, fmt.Errorf("%w: this server takes no actions", ErrActionRefused)
	case !s.bucket.take(now):
		// First: every action message costs a token, a refused one too,
		// since each costs a parse and an answer.
		return pipeline.Action{}, refusedRate, fmt.Errorf("%w: more than %d per second (burst %d)", ErrActionRefused, actionRate, actionBurst)
	case len(raw) > pipeline.MaxActionBytes:
		return pipeline.Action{}, refusedTooLarge, fmt.Errorf("%w: %d bytes, at most %d", ErrActionRefused, len(raw), pipeline.MaxActionBytes)
	case msg == nil || len(msg.Data) == 0 || msg.RTP == nil:
		return pipeline.Action{}, refusedMalformed, fmt.Errorf(`%w: expected {"type":"action","data":<JSON>,"rtp":<rtpTimestamp of the frame on screen>}`, ErrActionRefused)
	}
	pts, pdt, err := s.frames.resolve(*msg.RTP, s.st.pk.videoBase)
	if err != nil {
		return pipeline.Action{}, refusedNoFrame, err
	}
	a := pipeline.Action{
		Stream: s.st.name, Viewer: s.viewer, Output: pipeline.OutputWebRTC, Data: msg.Data,
		PTS: pts, MediaTime: float64(pts) / pipeline.EventClock, PDT: pdt, Received: now,
	}
	if err := sink(a); err != nil {
		// The viewer learns that it failed, not the sink's internals.
		s.log.Warn("webrtc: action sink failed", "err", err)
		return pipeline.Action{}, refusedSink, fmt.Errorf("%w: not delivered, try again", ErrActionRefused)
	}
	return a, "", nil
}
