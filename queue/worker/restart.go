package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prism-streaming/prism/queue/jobs"
)

// maxNeverRan is how many attempts in a row a live job's input may fail
// to come up, when it never came up at all, before the job fails: as many
// as the node allows failed attempts (jobs.DefaultMaxAttempts). An input
// that never worked is most likely misconfigured; one that worked once
// (a camera that went away) is retried for as long as the job lives.
const maxNeverRan = jobs.DefaultMaxAttempts

// runRestarting runs attempts of a job until one ends it: a crash or other
// failure is returned for the node to count; an input that ended or cannot
// be reached ends the job, unless spec.Restart keeps a live stream up by
// trying again, paced by policy (the node's own retry policy, so one job
// backs off the same way whichever side retries). A live job whose input
// never came up in maxNeverRan attempts fails with the last attempt's
// error. running is passed on to be called once, however many attempts
// run.
func runRestarting(ctx context.Context, spec jobs.Spec, policy jobs.RetryPolicy, log *slog.Logger, running func(),
	attempt func(running func()) (code int, err error)) error {
	policy = policy.OrDefault()
	var once sync.Once
	var ran atomic.Bool // some attempt reported running
	report := func() {
		ran.Store(true)
		once.Do(running)
	}
	failures, neverRan := 0, 0
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
		// A live stream: its source may come back, if it ever was there.
		if !ran.Load() {
			neverRan++
			if neverRan >= maxNeverRan {
				if err == nil {
					err = errors.New("the input ended before it ran")
				}
				return fmt.Errorf("input never came up in %d attempts, last: %w", neverRan, err)
			}
		}
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
