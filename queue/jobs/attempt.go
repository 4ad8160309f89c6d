package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// attempt is one run of one job on this node, from a successful claim to
// the record of how it ended. Its goroutine is the only writer of the job
// while it owns it: it renews the lease on every heartbeat and stops the
// runner as soon as a write shows that the job is no longer its own.
type attempt struct {
	node *Node
	id   string
	cost float64
	job  *Job // the record as last written or adopted; owned by the run goroutine

	mu     sync.Mutex
	latest *Job          // newest record seen by the watcher, for the run goroutine
	seen   chan struct{} // signals latest

	handback chan struct{} // closed: drain, give the job back
	abandon  chan struct{} // closed: stop at once, write nothing
	done     chan struct{} // closed when the attempt ended and released its capacity
	hbOnce   sync.Once
	abOnce   sync.Once
	abWhy    string
}

// ending is how an attempt ends and what it writes.
type ending int

const (
	endStopped  ending = iota // stop requested, or the input ended: stopped
	endFailed                 // runner error or start timeout: retry or failed
	endHandBack               // drain: pending for another node
	endLost                   // another writer owns the job now: write nothing
	endAbandon                // connection closed or node closed: write nothing
)

// reserve adds an attempt for j to the node, holding its capacity, before
// the claim is written: two claims on one node cannot both fit in the room
// for one. It returns nil when the node cannot take j.
func (n *Node) reserve(j *Job) *attempt {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.canTakeLocked(j) {
		return nil
	}
	a := &attempt{
		node: n, id: j.Spec.ID, cost: j.Cost,
		seen: make(chan struct{}, 1), handback: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{}),
	}
	n.attempts[a.id] = a
	n.used += a.cost
	return a
}

// reprice replaces the capacity the attempt holds with its real cost.
func (a *attempt) reprice(c float64) {
	n := a.node
	n.mu.Lock()
	if n.attempts[a.id] == a {
		n.used += c - a.cost
	}
	a.cost = c
	n.mu.Unlock()
	n.poke(n.wake)
	n.poke(n.beatCh)
}

// release gives the attempt's capacity back.
func (a *attempt) release() {
	n := a.node
	n.mu.Lock()
	if n.attempts[a.id] == a {
		delete(n.attempts, a.id)
		n.used -= a.cost
		if len(n.attempts) == 0 {
			n.used = 0 // no float drift
		}
	}
	n.mu.Unlock()
	close(a.done)
	n.poke(n.wake)
	n.poke(n.beatCh)
}

// claim makes this node the owner of j (pending, or with an expired lease)
// and starts running it. It returns false if the node has no room or
// another writer got there first.
func (n *Node) claim(j *Job, reason string, attempts int) bool {
	a := n.reserve(j)
	if a == nil {
		return false
	}
	c := *j
	c.State, c.Owner, c.Reason, c.Attempts = StateStarting, n.ID, reason, attempts
	c.Lease, c.NotBefore = time.Now().Add(n.LeaseTTL).UTC(), time.Time{}
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	claimed, err := n.Store.Update(ctx, &c)
	cancel()
	if err != nil {
		a.release()
		if errors.Is(err, ErrConflict) {
			n.refreshJob(j.Spec.ID)
		} else {
			n.log.Debug("claim failed", "job", j.Spec.ID, "err", err)
		}
		return false
	}
	a.job = claimed
	n.log.Info("job claimed", "job", j.Spec.ID, "revision", claimed.Revision, "attempts", attempts, "reason", reason)
	n.wg.Add(1)
	go a.run()
	return true
}

// refreshJob re-reads a job whose write conflicted, so the view stops
// offering a decision based on an old revision.
func (n *Node) refreshJob(id string) {
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	defer cancel()
	if j, err := n.Store.Get(ctx, id); err == nil {
		n.view.refresh(j)
	}
}

// observe passes a newer record to the run goroutine without blocking the
// watcher.
func (a *attempt) observe(j *Job) {
	a.mu.Lock()
	a.latest = j
	a.mu.Unlock()
	select {
	case a.seen <- struct{}{}:
	default:
	}
}

func (a *attempt) handBack() { a.hbOnce.Do(func() { close(a.handback) }) }

func (a *attempt) abandonRun(why string) {
	a.abOnce.Do(func() {
		a.abWhy = why
		close(a.abandon)
	})
}

