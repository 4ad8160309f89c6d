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
// heartbeat. A job whose owner's lease has passed (the owner died, or is
// cut off and cannot renew) is taken over: a node with room claims it
// directly, revision-checked so that exactly one node wins; a node without
// room waits a heartbeat for a capable node to do so, then returns the job
// to the queue. Only nodes connected for a whole lease judge leases (see
// trackConnection).

// takeoverSpread staggers claims by load: an idle node claims an expired
// job at once, a full one up to this much later, so survivors share the
// orphans of a dead node instead of the fastest scanner taking them all.
func (n *Node) takeoverSpread() time.Duration { return n.Heartbeat / 2 }

// scan handles jobs with expired leases.
func (n *Node) scan(now time.Time) {
	if !n.view.isReady() || n.connectedFor(now) < n.LeaseTTL {
		return
	}
	for _, j := range n.view.jobsSnapshot() {
		if !j.State.owned() || j.leaseValid(now) {
			continue
		}
		n.mu.Lock()
		mine := n.attempts[j.Spec.ID] != nil
		n.mu.Unlock()
		if mine {
			continue // our own attempt renews or fences itself
		}
		n.expired(j, now)
	}
}

// expired deals with one job whose owner's lease has passed.
func (n *Node) expired(j *Job, now time.Time) {
	prev := j.Owner
	c := *j
	c.Owner, c.Lease = "", time.Time{}
	if j.State == StateStopping {
		c.State, c.Reason = StateStopped, "stopped (owner "+prev+" went away while stopping)"
		n.write(&c, false)
		return
	}
	attempts := j.Attempts + 1 // the owner's attempt ended without a word: a failure
	if attempts >= n.MaxAttempts {
		c.State, c.Reason = StateFailed, fmt.Sprintf("failed %d times, last: owner %s stopped renewing its lease", attempts, prev)
		n.write(&c, false)
		return
	}
	if n.canTake(j) {
		if now.Before(j.Lease.Add(time.Duration(n.load() * float64(n.takeoverSpread())))) {
			return
		}
		n.claim(j, fmt.Sprintf("taken over from %s (lease expired)", prev), attempts)
		return
	}
	if now.Before(j.Lease.Add(n.Heartbeat)) {
		return // a node with room may still claim it
	}
	c.State, c.Attempts = StatePending, attempts
	c.Reason = "owner " + prev + " stopped renewing its lease"
	// Its heartbeat may not have expired yet; it is not a candidate.
	others := slices.DeleteFunc(n.view.liveNodes(now, n.Store.cfg.NodeTTL), func(o NodeInfo) bool { return o.ID == prev })
	if r := placementReason(others, &c); r != "" {
		c.Reason += "; " + r
	}
	n.write(&c, true)
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
	if !n.view.isReady() || n.connectedFor(now) < n.LeaseTTL {
		return
	}
	nodes := n.view.liveNodes(now, n.Store.cfg.NodeTTL)
	for _, o := range nodes {
		if o.ID < n.ID {
			return // not the leader
		}
	}
	for _, j := range n.view.jobsSnapshot() {
		if j.State != StatePending || now.Sub(j.UpdatedAt) < n.LeaseTTL || now.Before(j.NotBefore) {
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
