package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/pipeline"
)

// Option tunes Follow.
type Option func(*options)

type options struct {
	staleAfter     time.Duration
	requestTimeout time.Duration
	buffer         int
	publisherWait  time.Duration
	log            *slog.Logger
	source         bool      // follow the stream's pushed source (FollowSource)
	received       func(int) // bytes of each media message received (WithReceivedBytes)
}

func defaultOptions() options {
	return options{staleAfter: 3 * StatsInterval, requestTimeout: 2 * time.Second, buffer: 8192, publisherWait: DefaultPublisherWait}
}

// DefaultPublisherWait is how long a followed stream waits for a new
// publisher (failover, input restart) before its outputs give up on it.
const DefaultPublisherWait = 60 * time.Second

// WithStaleAfter counts a publisher as gone (ErrStreamGone) when it was
// silent this long (default 3 StatsIntervals).
func WithStaleAfter(d time.Duration) Option { return func(o *options) { o.staleAfter = d } }

// WithRequestTimeout bounds the track-list request (default 2 s).
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = d }
}

// WithMessageBuffer sets how many messages may wait for the receiving
// goroutine before NATS drops them (default 8192, about 30 s of a four-rung
// ladder with audio; drops show up as lost packets).
func WithMessageBuffer(n int) Option { return func(o *options) { o.buffer = n } }

// WithPublisherWait sets how long the stream waits for the next publisher
// when one goes away (default DefaultPublisherWait). Zero ends the stream
// with its first publisher, with that publisher's reason.
func WithPublisherWait(d time.Duration) Option { return func(o *options) { o.publisherWait = d } }

// WithReceivedBytes calls add with the size of every media message the
// stream receives, on its goroutine (it must not block): what following
// the stream costs the node in NATS ingress.
func WithReceivedBytes(add func(n int)) Option { return func(o *options) { o.received = add } }

// subscription is one publisher instance of a stream, seen through its
// media subjects. It has no goroutine and no fan-out of its own: its
// Stream's goroutine runs receive, which hands each reassembled packet on.
type subscription struct {
	nc       *nats.Conn
	stream   string
	info     StreamInfo
	instance uint64
	kinds    map[int]pipeline.Kind
	opts     options
	sub      *nats.Subscription
	msgs     chan *nats.Msg
	// joinReason is why the first keyframe is asked for: a first
	// publisher is joined (KeyframeFollower), a later one replaces it
	// (KeyframeFailover).
	joinReason string
	keys       *pipeline.KeyframeThrottle

	// held are messages of other publishers of the stream, oldest first,
	// at most heldBytesLimit: after a failover the next owner publishes
	// before this node notices the old one is gone, and its first packets
	// (its first keyframe) are among them. replay is what the next
	// subscription reads before the channel: every node following since
	// before the failover then starts the new publisher on the same first
	// packet, so their timelines (and LL-HLS numbering) stay the same.
	held      []heldMsg
	heldBytes int
	replay    []*nats.Msg

	mu      sync.Mutex
	lastKey time.Time
}

// heldMsg is a media or event message of another publisher instance.
type heldMsg struct {
	m        *nats.Msg
	instance uint64
}

// heldBytesLimit bounds the other publishers' messages a subscription
// keeps: a few seconds of a full ladder.
const heldBytesLimit = 8 << 20

// hold keeps m, of publisher instance, for the next subscription.
func (s *subscription) hold(m *nats.Msg, instance uint64) {
	if instance == 0 {
		return // unreadable: newInstance never picks 0
	}
	s.held = append(s.held, heldMsg{m: m, instance: instance})
	s.heldBytes += len(m.Data)
	drop := 0
	for s.heldBytes > heldBytesLimit && drop < len(s.held) {
		s.heldBytes -= len(s.held[drop].m.Data)
		drop++
	}
	s.held = s.held[drop:]
}

// holdAny keeps a message read from the channel while no publisher is
// followed (between publishers), whichever instance it is from.
func (s *subscription) holdAny(m *nats.Msg) {
	kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	switch kind {
	case subjStats, subjTracks, subjStatus, subjCtl, subjTimeline, subjEvents:
	case subjEvent:
		var e pipeline.Event
		if json.Unmarshal(m.Data, &e) == nil {
			s.hold(m, eventInstance(e))
		}
	default:
		if s.opts.received != nil {
			s.opts.received(len(m.Data))
		}
		if h, _, err := decodeMessage(m.Data); err == nil {
			s.hold(m, h.instance)
		}
	}
}

// eventInstance is the publisher instance of an event message, 0 when
// unreadable.
func eventInstance(e pipeline.Event) uint64 {
	id, _ := strconv.ParseUint(e.Instance, 16, 64)
	return id
}

// drain moves what waits in the channel to the held messages.
func (s *subscription) drain() {
	for {
		select {
		case m := <-s.msgs:
			s.holdAny(m)
		default:
			return
		}
	}
}

