package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/relay"
)

// followRetry is how soon a running job whose stream did not answer yet
// (its worker reports running just before it announces the stream) is
// tried again.
const followRetry = 250 * time.Millisecond

// mediaWatcher offers the stream of every running job in the registry and
// follows the ones this node's outputs use (all of them with
// node.follow: always, and those of node.follow_streams), taking a stream
// out when it has been idle for node.follow_idle or its job ends. It is
// driven by the job agent's KV watch (JobsChanged), by requests waiting
// for an offered stream (Registry.Demanded) and by followed streams
// ending; it sets a timer only while a wanted stream has not answered yet
// or a followed one may become idle.
type mediaWatcher struct {
	agent   *jobs.Node
	nc      *nats.Conn
	streams *pipeline.Registry
	log     *slog.Logger
	always  bool            // node.follow: always
	pinned  map[string]bool // node.follow_streams
	idle    time.Duration   // node.follow_idle
	metrics *relayMetrics

	followed map[string]*relay.Stream
	offered  map[string]bool
	ended    chan struct{} // a followed stream ended
	waiters  sync.WaitGroup
}

func (w *mediaWatcher) run(ctx context.Context) {
	w.followed = map[string]*relay.Stream{}
	w.offered = map[string]bool{}
	w.ended = make(chan struct{}, 1)
	defer func() {
		for id, s := range w.followed {
			w.streams.Remove(id)
			_ = s.Close()
		}
		w.metrics.followed.Store(0)
		w.waiters.Wait()
	}()
	retry := time.NewTimer(0)
	defer retry.Stop()
	demanded := w.streams.Demanded()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.agent.JobsChanged():
		case <-demanded:
		case <-w.ended:
		case <-retry.C:
		}
		if next := w.sync(ctx, time.Now()); next > 0 {
			retry.Reset(next)
		}
	}
}

// wanted reports whether id is to be followed now: always, pinned, held by
// a session or requested within the idle timeout.
func (w *mediaWatcher) wanted(id string, now time.Time) (ok bool, until time.Time) {
	if w.always || w.pinned[id] {
		return true, time.Time{}
	}
	last, held := w.streams.LastUse(id)
	if held {
		// Its release is a use. A request's (Registry.Use) is not
		// signalled: look again within the idle timeout.
		return true, now.Add(w.idle)
	}
	until = last.Add(w.idle)
	return !last.IsZero() && now.Before(until), until
}

// sync brings the offered and followed sets in line with the jobs and
// their use; it returns when to look again (0: only on an event).
func (w *mediaWatcher) sync(ctx context.Context, now time.Time) (next time.Duration) {
	known, ok := w.agent.KnownJobs()
	if !ok {
		return 0 // not loaded yet, or reloading after a reconnect: keep what is followed
	}
	again := func(d time.Duration) {
		if next == 0 || d < next {
			next = d
		}
	}
	active := map[string]bool{}
	for _, j := range known {
		id := j.Spec.ID
		switch j.State {
		case jobs.StateRunning, jobs.StateStarting, jobs.StatePending:
			active[id] = true // a followed stream survives a restart or failover
		}
		if j.State != jobs.StateRunning {
			continue
		}
		w.streams.Offer(id, j.Spec.Outputs...)
		w.offered[id] = true
		if w.followed[id] != nil {
			continue
		}
		if ok, _ := w.wanted(id, now); !ok {
			continue
		}
		s, err := relay.Follow(ctx, w.nc, id, relay.WithLogger(w.log), relay.WithRequestTimeout(200*time.Millisecond),
			relay.WithReceivedBytes(w.metrics.counter(id)))
		if err != nil {
			again(followRetry) // its worker has not announced the stream yet
			continue
		}
		if err := w.streams.Add(id, s, j.Spec.Outputs...); err != nil {
			_ = s.Close()
			continue
		}
		w.log.Debug("following stream", "stream", id, "always", w.always || w.pinned[id])
		w.followed[id] = s
		w.waiters.Go(func() { // ends with the stream, which run closes last
			<-s.Done()
			select {
			case w.ended <- struct{}{}:
			default:
			}
		})
	}
	for id, s := range w.followed {
		ended := false
		select {
		case <-s.Done():
			ended = true
		default:
		}
		want, until := w.wanted(id, now)
		if ended || !active[id] || !want {
			if !want && !ended && active[id] {
				w.log.Debug("letting go of idle stream", "stream", id, "idle", w.idle)
			}
			w.streams.Remove(id)
			_ = s.Close()
			delete(w.followed, id)
			if ended && active[id] && want {
				again(followRetry) // follow it again once its job answers
			}
			continue
		}
		if !until.IsZero() {
			again(until.Sub(now) + time.Millisecond)
		}
	}
	for id := range w.offered {
		if !active[id] && w.followed[id] == nil {
			w.streams.Withdraw(id)
			w.metrics.forget(id)
			delete(w.offered, id)
		}
	}
	w.metrics.followed.Store(int64(len(w.followed)))
	return next
}
