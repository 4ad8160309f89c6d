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

// mediaWatcher follows the stream of every running job into the registry,
// for this node's outputs, and takes it out when the job ends. It is
// driven by the job agent's KV watch (JobsChanged) and by followed streams
// ending; it only sets a timer while a running job's stream has not
// answered yet.
type mediaWatcher struct {
	agent   *jobs.Node
	nc      *nats.Conn
	streams *pipeline.Registry
	log     *slog.Logger

	followed map[string]*relay.Stream
	ended    chan struct{} // a followed stream ended
	waiters  sync.WaitGroup
}

func (w *mediaWatcher) run(ctx context.Context) {
	w.followed = map[string]*relay.Stream{}
	w.ended = make(chan struct{}, 1)
	defer func() {
		for id, s := range w.followed {
			w.streams.Remove(id)
			_ = s.Close()
		}
		w.waiters.Wait()
	}()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.agent.JobsChanged():
		case <-w.ended:
		case <-retry.C:
		}
		if w.sync(ctx) {
			retry.Reset(followRetry)
		}
	}
}

// sync brings the followed set in line with the jobs; it reports whether a
// running job's stream is still missing.
func (w *mediaWatcher) sync(ctx context.Context) (missing bool) {
	known, ok := w.agent.KnownJobs()
	if !ok {
		return false // not loaded yet, or reloading after a reconnect: keep what is followed
	}
	active := map[string]bool{}
	for _, j := range known {
		id := j.Spec.ID
		switch j.State {
		case jobs.StateRunning, jobs.StateStarting, jobs.StatePending:
			active[id] = true // a followed stream survives a restart or failover
		}
		if j.State != jobs.StateRunning || w.followed[id] != nil {
			continue
		}
		s, err := relay.Follow(ctx, w.nc, id, relay.WithLogger(w.log), relay.WithRequestTimeout(200*time.Millisecond))
		if err != nil {
			missing = true // its worker has not announced the stream yet
			continue
		}
		if err := w.streams.Add(id, s, j.Spec.Outputs...); err != nil {
			_ = s.Close()
			continue
		}
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
		if ended || !active[id] {
			w.streams.Remove(id)
			_ = s.Close()
			delete(w.followed, id)
		}
	}
	return missing
}
