package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prism-streaming/prism/queue/jobs"
)

// runRestarting runs attempts of a job until one ends it: a crash or other
// failure is returned for the node to count; an input that ended or cannot
// be reached ends the job, unless spec.Restart keeps a live stream up by
// trying again, paced by policy (the node's own retry policy, so one job
// backs off the same way whichever side retries). running is passed on to
// be called once, however many attempts run.
func runRestarting(ctx context.Context, spec jobs.Spec, policy jobs.RetryPolicy, log *slog.Logger, running func(),
	attempt func(running func()) (code int, err error)) error {
	policy = policy.OrDefault()
	var once sync.Once
	report := func() { once.Do(running) }
	failures := 0
	for {
		started := time.Now()
		code, err := attempt(report)
		if ctx.Err() != nil {
			return nil // stopped, lost ownership or draining
		}
		if !inputGone(code) {
			return err
		}
		if !spec.Restart {
			if code == ExitInputEnded {
				return nil
			}
			return err
		}
		// A live stream: its source may come back.
		if policy.Stable(time.Since(started)) {
			failures = 0
		}
		failures++
		wait := policy.Delay(failures)
		log.Warn("input ended or unavailable, starting again", "job", spec.ID, "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
