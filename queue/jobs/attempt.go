package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// attempt is one run of one job on this node, from a successful claim to
// the record of how it ended. Its goroutine is the only writer of the job
// while it owns it, and writes only state changes (running, cost, attempts
// reset, the end): the node's heartbeat, which lists the job, is its
// lease. It stops the runner as soon as a record it reads or watches shows
// that the job is no longer its own; a write that fails for want of the
// store is retried, never taken as a loss.
type attempt struct {
	node *Node
	id   string
	cost float64
	job  *Job // the record as last written or adopted; owned by the run goroutine
	// claim is set while a takeover runs before its claim is written
	// (takeOver): the run goroutine writes it, retrying; owned by it.
	claim *pendingClaim

	mu     sync.Mutex
	latest *Job          // newest record seen by the watcher, for the run goroutine
	gone   bool          // the watcher saw the record deleted or unreadable
	seen   chan struct{} // signals latest or gone

	handback chan struct{} // closed: drain, give the job back
	abandon  chan struct{} // closed: stop at once, write nothing
	done     chan struct{} // closed when the attempt ended and released its capacity
	hbOnce   sync.Once
	abOnce   sync.Once
	abWhy    string
}

// pendingClaim is what a takeover's claim writes.
type pendingClaim struct {
	reason   string
	attempts int
	since    time.Time
}

// ending is how an attempt ends and what it writes.
type ending int

