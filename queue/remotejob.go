package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prism-streaming/prism/pipeline"
)

// MediaOption tunes SubscribeMedia.
type MediaOption func(*mediaOptions)

type mediaOptions struct {
	staleAfter     time.Duration
	requestTimeout time.Duration
	buffer         int
}

// WithStaleAfter ends the subscription (ErrStreamGone) when its publisher
// was silent this long (default 3 StatsIntervals).
func WithStaleAfter(d time.Duration) MediaOption { return func(o *mediaOptions) { o.staleAfter = d } }

// WithRequestTimeout bounds the track-list request (default 2 s).
func WithRequestTimeout(d time.Duration) MediaOption {
	return func(o *mediaOptions) { o.requestTimeout = d }
}

// WithMessageBuffer sets how many messages may wait for the receiving
// goroutine before NATS drops them (default 8192, about 30 s of a four-rung
// ladder with audio; drops show up as lost packets).
func WithMessageBuffer(n int) MediaOption { return func(o *mediaOptions) { o.buffer = n } }

// RemoteJob is a job running elsewhere, seen through its media subjects:
// it implements pipeline.Job, so outputs treat it like a local transcoder.
// It follows one publisher instance: when that publisher stops (the job
// stopped or moved to another node), the RemoteJob ends and the caller
// subscribes again.
type RemoteJob struct {
	nc       *nats.Conn
	stream   string
	info     StreamInfo
	instance uint64
	kinds    map[int]pipeline.Kind
	opts     mediaOptions
	fanout   pipeline.Fanout
	sub      *nats.Subscription
	msgs     chan *nats.Msg

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	stats   pipeline.JobStats
	err     error
	lastKey time.Time
}

var _ pipeline.Job = (*RemoteJob)(nil)

