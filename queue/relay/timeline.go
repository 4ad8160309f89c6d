package relay

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// One timeline for every node, also for a node that starts following a
// stream after a publisher change.
//
// A node following a stream since before a publisher change shifts the new
// publisher's timestamps after the old one's (timeShift), and every such
// node computes the same shift from the packets' Ingest. A node that starts
// following only after the change sees the new publisher's own timestamps,
// which start near zero: outputs numbered from them (LL-HLS media sequence
// numbers, its URLs) would differ from the other nodes'. So a new follower
// first asks the nodes following the stream where the current publisher
// sits on their timeline, and takes it over when one answers for that
// publisher. When none does (no node follows the stream: nobody watches it
// anywhere), the stream starts a new timeline from the publisher's clock.

// timelinePosition places a publisher on a stream's timeline.
type timelinePosition struct {
	Timeline string  `json:"timeline"` // the instance of the publisher it began with
	Instance string  `json:"instance"` // the publisher followed now
	Offset   float64 `json:"offset"`   // seconds added to that publisher's timestamps
}

// timelineWait bounds how long a new follower waits for an answer from the
// nodes following the stream; they answer within a round trip, and with no
// follower at all NATS says so at once (no responders).
const timelineWait = 300 * time.Millisecond

// askTimeline asks the nodes following stream for the position of
// publisher instance; ok is false when none knows it.
func askTimeline(ctx context.Context, nc *nats.Conn, stream, instance string) (timelinePosition, bool) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return timelinePosition{}, false
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(mediaPrefix(stream)+subjTimeline, inbox, nil); err != nil {
		return timelinePosition{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, timelineWait)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return timelinePosition{}, false
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return timelinePosition{}, false // no node follows the stream
		}
		var pos timelinePosition
		if json.Unmarshal(m.Data, &pos) != nil || pos.Instance != instance || pos.Timeline == "" {
			continue // another publisher's (a node still on the old one), or unreadable
		}
		return pos, true
	}
}

// answerTimeline answers other nodes' timeline requests with this
// stream's position, once it knows one.
func (s *Stream) answerTimeline() (*nats.Subscription, error) {
	return s.nc.Subscribe(mediaPrefix(s.stream)+subjTimeline, func(m *nats.Msg) {
		s.mu.Lock()
		pos := s.position
		s.mu.Unlock()
		if pos.Instance == "" || m.Reply == "" {
			return
		}
		b, err := json.Marshal(pos)
		if err != nil {
			return
		}
		if err := m.Respond(b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			s.log.Debug("answering a timeline request", "stream", s.stream, "error", err)
		}
	})
}
