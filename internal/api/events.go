package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/relay"
)

// eventTimeout bounds the wait for the stream's publisher to stamp an
// event sent over the API.
const eventTimeout = 2 * time.Second

// eventPublisherWait is how long an event sent over the API waits for a
// publisher when the stream's job has none (it is starting, or moving to
// another node after a failure: about 2 s), trying again every
// eventRetry: a bid sent during a failover is stamped once the new
// publisher runs, not refused.
const (
	eventPublisherWait = 5 * time.Second
	eventRetry         = 100 * time.Millisecond
)

// eventRoutes: POST /api/v1/streams/<name>/events sends an event to the
// stream's publisher (which stamps it, wherever the job runs) and answers
// the stamped event; POST /api/v1/streams/<name>/actions is an HLS
// viewer's action, published to NATS actions.<name>.
func (s *Server) eventRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/streams/{name}/events", s.guarded(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
		name := r.PathValue("name")
		if err := pipeline.ValidStreamName(name); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, pipeline.MaxEventBytes))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "event body over 16 KiB: " + err.Error()})
			return
		}
		// Refused here already when malformed, so a bad event costs no
		// round trip and says why the same way.
		if _, _, err := pipeline.ParseEventRequest(body, ""); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		m, err := s.requestEvent(r.Context(), name, body)
		switch {
		case errors.Is(err, errEventWaiting):
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		case errors.Is(err, nats.ErrNoResponders):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "stream " + name + " is not running: no publisher takes its events"})
			return
		case err != nil:
			writeJSON(w, http.StatusGatewayTimeout, map[string]string{"error": "stream " + name + ": its publisher did not answer: " + err.Error()})
			return
		}
		var reply relay.EventReply
		if err := json.Unmarshal(m.Data, &reply); err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "stream " + name + ": unreadable answer from its publisher"})
			return
		}
		if reply.Error != "" {
			writeJSON(w, max(reply.Status, http.StatusBadRequest), map[string]string{"error": reply.Error})
			return
		}
		writeJSON(w, http.StatusCreated, reply.Event)
	}))
	actions := newViewerLimiter()
	mux.HandleFunc("POST /api/v1/streams/{name}/actions", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if err := pipeline.ValidStreamName(name); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		// Acting is watching: the stream's playback policy decides, as for
		// /hls/ (a signed stream needs a token granting play on it).
		viewer := "hls:" + pipeline.ClientKey(r.RemoteAddr)
		if s.Node.PlaySigned(name, s.Auth.Enabled()) {
			p, ok := s.authorize(w, r, auth.ActionPlay, name)
			if !ok {
				return
			}
			viewer = "hls:" + p.Name
		}
		if !actions.allow(viewer, time.Now()) {
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many actions from this viewer"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, pipeline.MaxActionBytes))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "action over 4 KiB"})
			return
		}
		var in struct {
			Data      json.RawMessage `json:"data"`
			PDT       *time.Time      `json:"pdt"`
			MediaTime *float64        `json:"media_time"`
		}
		if err := json.Unmarshal(body, &in); err != nil || len(in.Data) == 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"data":<JSON>,"pdt":"<program date time of the frame on screen>"}`})
			return
		}
		a := pipeline.Action{Stream: name, Viewer: viewer, Output: "hls", Data: in.Data, Received: time.Now().UTC()}
		if in.PDT != nil {
			a.PDT = in.PDT.UTC()
		}
		switch {
		case in.MediaTime != nil:
			a.MediaTime = *in.MediaTime
			a.PTS = int64(*in.MediaTime * pipeline.EventClock)
		case in.PDT != nil:
			// An LL-HLS player knows the PDT of the frame on screen; the
			// stream followed here knows which frame entered then.
			if src, ok := s.Streams.Get(name); ok {
				if fc, ok := src.(pipeline.FrameClock); ok {
					if pts, ok := fc.PTSAt(a.PDT); ok {
						a.PTS, a.MediaTime = pts, float64(pts)/pipeline.EventClock
					}
				}
			}
		}
		if err := relay.PublishAction(s.Node.Store().Conn(), a); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusAccepted, a)
	})
}

// viewerLimiter is a token bucket per viewer (10 a second, bursts of 20),
// for viewers' actions; it forgets viewers idle for a minute.
type viewerLimiter struct {
	mu      sync.Mutex
	buckets map[string]*pipeline.TokenBucket
	swept   time.Time
}

const (
	actionRate  = 10
	actionBurst = 20
)

func newViewerLimiter() *viewerLimiter {
	return &viewerLimiter{buckets: map[string]*pipeline.TokenBucket{}}
}

func (l *viewerLimiter) allow(viewer string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		for k, b := range l.buckets {
			if b.Idle(now, time.Minute) {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[viewer]
	if !ok {
		nb := pipeline.NewTokenBucket(actionRate, actionBurst)
		b = &nb
		l.buckets[viewer] = b
	}
	return b.Take(now)
}

// errEventWaiting: the stream's job has had no publisher for all of
// eventPublisherWait.
var errEventWaiting = errors.New("no publisher to stamp the event yet")

// requestEvent sends an event to the stream's publisher and returns its
// answer. With no publisher, it tries again for eventPublisherWait while
// the stream's job is starting or moving (errEventWaiting after that); a
// stream without a live job is nats.ErrNoResponders at once.
func (s *Server) requestEvent(ctx context.Context, name string, body []byte) (*nats.Msg, error) {
	deadline := time.Now().Add(eventPublisherWait)
	for {
		rctx, cancel := context.WithTimeout(ctx, eventTimeout)
		m, err := s.Node.Store().Conn().RequestMsgWithContext(rctx, relay.EventMsg(name, "api", body))
		cancel()
		if !errors.Is(err, nats.ErrNoResponders) {
			return m, err
		}
		job, jerr := s.Node.Store().Get(ctx, name)
		if jerr != nil || job.State.Terminal() {
			return nil, err
		}
		if time.Now().Add(eventRetry).After(deadline) {
			return nil, fmt.Errorf("%w: stream %s is %s, with no publisher for %s (starting, or moving to another node): retry",
				errEventWaiting, name, job.State, eventPublisherWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(eventRetry):
		}
	}
}