// run is the attempt's goroutine.
func (a *attempt) run() {
	n := a.node
	defer n.wg.Done()
	defer a.release()
	log := n.log.With("job", a.id)

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	runningCh := make(chan struct{})
	var runningOnce sync.Once
	costCh := make(chan float64, 1)
	runCtx = WithCostReporter(runCtx, func(c float64) {
		select { // the latest report wins
		case <-costCh:
		default:
		}
		costCh <- c
	})
	var progressMu sync.Mutex
	progress := ""
	runCtx = WithProgressReporter(runCtx, func(what string) {
		progressMu.Lock()
		progress = what
		progressMu.Unlock()
	})
	result := make(chan error, 1)
	spec := a.job.Spec
	go func() { // owned by this attempt: run waits for result before returning
		result <- n.Runner.Run(runCtx, spec, func() { runningOnce.Do(func() { close(runningCh) }) })
	}()

	renew := time.NewTicker(n.Heartbeat)
	defer renew.Stop()
	startTimer := time.NewTimer(n.StartTimeout)
	defer startTimer.Stop()
	lastRenew := time.Now()
	state := StateStarting // what renewals write; running once the runner says so
	var runningSince time.Time
	var runErr error
	runnerDone := false
	var end ending
	reason := ""

loop:
	for {
		select {
		case <-runningCh:
			runningCh = nil
			runningSince = time.Now()
			startTimer.Stop()
			state = StateRunning
			next := *a.job
			next.State = state
			if e, ok := a.renewWith(&next, &lastRenew); !ok {
				end = e
				break loop
			}
			log.Info("job running", "revision", a.job.Revision)
		case c := <-costCh:
			a.reprice(c)
			next := *a.job
			next.State, next.Cost = state, c
			if e, ok := a.renewWith(&next, &lastRenew); !ok {
				end = e
				break loop
			}
			log.Info("job repriced for its source", "cost", formatRate(c))
		case <-renew.C:
			next := *a.job
			next.State = state // a failed write of "running" is repeated here
			if !runningSince.IsZero() && n.Retry.Stable(time.Since(runningSince)) {
				next.Attempts = 0 // it runs: earlier failures no longer count
			}
			if e, ok := a.renewWith(&next, &lastRenew); !ok {
				end = e
				break loop
			}
		case <-startTimer.C:
			if runningSince.IsZero() {
				end, reason = endFailed, fmt.Sprintf("did not start within %s", n.StartTimeout)
				progressMu.Lock()
				if progress != "" {
					reason += ": " + progress
				}
				progressMu.Unlock()
				break loop
			}
		case runErr = <-result:
			runnerDone = true
			if runErr == nil {
				end, reason = endStopped, "input ended"
			} else {
				end, reason = endFailed, runErr.Error()
			}
			break loop
		case <-a.seen:
			if e, changed := a.checkObserved(); changed {
				end = e
				if e == endStopped {
					reason = "stopped by request"
				}
				break loop
			}
		case <-a.handback:
			end, reason = endHandBack, "handed back by node "+n.ID+" (draining)"
			break loop
		case <-a.abandon:
			end = endAbandon
			break loop
		}
	}

	if !runnerDone {
		cancelRun()
		// While the runner winds down, an owner that still owns the job
		// keeps its lease, so nobody starts a second copy meanwhile.
		keep := end == endStopped || end == endFailed || end == endHandBack
		a.waitRunner(result, renew.C, keep, &lastRenew, &end)
	}
	switch end {
	case endLost:
		log.Warn("job lost: another node owns it now; media stopped")
		return
	case endAbandon:
		log.Warn("job abandoned without release", "why", a.abWhy)
		return
	}
	a.finish(end, reason, runningSince)
}

// waitRunner waits for the cancelled runner to return, renewing the lease
// meanwhile when keep is set. A renewal that shows the job lost changes
// end to endLost.
func (a *attempt) waitRunner(result chan error, renew <-chan time.Time, keep bool, lastRenew *time.Time, end *ending) bool {
	for {
		select {
		case err := <-result:
			// The runner was cancelled and the ending is already decided;
			// what it returns now (usually the cancellation) changes nothing.
			_ = err
			return true
		case <-renew:
			if keep {
				next := *a.job
				if e, ok := a.renewWith(&next, lastRenew); !ok && e != endStopped {
					*end, keep = e, false
				}
			}
		case <-a.abandon:
			*end, keep = endAbandon, false
		}
	}
}