const (
	endStopped  ending = iota // stop requested, or the input ended: stopped
	endFailed                 // runner error or start timeout: retry or failed
	endHandBack               // drain: pending for another node
	endLost                   // another writer owns the job now: write nothing
	endAbandon                // connection closed, node closed or fenced: write nothing
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

// heldCost is the capacity the attempt holds (HeldCost).
func (a *attempt) heldCost() float64 {
	a.node.mu.Lock()
	defer a.node.mu.Unlock()
	return a.cost
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

// claim makes this node the owner of j (pending, or orphaned) and starts
// running it. It returns false if the node has no room or
// another writer got there first.
func (n *Node) claim(j *Job, reason string, attempts int) bool {
	a := n.reserve(j)
	if a == nil {
		return false
	}
	c := *j
	c.State, c.Owner, c.Reason, c.Attempts = StateStarting, n.ID, reason, attempts
	c.Lease, c.NotBefore = time.Time{}, time.Time{}
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

// takeOver starts running orphan j at once, as its successor, and leaves
// the claim to the attempt's goroutine, which writes it while the runner
// starts and retries it until the store takes it (a jobs bucket electing
// a leader takes none for seconds). It returns false if the node has no
// room. The caller publishes a heartbeat listing it (scan: one for all
// the jobs of a scan).
func (n *Node) takeOver(j *Job, reason string, attempts int) bool {
	a := n.reserve(j)
	if a == nil {
		return false
	}
	c := *j
	a.job = &c
	a.claim = &pendingClaim{reason: reason, attempts: attempts, since: time.Now()}
	n.log.Info("taking job over", "job", j.Spec.ID, "from", j.Owner, "revision", j.Revision, "attempts", attempts, "reason", reason)
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

// observeGone tells the run goroutine that the record was deleted or
// became unreadable.
func (a *attempt) observeGone() {
	a.mu.Lock()
	a.gone = true
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
	encCh := make(chan []RungEncoding, 1)
	runCtx = WithEncodingReporter(runCtx, func(e []RungEncoding) {
		select { // the latest report wins
		case <-encCh:
		default:
		}
		encCh <- e
	})
	runCtx = withHeldCost(runCtx, a.heldCost)
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

	// retry paces repeated state writes that failed (an election, a
	// disconnection): they are retried, never fatal.
	retry := time.NewTicker(n.Heartbeat)
	defer retry.Stop()
	startTimer := time.NewTimer(n.StartTimeout)
	defer startTimer.Stop()
	state := StateStarting // what the record should say; running once the runner says so
	cost := a.job.Cost
	var encoding []RungEncoding // a previous attempt's, in the record, is not this one's
	var runningSince time.Time
	var runErr error
	runnerDone := false
	var end ending
	reason := ""
	// syncRecord writes the record when it differs from what the attempt wants
	// (state, cost, attempts reset).
	syncRecord := func() (ending, bool) {
		next := *a.job
		changed := false
		if c := a.claim; c != nil {
			next.Owner, next.Reason, next.Attempts = n.ID, c.reason, c.attempts
			next.Lease, next.NotBefore = time.Time{}, time.Time{}
			if next.State == StateStopping {
				return endLost, false // a stop asked of the dead owner: the orphan scan ends it
			}
			changed = true
		}
		if next.State != state && next.State != StateStopping {
			next.State, changed = state, true
		}
		if next.Cost != cost {
			next.Cost, changed = cost, true
		}
		if !slices.Equal(next.Encoding, encoding) {
			next.Encoding, changed = encoding, true
		}
		if next.Attempts != 0 && !runningSince.IsZero() && n.Retry.Stable(time.Since(runningSince)) {
			next.Attempts, changed = 0, true // it runs: earlier failures no longer count
		}
		if !changed {
			return 0, true
		}
		e, ok := a.write(&next)
		if ok && a.claim != nil && a.job.Owner == n.ID {
			log.Info("job claimed", "revision", a.job.Revision, "after", time.Since(a.claim.since).Round(time.Millisecond))
			a.claim = nil
		}
		return e, ok
	}
	if a.claim != nil {
		// The runner is starting already; the claim goes in meanwhile.
		if e, ok := syncRecord(); !ok {
			end = e
			goto ended
		}
	}

loop:
	for {
		select {
		case <-runningCh:
			runningCh = nil
			runningSince = time.Now()
			startTimer.Stop()
			state = StateRunning
			if e, ok := syncRecord(); !ok {
				end = e
				break loop
			}
			log.Info("job running", "revision", a.job.Revision)
		case e := <-encCh:
			encoding = e
			if e, ok := syncRecord(); !ok {
				end = e
				break loop
			}
		case c := <-costCh:
			a.reprice(c)
			cost = c
			if e, ok := syncRecord(); !ok {
				end = e
				break loop
			}
			log.Info("job repriced for its source", "cost", formatRate(c))
		case <-retry.C:
			if e, ok := syncRecord(); !ok {
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

ended:
	if !runnerDone {
		cancelRun()
		// While the runner winds down the attempt stays in the node's
		// heartbeat, so nobody starts a second copy meanwhile.
		a.waitRunner(result, &end)
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

// waitRunner waits for the cancelled runner to return. A node closed
// meanwhile turns the ending into endAbandon.
func (a *attempt) waitRunner(result chan error, end *ending) {
	abandon := a.abandon
	for {
		select {
		case err := <-result:
			// The runner was cancelled and the ending is already decided;
			// what it returns now (usually the cancellation) changes nothing.
			_ = err
			return
		case <-abandon:
			*end, abandon = endAbandon, nil
		}
	}
}

// write stores next (the current record with what the caller changed). ok
// is false when the attempt must end, with how. A write that cannot reach
// the store leaves the record as it was, to be tried again: while the
// node's heartbeats are acknowledged nobody takes the job, and when they
// are not the node fences itself after FenceAfter (tickLoop).
func (a *attempt) write(next *Job) (ending, bool) {
	n := a.node
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	start := time.Now()
	j, err := n.Store.Update(ctx, next)
	cancel()
	if err == nil {
		a.job = j
		return 0, true
	}
	if errors.Is(err, ErrConflict) {
		return a.resolveConflict()
	}
	if errors.Is(err, nats.ErrConnectionClosed) {
		return endAbandon, false
	}
	n.log.Debug("state write failed; will retry", "job", a.id, "after", time.Since(start).Round(time.Millisecond), "err", err)
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
		return 0, true // cannot tell now: try again later
	}
	return a.judge(cur)
}

// judge decides what a newer record means for this attempt.
func (a *attempt) judge(cur *Job) (ending, bool) {
	switch {
	case a.claim != nil && cur.Owner == a.job.Owner && cur.State.owned() && cur.State != StateStopping:
		// Still the dead owner's, at a revision the view had not seen: the
		// claim is written on this one.
		a.job = cur
		return 0, true
	case cur.Owner != a.node.ID || !cur.State.owned():
		return endLost, false
	case cur.State == StateStopping:
		a.job = cur
		return endStopped, false
	default:
		// Ours, at a revision we did not record: an earlier write timed out
		// here but reached the server (a takeover's claim among them).
		// Carry on from it.
		a.job = cur
		a.claim = nil
		return 0, true
	}
}

// checkObserved looks at the newest record the watcher delivered. changed
// is true when the attempt must end.
func (a *attempt) checkObserved() (ending, bool) {
	a.mu.Lock()
	j, gone := a.latest, a.gone
	a.latest, a.gone = nil, false
	a.mu.Unlock()
	if gone {
		// Deleted or unreadable: re-read rather than trust one event.
		e, ok := a.resolveConflict()
		return e, !ok
	}
	if j == nil || j.Revision <= a.job.Revision {
		return 0, false // our own write coming back, or older
	}
	e, ok := a.judge(j)
	return e, !ok
}

// finish records how the attempt ended, retrying the write until it
// succeeds, the job turns out to be someone else's, or FenceAfter passes
// (then the attempt leaves the heartbeat and the others take the job over,
// as from a node that does not run it).
func (a *attempt) finish(end ending, reason string, runningSince time.Time) {
	n := a.node
	log := n.log.With("job", a.id)
	started := time.Now()
	deadline := started.Add(n.FenceAfter)
	for {
		if a.job.State == StateStopping {
			end = endStopped // a stop request wins over retry and hand-back
		}
		next := *a.job
		next.Owner, next.Lease, next.Encoding = "", time.Time{}, nil
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
				next.NotBefore = n.wallNow().Add(wait)
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
			log.Info("job released", "state", j.State, "reason", j.Reason, "revision", j.Revision,
				"write_took", time.Since(started).Round(time.Millisecond))
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
			log.Warn("could not record the end of the job; another node will take it over", "err", err)
			return
		}
		select {
		case <-a.abandon:
			return
		case <-time.After(n.scanInterval()):
		}
	}
}