// SubscribeMedia follows a stream published with PublishMedia. It fails
// with ErrStreamNotFound when no publisher answers. The job ends when ctx
// ends, on Close, or when the publisher stops (Err says why).
func SubscribeMedia(ctx context.Context, nc *nats.Conn, stream string, opts ...MediaOption) (pipeline.Job, error) {
	if err := pipeline.ValidStreamName(stream); err != nil {
		return nil, err
	}
	o := mediaOptions{staleAfter: 3 * StatsInterval, requestTimeout: 2 * time.Second, buffer: 8192}
	for _, f := range opts {
		f(&o)
	}
	r := &RemoteJob{nc: nc, stream: stream, opts: o, msgs: make(chan *nats.Msg, o.buffer), done: make(chan struct{})}
	prefix := mediaPrefix(stream)
	// Ask first, subscribe after: subscribed to media.<stream>.*, we would
	// answer "tracks" ourselves as far as NATS is concerned, and a missing
	// publisher would show as a timeout instead of "no responders". The
	// packets sent in between are not missed in any way that matters: a
	// subscriber starts at a keyframe it requests once subscribed.
	rctx, cancel := context.WithTimeout(ctx, o.requestTimeout)
	reply, err := nc.RequestWithContext(rctx, prefix+subjTracks, nil)
	cancel()
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: %s: %w", ErrStreamNotFound, stream, err)
		}
		return nil, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	if err := json.Unmarshal(reply.Data, &r.info); err != nil {
		return nil, fmt.Errorf("%w: %s track list: %w", ErrWire, stream, err)
	}
	r.instance, err = strconv.ParseUint(r.info.Instance, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %s instance %q", ErrWire, stream, r.info.Instance)
	}
	r.sub, err = nc.ChanSubscribe(prefix+"*", r.msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	// A round trip makes the server know the subscription before we
	// return: whatever is published afterwards reaches us.
	fctx, cancel := context.WithTimeout(ctx, o.requestTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		_ = r.sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", stream, err)
	}
	r.kinds = make(map[int]pipeline.Kind, len(r.info.Tracks))
	for _, t := range r.info.Tracks {
		r.kinds[t.ID] = t.Kind
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(1)
	go r.receive()
	return r, nil
}

// Info returns the publisher's stream description.
func (r *RemoteJob) Info() StreamInfo { return r.info }

// receive is the job's one goroutine: it turns messages into packets for
// the fan-out until the job ends.
func (r *RemoteJob) receive() {
	defer r.wg.Done()
	var err error
	defer func() { r.end(err) }()
	var rx reassembler
	// Join at a keyframe: until one arrives, a video track's packets
	// cannot be decoded. Ask for one now rather than wait out the GOP.
	waitKey := map[int]bool{}
	for id, k := range r.kinds {
		if k == pipeline.KindVideo {
			waitKey[id] = true
		}
	}
	r.RequestKeyframe()
	lastHeard := time.Now()
	check := time.NewTicker(min(r.opts.staleAfter/4, 250*time.Millisecond))
	defer check.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-check.C:
			switch {
			case r.nc.IsClosed():
				err = fmt.Errorf("%w: %s: %w", ErrStreamGone, r.stream, nats.ErrConnectionClosed)
				return
			case time.Since(lastHeard) > r.opts.staleAfter:
				err = fmt.Errorf("%w: %s: publisher %s silent for %s", ErrStreamGone, r.stream, r.info.Instance, r.opts.staleAfter)
				return
			}
		case m := <-r.msgs:
			kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
			switch kind {
			case subjStats:
				var st StreamStatus
				if json.Unmarshal(m.Data, &st) != nil {
					continue
				}
				if st.Instance != r.info.Instance {
					// Another publisher of this stream: after a failover, the
					// new owner. Once ours has missed a report, end now rather
					// than wait out staleAfter, so the viewer re-subscribes
					// sooner. (While ours still reports, the other one is a
					// fenced old owner that has not noticed yet: ignore it.)
					if time.Since(lastHeard) > StatsInterval+StatsInterval/2 {
						err = fmt.Errorf("%w: %s: publisher %s replaced by %s", ErrStreamGone, r.stream, r.info.Instance, st.Instance)
						return
					}
					continue
				}
				lastHeard = time.Now()
				r.mu.Lock()
				r.stats = st.Stats
				r.mu.Unlock()
				if st.Ended {
					if st.Err != "" {
						err = fmt.Errorf("%w: %s: publisher: %s", ErrStreamGone, r.stream, st.Err)
					}
					return
				}
			case subjTracks, subjCtl:
			default:
				h, data, derr := decodeMessage(m.Data)
				if derr != nil || h.instance != r.instance {
					continue
				}
				lastHeard = time.Now()
				p, lost := rx.push(h, data)
				track := int(h.track)
				if lost && r.kinds[track] == pipeline.KindVideo && !waitKey[track] {
					waitKey[track] = true
					r.RequestKeyframe()
				}
				if p == nil {
					continue
				}
				k, known := r.kinds[track]
				if !known {
					continue
				}
				if waitKey[track] {
					if !p.Keyframe {
						continue
					}
					delete(waitKey, track)
				}
				r.fanout.Publish(p, k)
			}
		}
	}
}

// end records why the job ended and releases everything; called once, by
// receive.
func (r *RemoteJob) end(err error) {
	_ = r.sub.Unsubscribe()
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
	r.fanout.Close()
	close(r.done)
}

// Tracks implements pipeline.Job.
func (r *RemoteJob) Tracks() []pipeline.Track { return r.info.Tracks }

// Subscribe implements pipeline.Job.
func (r *RemoteJob) Subscribe(opts ...pipeline.ReaderOption) *pipeline.Reader {
	return r.fanout.Subscribe(opts...)
}

// RequestKeyframe implements pipeline.Job: it asks the publisher's job,
// at most every 100 ms (the job coalesces requests anyway).
func (r *RemoteJob) RequestKeyframe() {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.lastKey) < 100*time.Millisecond {
		r.mu.Unlock()
		return
	}
	r.lastKey = now
	r.mu.Unlock()
	_ = r.nc.Publish(mediaPrefix(r.stream)+subjCtl, []byte(ctlKeyframe))
}

// Stats implements pipeline.Job: the publisher's latest report.
func (r *RemoteJob) Stats() pipeline.JobStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Done implements pipeline.Job.
func (r *RemoteJob) Done() <-chan struct{} { return r.done }

// Err implements pipeline.Job.
func (r *RemoteJob) Err() error {
	select {
	case <-r.done:
	default:
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close implements pipeline.Job. It stops following the stream (the
// remote job keeps running) and waits for the receiving goroutine.
func (r *RemoteJob) Close() error {
	r.cancel()
	r.wg.Wait()
	return r.Err()
}
