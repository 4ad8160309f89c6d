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

	mu      sync.Mutex
	lastKey time.Time
}

// subscribe finds the stream's current publisher and subscribes to its
// subjects. It fails with ErrStreamNotFound when no publisher answers.
func subscribe(ctx context.Context, nc *nats.Conn, stream string, o options) (*subscription, error) {
	if err := pipeline.ValidStreamName(stream); err != nil {
		return nil, err
	}
	s := &subscription{nc: nc, stream: stream, opts: o, msgs: make(chan *nats.Msg, o.buffer), joinReason: pipeline.KeyframeFollower}
	s.keys = pipeline.NewKeyframeThrottle(s.sendKeyframeRequest, keyframeFloodInterval)
	prefix := o.prefixFor(stream)
	// Ask first, subscribe after: subscribed to media.<stream>.*, we would
	// answer "tracks" ourselves as far as NATS is concerned, and a missing
	// publisher would show as a timeout instead of "no responders". The
	// packets sent in between are not missed in any way that matters: a
	// subscriber starts at a keyframe it requests once subscribed.
	rctx, cancel := context.WithTimeout(ctx, o.requestTimeout)
	err := requestJSON(rctx, nc, prefix+subjTracks, &s.info) // describe.go
	cancel()
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	s.instance, err = strconv.ParseUint(s.info.Instance, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %s instance %q", ErrWire, stream, s.info.Instance)
	}
	s.sub, err = nc.ChanSubscribe(prefix+"*", s.msgs)
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
	s.kinds = make(map[int]pipeline.Kind, len(s.info.Tracks))
	for _, t := range s.info.Tracks {
		s.kinds[t.ID] = t.Kind
	}
	return s, nil
}

// receive turns the publisher's messages into packets, handing each to
// emit and each status report to stats, until ctx ends (nil) or the
// publisher stops: nil when it ended cleanly, else why (ErrStreamGone). It
// unsubscribes before returning.
func (s *subscription) receive(ctx context.Context, emit func(*pipeline.Packet, pipeline.Kind), stats func(pipeline.SourceStats), event func(pipeline.Event)) error {
	defer func() { _ = s.sub.Unsubscribe() }()
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
		case m := <-s.msgs:
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
				if json.Unmarshal(m.Data, &e) != nil || e.Instance != s.info.Instance {
					continue // another publisher's: a fenced old owner
				}
				event(e)
			case subjTracks, subjStatus, subjCtl, subjTimeline, subjEvents:
				// Requests and commands to the publisher: not media.
			default:
				if s.opts.received != nil {
					s.opts.received(len(m.Data))
				}
				h, data, derr := decodeMessage(m.Data)
				// Another publisher's (or an unreadable header: instance 0,
				// which newInstance never picks), or a track the stream does
				// not have: nothing is kept for it.
				track := int(h.track)
				k, known := s.kinds[track]
				if h.instance != s.instance || !known {
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
