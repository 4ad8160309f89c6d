package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prism-streaming/prism/pipeline"
)

// FollowedJob is a stream as the outputs of a node see it: one pipeline.Job
// that outlives the publishers behind it. When a publisher goes away (its
// node died, the job moved or its input restarted) and another takes over,
// the followed job re-subscribes, shifts the new publisher's timestamps so
// they continue where the old ones stopped, marks the first packets as a
// discontinuity and asks for a keyframe: players and WebRTC sessions keep
// going after a short gap.
type FollowedJob struct {
	nc     *nats.Conn
	stream string
	log    *slog.Logger
	opts   []MediaOption

	fanout pipeline.Fanout
	tracks []pipeline.Track
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	current pipeline.Job // the publisher followed now; nil between publishers
	stats   pipeline.JobStats
	err     error
	changes int // publisher changes survived
}

var _ pipeline.Job = (*FollowedJob)(nil)

// ErrTracksChanged ends a followed job whose new publisher has other tracks
// (another ladder): outputs must start over with the new ones.
var ErrTracksChanged = errors.New("the stream's tracks changed")

// FollowStream subscribes to stream and keeps following it across
// publishers until ctx ends, Close, the stream's tracks change, or no
// publisher appears within gone.
func FollowStream(ctx context.Context, nc *nats.Conn, stream string, gone time.Duration, log *slog.Logger, opts ...MediaOption) (*FollowedJob, error) {
	first, err := SubscribeMedia(ctx, nc, stream, opts...)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	f := &FollowedJob{nc: nc, stream: stream, log: log, opts: opts, tracks: first.Tracks(), current: first, done: make(chan struct{})}
	f.ctx, f.cancel = context.WithCancel(ctx)
	go f.run(first, gone) // owned by f: ends on Close, ctx or when the stream is gone
	return f, nil
}

func (f *FollowedJob) run(job pipeline.Job, gone time.Duration) {
	defer close(f.done)
	defer f.fanout.Close()
	var shift timeShift
	for {
		f.forward(job, &shift)
		job.Close()
		f.mu.Lock()
		f.current = nil
		f.mu.Unlock()
		if f.ctx.Err() != nil {
			return
		}
		f.log.Info("stream publisher went away, waiting for the next", "stream", f.stream, "reason", job.Err())
		next, err := f.await(gone)
		if err != nil {
			f.end(err)
			return
		}
		if !sameTracks(f.tracks, next.Tracks()) {
			next.Close()
			f.end(fmt.Errorf("%s: %w", f.stream, ErrTracksChanged))
			return
		}
		f.mu.Lock()
		f.current, f.changes = next, f.changes+1
		f.mu.Unlock()
		shift.restart()
		job = next
		job.RequestKeyframe()
	}
}

// await polls for a new publisher for at most gone.
func (f *FollowedJob) await(gone time.Duration) (pipeline.Job, error) {
	deadline := time.Now().Add(gone)
	for {
		next, err := SubscribeMedia(f.ctx, f.nc, f.stream, append(f.opts, WithRequestTimeout(250*time.Millisecond))...)
		if err == nil {
			return next, nil
		}
		if f.ctx.Err() != nil {
			return nil, f.ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: no publisher for %s: %w", f.stream, gone, err)
		}
		select {
		case <-f.ctx.Done():
			return nil, f.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// forward copies one publisher's packets to the fan-out until it ends.
func (f *FollowedJob) forward(job pipeline.Job, shift *timeShift) {
	r := job.Subscribe(pipeline.WithName("follow:" + f.stream))
	defer r.Close()
	for {
		p, err := r.Read(f.ctx)
		if err != nil {
			f.mu.Lock()
			f.stats = job.Stats()
			f.mu.Unlock()
			return
		}
		if p.Track < 0 || p.Track >= len(f.tracks) {
			continue
		}
		tr := f.tracks[p.Track]
		out := shift.apply(p, tr)
		if out == nil {
			continue
		}
		f.fanout.Publish(out, tr.Kind)
	}
}

func (f *FollowedJob) end(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
	f.log.Warn("stream ended", "stream", f.stream, "error", err)
}

func sameTracks(a, b []pipeline.Track) bool {
	return slices.EqualFunc(a, b, func(x, y pipeline.Track) bool {
		return x.Name == y.Name && x.Kind == y.Kind && x.Codec == y.Codec && x.Width == y.Width &&
			x.Height == y.Height && x.ClockRate == y.ClockRate
	})
}

// timeShift keeps timestamps continuous across publishers: each new
// publisher starts its own clock near zero, so one offset in seconds, taken
// from where the previous publisher's newest packet ended, is added to all
// its tracks (keeping audio and video in sync).
type timeShift struct {
	offset  float64       // seconds added to the current publisher
	end     float64       // end of the newest packet forwarded, in seconds
	pending bool          // a publisher change waits for its first video keyframe
	fresh   map[int]bool  // tracks that still need their discontinuity mark
	lastDTS map[int]int64 // per track, to keep DTS strictly increasing
	started bool
}

func (s *timeShift) restart() {
	s.pending, s.started = true, false
	s.fresh = map[int]bool{}
}

func (s *timeShift) apply(p *pipeline.Packet, tr pipeline.Track) *pipeline.Packet {
	if s.lastDTS == nil {
		s.lastDTS = map[int]int64{}
	}
	rate := float64(tr.ClockRate)
	if s.pending {
		// Start the new publisher at a video keyframe, so the first picture
		// every output sends after the gap decodes.
		if tr.Kind != pipeline.KindVideo || !p.Keyframe {
			return nil
		}
		s.offset = s.end + 1.0/30 - float64(p.PTS)/rate
		s.pending = false
	}
	q := *p
	shift := int64(s.offset * rate)
	q.PTS += shift
	q.DTS += shift
	if last, ok := s.lastDTS[p.Track]; ok && q.DTS <= last {
		return nil // overlap with the previous publisher
	}
	s.lastDTS[p.Track] = q.DTS
	if s.fresh != nil && !s.fresh[p.Track] {
		s.fresh[p.Track] = true
		q.Discontinuity = true
	}
	if end := float64(q.PTS+q.Duration) / rate; end > s.end {
		s.end = end
	}
	return &q
}

// Tracks implements pipeline.Job.
func (f *FollowedJob) Tracks() []pipeline.Track { return f.tracks }

// Subscribe implements pipeline.Job.
func (f *FollowedJob) Subscribe(opts ...pipeline.ReaderOption) *pipeline.Reader {
	return f.fanout.Subscribe(opts...)
}

// RequestKeyframe implements pipeline.Job.
func (f *FollowedJob) RequestKeyframe() {
	f.mu.Lock()
	cur := f.current
	f.mu.Unlock()
	if cur != nil {
		cur.RequestKeyframe()
	}
}

// Stats implements pipeline.Job: the current publisher's.
func (f *FollowedJob) Stats() pipeline.JobStats {
	f.mu.Lock()
	cur, st := f.current, f.stats
	f.mu.Unlock()
	if cur != nil {
		return cur.Stats()
	}
	return st
}

// Changes returns how many publisher changes the stream survived.
func (f *FollowedJob) Changes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changes
}

// Done implements pipeline.Job.
func (f *FollowedJob) Done() <-chan struct{} { return f.done }

// Err implements pipeline.Job.
func (f *FollowedJob) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Close implements pipeline.Job.
func (f *FollowedJob) Close() error {
	f.cancel()
	<-f.done
	return nil
}