// renewWith writes next (the current record with a fresh lease and
// whatever the caller changed). ok is false when the attempt must end, with
// how.
func (a *attempt) renewWith(next *Job, lastRenew *time.Time) (ending, bool) {
	n := a.node
	now := time.Now()
	next.Lease = now.Add(n.LeaseTTL).UTC()
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	j, err := n.Store.Update(ctx, next)
	cancel()
	if err == nil {
		a.job, *lastRenew = j, now
		return 0, true
	}
	if errors.Is(err, ErrConflict) {
		return a.resolveConflict()
	}
	if errors.Is(err, nats.ErrConnectionClosed) {
		return endAbandon, false
	}
	// Cannot reach the store. While disconnected the job keeps running: it
	// cannot publish media either, and after the reconnect the next write
	// tells whether it is still ours. Connected but unable to write for a
	// whole lease (no JetStream quorum on our side of a partition), the
	// others may already have taken it: fence ourselves.
	if time.Since(*lastRenew) > n.LeaseTTL && n.connectedFor(time.Now()) >= n.LeaseTTL {
		n.log.Warn("lease not renewed for a whole lease while connected: stopping the job", "job", a.id, "err", err)
		return endLost, false
	}
	n.log.Debug("lease renewal failed", "job", a.id, "err", err)
	return 0, true
}

// resolveConflict re-reads the job after a failed write and decides
// whether it is still ours.
func (a *attempt) resolveConflict() (ending, bool) {
	n := a.node
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	cur, err := n.Store.Get(ctx, a.id)
	cancel()
	if err != nil {
		if errors.Is(err, ErrJobNotFound) || errors.Is(err, ErrCorruptJob) {
			// Deleted, or overwritten with something unreadable: nothing
			// says the job is still ours, so fence ourselves.
			return endLost, false
		}
		return 0, true // try again on the next heartbeat
	}
	return a.judge(cur)
}

// judge decides what a newer record means for this attempt.
func (a *attempt) judge(cur *Job) (ending, bool) {
	switch {
	case cur.Owner != a.node.ID || !cur.State.owned():
		return endLost, false
	case cur.State == StateStopping:
		a.job = cur
		return endStopped, false
	default:
		// Ours, at a revision we did not record: an earlier write timed out
		// here but reached the server. Carry on from it.
		a.job = cur
		return 0, true
	}
}

// checkObserved looks at the newest record the watcher delivered. changed
// is true when the attempt must end.
func (a *attempt) checkObserved() (ending, bool) {
	a.mu.Lock()
	j := a.latest
	a.latest = nil
	a.mu.Unlock()
	if j == nil || j.Revision <= a.job.Revision {
		return 0, false // our own write coming back, or older
	}
	e, ok := a.judge(j)
	return e, !ok
}

// finish records how the attempt ended, retrying the write until it
// succeeds, the job turns out to be someone else's, or the lease would
// have expired (then the others handle it).
func (a *attempt) finish(end ending, reason string, runningSince time.Time) {
	n := a.node
	log := n.log.With("job", a.id)
	deadline := time.Now().Add(n.LeaseTTL)
	for {
		if a.job.State == StateStopping {
			end = endStopped // a stop request wins over retry and hand-back
		}
		next := *a.job
		next.Owner, next.Lease = "", time.Time{}
		var redispatch bool
		switch end {
		case endStopped:
			if a.job.State == StateStopping {
				reason = "stopped by request"
			}
			next.State, next.Reason = StateStopped, reason
		case endHandBack:
			next.State, next.Reason = StatePending, reason
			redispatch = true
		case endFailed:
			attempts := a.job.Attempts + 1
			if !runningSince.IsZero() && n.Retry.Stable(time.Since(runningSince)) {
				attempts = 1
			}
			next.Attempts = attempts
			if attempts >= n.MaxAttempts {
				next.State, next.Reason = StateFailed, fmt.Sprintf("failed %d times, last: %s", attempts, reason)
			} else {
				wait := n.Retry.Delay(attempts)
				next.State, next.Reason = StatePending, fmt.Sprintf("attempt %d failed: %s; retry in %s", attempts, reason, wait)
				next.NotBefore = time.Now().Add(wait).UTC()
				redispatch = true
			}
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
		j, err := n.Store.Update(ctx, &next)
		if err == nil && redispatch {
			if derr := n.Store.dispatch(ctx, j); derr != nil {
				// The job is pending without a ticket; maintenance republishes it.
				log.Warn("dispatch after release failed", "err", derr)
			}
		}
		cancel()
		switch {
		case err == nil:
			log.Info("job released", "state", j.State, "reason", j.Reason, "revision", j.Revision)
			return
		case errors.Is(err, ErrConflict):
			e, ok := a.resolveConflict()
			if !ok && e == endLost {
				log.Warn("job lost before its end was recorded")
				return
			}
			if !ok && e == endStopped {
				end, reason = endStopped, "stopped by request"
			}
		case errors.Is(err, nats.ErrConnectionClosed):
			return
		}
		if time.Now().After(deadline) {
			log.Warn("could not record the end of the job; its lease will expire", "err", err)
			return
		}
		select {
		case <-a.abandon:
			return
		case <-time.After(n.scanInterval()):
		}
	}
}
