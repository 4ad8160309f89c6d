package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Failover. Every node scans its view of prism_jobs a few times per
// heartbeat. A starting, running or stopping job is orphaned when its
// owner is dead (unheard for NodeDeadAfter, see Node.nodeDead), or alive
// but not listing the job in its heartbeats (it abandoned the attempt, or
// restarted under the same id), counted from a grace of a couple of
// heartbeats after this node first saw the claim, so that a fresh claim
// is not judged before a heartbeat could list it. An orphan is taken
// over: a node with room claims it directly, revision-checked so that
// exactly one node wins; a node without room waits a heartbeat for a
// capable node to do so, then returns the job to the queue. Nothing here
// compares a time written by another host; only nodes healthy for
// NodeDeadAfter judge (see health).

// takeoverSpread staggers claims by load: an idle node claims an orphan
// at once, a full one up to this much later, so survivors share the
// orphans of a dead node instead of the fastest scanner taking them all.
func (n *Node) takeoverSpread() time.Duration { return n.Heartbeat / 2 }

// claimGrace is how long after first seeing a claim this node waits
// before it holds against the owner a heartbeat that does not list the job.
func (n *Node) claimGrace() time.Duration { return 2 * n.Heartbeat }

// orphan causes, for reasons.
const (
	orphanDead    = "node dead"
	orphanNotRuns = "not running it"
)

// scan handles orphaned jobs.
func (n *Node) scan(now time.Time) {
	if !n.view.isReady() || n.healthyFor(now) < n.NodeDeadAfter {
		return
	}
	n.view.pruneNodes(now, n.NodeDeadAfter+n.FenceAfter)
	orphaned := map[string]bool{}
	for _, j := range n.view.jobsSnapshot() {
		if !j.State.owned() {
			continue
		}
		n.mu.Lock()
		mine := n.attempts[j.Spec.ID] != nil
		n.mu.Unlock()
		if mine {
			continue // our own attempt ends or fences itself
		}
		why := n.orphanCause(j, now)
		if why == "" {
			continue
		}
		orphaned[j.Spec.ID] = true
		n.mu.Lock()
		first, ok := n.orphans[j.Spec.ID]
		if !ok {
			first = now
			n.orphans[j.Spec.ID] = now
		}
		n.mu.Unlock()
		n.orphan(j, why, now.Sub(first))
	}
	n.mu.Lock()
	for id := range n.orphans {
		if !orphaned[id] {
			delete(n.orphans, id)
		}
	}
	n.mu.Unlock()
}

// orphanCause says why j's owner no longer holds it ("" while it does).
func (n *Node) orphanCause(j *Job, now time.Time) string {
	if n.nodeDead(j.Owner, now) {
		return orphanDead
	}
	info, seen, ok := n.view.heartbeatOf(j.Owner)
	since, claimed := n.view.ownerSince(j.Spec.ID, j.Owner)
	if ok && claimed && seen.Sub(since) > n.claimGrace() && !slices.Contains(info.Jobs, j.Spec.ID) {
		return orphanNotRuns
	}
	return ""
}

// orphan deals with one job whose owner no longer holds it; age is how
// long this node has known.
func (n *Node) orphan(j *Job, why string, age time.Duration) {
	prev := j.Owner
	c := *j
	c.Owner, c.Lease = "", time.Time{}
	if j.State == StateStopping {
		c.State, c.Reason = StateStopped, "stopped (owner "+prev+" went away while stopping)"
		n.write(&c, false)
		return
	}
	lost := "owner " + prev + " is dead"
	if why == orphanNotRuns {
		lost = "owner " + prev + " no longer runs it"
	}
	attempts := j.Attempts + 1 // the owner's attempt ended without a word: a failure
	if attempts >= n.MaxAttempts {
		c.State, c.Reason = StateFailed, fmt.Sprintf("failed %d times, last: %s", attempts, lost)
		n.write(&c, false)
		return
	}
	if n.canTake(j) {
		if age < time.Duration(n.load()*float64(n.takeoverSpread())) {
			return
		}
		n.claim(j, fmt.Sprintf("taken over from %s (%s)", prev, why), attempts)
		return
	}
	if age < n.Heartbeat {
		return // a node with room may still claim it
	}
	c.State, c.Attempts = StatePending, attempts
	c.Reason = lost
	// The previous owner is not a candidate, dead or not.
	others := slices.DeleteFunc(n.liveNodes(time.Now()), func(o NodeInfo) bool { return o.ID == prev })
	if r := placementReason(others, &c); r != "" {
		c.Reason += "; " + r
	}
	n.write(&c, true)
}

// liveNodes returns the nodes in the view that this node does not judge
// dead, sorted by id.
func (n *Node) liveNodes(now time.Time) []NodeInfo {
	return slices.DeleteFunc(n.view.allNodes(), func(o NodeInfo) bool { return n.nodeDead(o.ID, now) })
}

// write stores a decision taken from the view; a conflict means the view
// was behind, so the job is re-read.
func (n *Node) write(j *Job, dispatch bool) {
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	defer cancel()
	w, err := n.Store.Update(ctx, j)
	switch {
	case errors.Is(err, ErrConflict):
		n.refreshJob(j.Spec.ID)
		return
	case err != nil:
		n.log.Debug("write failed", "job", j.Spec.ID, "err", err)
		return
	}
	n.view.refresh(w)
	n.log.Info("job updated", "job", j.Spec.ID, "state", w.State, "reason", w.Reason)
	if dispatch {
		if err := n.Store.dispatch(ctx, w); err != nil {
			n.log.Warn("dispatch failed; maintenance will retry", "job", j.Spec.ID, "err", err)
		}
	}
}

// maintain runs on one node, the live node with the lowest id: it
// republishes the ticket of a pending job that has none (its dispatcher
// died between the two writes, or a ticket was acknowledged on a stale
// read) and keeps pending jobs' reasons true.
func (n *Node) maintain(now time.Time) {
	if !n.view.isReady() || n.healthyFor(now) < n.NodeDeadAfter {
		return
	}
	nodes := n.liveNodes(now)
	for _, o := range nodes {
		if o.ID < n.ID {
			return // not the leader
		}
	}
	wall := n.wallNow()
	for _, j := range n.view.jobsSnapshot() {
		// A job that became pending only now may still get its ticket
		// from whoever wrote it: wait NodeDeadAfter, on this node's clock.
		if j.State != StatePending || n.view.revisionAge(j, now) < n.NodeDeadAfter || wall.Before(j.NotBefore) {
			continue
		}
		if r := placementReason(nodes, j); newReason(j.Reason, r) {
			c := *j
			c.Reason = r
			n.write(&c, false)
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
		has, err := n.Store.hasTicket(ctx, j.Spec.ID)
		if err == nil && !has {
			n.log.Info("pending job had no dispatch ticket: republishing", "job", j.Spec.ID)
			err = n.Store.redispatch(ctx, j)
		}
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			n.log.Debug("maintenance failed", "job", j.Spec.ID, "err", err)
		}
	}
}

// newReason reports whether a pending job's reason should become r: when
// r says something (a node can take it now is not news worth a write) that
// the current reason does not already end with (it may carry history, such
// as which owner died, before the placement part).
func newReason(cur, r string) bool { return r != "" && !strings.HasSuffix(cur, r) }