// close ends the subscription's NATS subscription (shared with the
// subscriptions resubscribe made from it).
func (s *subscription) close() { _ = s.sub.Unsubscribe() }

// subscribe finds the stream's current publisher and subscribes to its
// subjects. It fails with ErrStreamNotFound when no publisher answers.
func subscribe(ctx context.Context, nc *nats.Conn, stream string, o options) (*subscription, error) {
	if err := pipeline.ValidStreamName(stream); err != nil {
		return nil, err
	}
	// Ask first, subscribe after: subscribed to media.<stream>.*, we would
	// answer "tracks" ourselves as far as NATS is concerned, and a missing
	// publisher would show as a timeout instead of "no responders". The
	// packets sent in between are not missed in any way that matters: a
	// subscriber starts at a keyframe it requests once subscribed.
	info, instance, err := askPublisher(ctx, nc, stream, o)
	if err != nil {
		return nil, err
	}
	s := newSubscription(nc, stream, o, info, instance, make(chan *nats.Msg, o.buffer))
	s.sub, err = nc.ChanSubscribe(o.prefixFor(stream)+"*", s.msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	// A round trip makes the server know the subscription before we
	// return: whatever is published afterwards reaches us.
	fctx, cancel := context.WithTimeout(ctx, o.requestTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		_ = s.sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	return s, nil
}

// askPublisher asks the stream's current publisher for its tracks and
// instance (ErrStreamNotFound when none answers in o.requestTimeout).
func askPublisher(ctx context.Context, nc *nats.Conn, stream string, o options) (StreamInfo, uint64, error) {
	var info StreamInfo
	rctx, cancel := context.WithTimeout(ctx, o.requestTimeout)
	err := requestJSON(rctx, nc, o.prefixFor(stream)+subjTracks, &info) // describe.go
	cancel()
	if err != nil {
		return info, 0, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	instance, err := strconv.ParseUint(info.Instance, 16, 64)
	if err != nil {
		return info, 0, fmt.Errorf("%w: %s instance %q", ErrWire, stream, info.Instance)
	}
	return info, instance, nil
}

// newSubscription is publisher instance's subscription, reading msgs (its
// NATS subscription is set by the caller).
func newSubscription(nc *nats.Conn, stream string, o options, info StreamInfo, instance uint64, msgs chan *nats.Msg) *subscription {
	s := &subscription{nc: nc, stream: stream, opts: o, info: info, instance: instance, msgs: msgs, joinReason: pipeline.KeyframeFollower}
	s.keys = pipeline.NewKeyframeThrottle(s.sendKeyframeRequest, keyframeFloodInterval)
	s.kinds = make(map[int]pipeline.Kind, len(info.Tracks))
	for _, t := range info.Tracks {
		s.kinds[t.ID] = t.Kind
	}
	return s
}

// resubscribe finds the stream's current publisher after prev's went
// away, keeping prev's NATS subscription: the new publisher's messages
// that arrived meanwhile are read first, in order, then the channel. prev
// is not used afterwards. It fails with ErrStreamNotFound when no publisher
// answers; prev is then still usable.
func resubscribe(ctx context.Context, prev *subscription, o options) (*subscription, error) {
	// Subscribed to media.<stream>.*, this node counts as a responder of
	// the request itself: no publisher shows as the timeout, not as "no
	// responders" (o.requestTimeout is short here).
	info, instance, err := askPublisher(ctx, prev.nc, prev.stream, o)
	if err != nil {
		return nil, err
	}
	prev.drain()
	s := newSubscription(prev.nc, prev.stream, o, info, instance, prev.msgs)
	s.sub = prev.sub
	for _, h := range prev.held {
		if h.instance == instance {
			s.replay = append(s.replay, h.m)
		} else {
			s.hold(h.m, h.instance)
		}
	}
	prev.held, prev.heldBytes = nil, 0
	return s, nil
}

// receive turns the publisher's messages into packets, handing each to
// emit and each status report to stats, until ctx ends (nil) or the
// publisher stops: nil when it ended cleanly, else why (ErrStreamGone).
// The NATS subscription stays: the caller closes it, or resubscribes with
// it.
func (s *subscription) receive(ctx context.Context, emit func(*pipeline.Packet, pipeline.Kind), stats func(pipeline.SourceStats), event func(pipeline.Event)) error {
	defer s.keys.Stop()
	var rx reassembler
	// Join at a keyframe: until one arrives, a video track's packets
	// cannot be decoded. Ask for one now rather than wait out the GOP.
	waitKey := map[int]bool{}
	for id, k := range s.kinds {
		if k == pipeline.KindVideo {
			waitKey[id] = true
		}
	}
	s.requestKeyframe(s.joinReason)
	lastHeard := time.Now()
	check := time.NewTicker(min(s.opts.staleAfter/4, 250*time.Millisecond))
	defer check.Stop()
	for {
		var m *nats.Msg
		replayed := len(s.replay) > 0
		if replayed {
			m, s.replay = s.replay[0], s.replay[1:]
		} else {
			select {
			case <-ctx.Done():
				return nil
			case <-check.C:
				switch {
				case s.nc.IsClosed():
					return fmt.Errorf("%w: %s: %w", ErrStreamGone, s.stream, nats.ErrConnectionClosed)
				case time.Since(lastHeard) > s.opts.staleAfter:
					return fmt.Errorf("%w: %s: publisher %s silent for %s", ErrStreamGone, s.stream, s.info.Instance, s.opts.staleAfter)
				case len(waitKey) > 0 && s.sinceKeyframeRequest() > keyframeRetry:
					// The request after a loss may have been coalesced into an
					// earlier one the job already answered, or lost: ask again
					// rather than wait out the GOP.
					s.requestKeyframe(pipeline.KeyframeFollower)
				}
				continue
			case m = <-s.msgs:
			}
		}
		kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		switch kind {
		case subjStats:
			var st StreamStatus
			if json.Unmarshal(m.Data, &st) != nil {
				continue
			}
			if st.Instance != s.info.Instance {
				// Another publisher of this stream: after a failover, the
				// new owner. Once ours has missed a report, end now rather
				// than wait out staleAfter, so the viewer re-subscribes
				// sooner. (While ours still reports, the other one is a
				// fenced old owner that has not noticed yet: ignore it.)
				if time.Since(lastHeard) > StatsInterval+StatsInterval/2 {
					return fmt.Errorf("%w: %s: publisher %s replaced by %s", ErrStreamGone, s.stream, s.info.Instance, st.Instance)
				}
				continue
			}
			lastHeard = time.Now()
			stats(st.Stats)
			if st.Ended {
				if st.Err != "" {
					return fmt.Errorf("%w: %s: publisher: %s", ErrStreamGone, s.stream, st.Err)
				}
				return nil
			}
		case subjEvent:
			var e pipeline.Event
			if json.Unmarshal(m.Data, &e) != nil {
				continue
			}
			if e.Instance != s.info.Instance {
				// Another publisher's: a fenced old owner, or the next
				// one, whose events wait with its media.
				s.hold(m, eventInstance(e))
				continue
			}
			event(e)
		case subjTracks, subjStatus, subjCtl, subjTimeline, subjEvents:
			// Requests and commands to the publisher: not media.
		default:
			if s.opts.received != nil && !replayed {
				s.opts.received(len(m.Data))
			}
			h, data, derr := decodeMessage(m.Data)
			// Another publisher's (or an unreadable header: instance 0,
			// which newInstance never picks), or a track the stream does
			// not have: held for the next subscription, or dropped.
			track := int(h.track)
			k, known := s.kinds[track]
			if h.instance != s.instance {
				if derr == nil {
					s.hold(m, h.instance)
				}
				continue
			}
			if !known {
				continue
			}
			if derr == nil && kind != strconv.Itoa(track) {
				derr = fmt.Errorf("%w: track %d on subject %s", ErrWire, track, m.Subject)
			}
			var p *pipeline.Packet
			lost := true
			if derr != nil {
				// A malformed message of our publisher's track: the packet
				// it belongs to cannot be trusted, so it is a loss (and
				// not a sign of life).
				rx.drop(h.track)
			} else {
				lastHeard = time.Now()
				p, lost = rx.push(h, data)
			}
			if lost && k == pipeline.KindVideo && !waitKey[track] {
				waitKey[track] = true
				s.requestKeyframe(pipeline.KeyframeFollower)
			}
			if p == nil {
				continue
			}
			if waitKey[track] {
				if !p.Keyframe {
					continue
				}
				delete(waitKey, track)
			}
			emit(p, k)
		}
	}
}

// keyframeRetry is how often a track still waiting for a keyframe asks
// again.
const keyframeRetry = time.Second

// sinceKeyframeRequest is the time since the last keyframe request.
func (s *subscription) sinceKeyframeRequest() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.lastKey)
}

// keyframeFloodInterval spaces one subscription's keyframe requests of one
// reason. It only keeps NATS from a flood: which requests become IDRs is
// the job's keyframe budget.
const keyframeFloodInterval = 100 * time.Millisecond

// requestKeyframe asks the publisher's job for an IDR for reason, at most
// once per keyframeFloodInterval per reason (later ones wait for its end).
// Safe from any goroutine.
func (s *subscription) requestKeyframe(reason string) { s.keys.Request(reason) }

func (s *subscription) sendKeyframeRequest(reason string) {
	s.mu.Lock()
	s.lastKey = time.Now()
	s.mu.Unlock()
	_ = s.nc.Publish(s.opts.prefixFor(s.stream)+subjCtl, []byte(ctlKeyframe+":"+reason))
}
