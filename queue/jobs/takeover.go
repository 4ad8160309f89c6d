package jobs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
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
// over. Its successor (see successor), when this node hears most of the
// cluster, starts it at once and writes its claim meanwhile, retrying
// until the jobs bucket takes it: a takeover does not wait for an
// election of that bucket (the leader may have died with the node). The
// successor's heartbeats list the job, and nobody else takes a job a live
// node lists; if another node's claim lands first, the successor stops.
// Other nodes with room claim it a heartbeat later, revision-checked so
// that exactly one wins; a node without room waits a heartbeat for a
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
	var runners map[string][]string // job id → live nodes whose heartbeat lists it; built on the first orphan
	type found1 struct {
		job *Job
		why string
		age time.Duration
	}
	var found []found1
	for _, j := range n.orphanCandidates(now) {
		n.mu.Lock()
		mine := n.attempts[j.job.Spec.ID] != nil
		n.mu.Unlock()
		if mine {
			continue // our own attempt ends or fences itself
		}
		if runners == nil {
			runners = n.liveRunners(now)
		}
		if slices.ContainsFunc(runners[j.job.Spec.ID], func(id string) bool { return id != j.job.Owner }) {
			continue // another live node runs it already: taking it over, its claim not written yet
		}
		orphaned[j.job.Spec.ID] = true
		n.mu.Lock()
		first, ok := n.orphans[j.job.Spec.ID]
		if !ok {
			first = now
			n.orphans[j.job.Spec.ID] = now
		}
		n.mu.Unlock()
		if !ok {
			n.logOrphan(j.job, j.why, now)
		}
		found = append(found, found1{j.job, j.why, now.Sub(first)})
	}
	if len(found) > 0 {
		jobs := make([]*Job, len(found))
		for i, f := range found {
			jobs[i] = f.job
		}
		successors := n.successors(jobs, now)
		// This node's own takeovers first: the claims of others' orphans
		// may each wait up to a heartbeat for a bucket without a leader.
		for _, mine := range []bool{true, false} {
			took := false
			for _, f := range found {
				if (successors[f.job.Spec.ID] == n.ID) == mine {
					took = n.orphan(f.job, f.why, successors[f.job.Spec.ID], now, f.age) || took
				}
			}
			if took {
				// List them at once, in one heartbeat for all: nobody else
				// takes a job a live node lists. (One per job was a burst
				// of nodes × orphans heartbeats for every node to decode
				// after a crash, which delayed the very listings it sent.)
				n.publishBeat()
			}
		}
	}
	n.mu.Lock()
	for id := range n.orphans {
		if !orphaned[id] {
			delete(n.orphans, id)
		}
	}
	n.mu.Unlock()
}

// logOrphan says why this node holds j orphaned, with what it last heard
// of the owner: a wrong judgement must be traceable.
func (n *Node) logOrphan(j *Job, why string, now time.Time) {
	info, seen, ok := n.view.heartbeatOf(j.Owner)
	heard := "never"
	if ok {
		heard = now.Sub(seen).Round(time.Millisecond).String() + " ago"
	}
	n.log.Info("job orphaned", "job", j.Spec.ID, "owner", j.Owner, "why", why, "owner_heard", heard,
		"owner_lists", slices.Contains(info.Jobs, j.Spec.ID), "healthy_for", n.healthyFor(now).Round(time.Millisecond))
}

// orphanCandidate is a job whose owner no longer holds it, and why.
type orphanCandidate struct {
	job *Job
	why string
}

// orphanCandidates returns, sorted by id, the jobs in owned states whose
// owner is dead or alive but not listing them (counted from claimGrace
// after this node first saw the claim). It looks at each owner once: all
// the jobs of a dead one, and of a live one only those its heartbeat
// omits, a check the view keeps until the owner's jobs or listing
// change. So a scan costs O(owners) while nothing changes, not a copy of
// every job.
func (n *Node) orphanCandidates(now time.Time) []orphanCandidate {
	var out []orphanCandidate
	for _, owner := range n.view.owners() {
		var jobs []*Job
		why := orphanDead
		if n.nodeDead(owner, now) {
			jobs = n.view.jobsOf(owner)
		} else {
			jobs, why = n.view.unlisted(owner, n.claimGrace()), orphanNotRuns
		}
		for _, j := range jobs {
			out = append(out, orphanCandidate{j, why})
		}
	}
	slices.SortFunc(out, func(a, b orphanCandidate) int { return strings.Compare(a.job.Spec.ID, b.job.Spec.ID) })
	return out
}

// orphan deals with one job whose owner no longer holds it; age is how
// long this node has known. It reports whether this node took the job
// over at once (takeOver), which its caller announces in a heartbeat.
func (n *Node) orphan(j *Job, why, successor string, now time.Time, age time.Duration) bool {
	prev := j.Owner
	c := *j
	c.Owner, c.Lease, c.Encoding = "", time.Time{}, nil
	if j.State == StateStopping {
		c.State, c.Reason = StateStopped, "stopped (owner "+prev+" went away while stopping)"
		n.write(&c, false)
		return false
	}
	lost := "owner " + prev + " is dead"
	if why == orphanNotRuns {
		lost = "owner " + prev + " no longer runs it"
	}
	attempts := j.Attempts + 1 // the owner's attempt ended without a word: a failure
	if attempts >= n.MaxAttempts {
		c.State, c.Reason = StateFailed, fmt.Sprintf("failed %d times, last: %s", attempts, lost)
		n.write(&c, false)
		return false
	}
	if n.canTake(j) {
		reason := fmt.Sprintf("taken over from %s (%s)", prev, why)
		if successor == n.ID && n.hearsMajority(now) && n.takeOver(j, reason, attempts) {
			return true
		}
		// Not the successor (or it could not start): give the successor a
		// heartbeat to list the job, then claim the revision-checked way,
		// the least loaded first.
		if age < n.Heartbeat+time.Duration(n.load()*float64(n.takeoverSpread())) || !n.successorPassed(successor, now, age) {
			return false
		}
		n.claim(j, reason, attempts)
		return false
	}
	if age < n.Heartbeat {
		return false // a node with room may still claim it
	}
	c.State, c.Attempts = StatePending, attempts
	c.Reason = lost
	// The previous owner is not a candidate, dead or not.
	others := slices.DeleteFunc(n.liveNodes(time.Now()), func(o NodeInfo) bool { return o.ID == prev })
	if r := placementReason(others, &c); r != "" {
		c.Reason += "; " + r
	}
	n.write(&c, true)
	return false
}

// successorPassed reports whether the successor of an orphan this node
// has known for age let it go: it is dead, or a heartbeat of it came a
// heartbeat or more after this node judged the job orphaned (one that
// listed the job would have taken it off the orphans). A timer alone is
// not enough: after a crash every survivor's takeover heartbeat reaches
// every node at once, and when they came later than the timer, each
// orphan was claimed by many nodes while its successor ran it (at 100
// nodes, 11766 failed claims and 221 jobs started twice for 488 orphans).
func (n *Node) successorPassed(successor string, now time.Time, age time.Duration) bool {
	if successor == "" || successor == n.ID || n.nodeDead(successor, now) {
		return true
	}
	seen, ok := n.view.lastSeen(successor)
	return !ok || seen.Sub(now.Add(-age)) >= n.Heartbeat
}

// successors names, for each orphan, the node that takes it over
// without waiting for its claim to be written: in job id order, of the
// live nodes with room left for it (as their heartbeats say, less what
// this assignment gave them already), the one ranked first for the job by
// rendezvous hashing. Every node that sees the same heartbeats and
// orphans names the same ones, and a dead node's jobs spread over the
// survivors. A job no node has room for has none.
func (n *Node) successors(orphans []*Job, now time.Time) map[string]string {
	var live []NodeInfo
	for _, o := range n.view.allNodes() {
		if !n.nodeDead(o.ID, now) {
			live = append(live, o)
		}
	}
	sorted := slices.Clone(orphans)
	slices.SortFunc(sorted, func(a, b *Job) int { return strings.Compare(a.Spec.ID, b.Spec.ID) })
	out := map[string]string{}
	for _, j := range sorted {
		best, bestRank := -1, uint64(0)
		for i := range live {
			o := &live[i]
			if o.ID == j.Owner || !o.fitsNow(j) {
				continue
			}
			if r := rendezvous(j.Spec.ID, o.ID); best < 0 || r > bestRank {
				best, bestRank = i, r
			}
		}
		if best >= 0 {
			out[j.Spec.ID] = live[best].ID
			live[best].Used += j.Cost
		}
	}
	return out
}

// rendezvous ranks node for job (FNV-1a of both).
func rendezvous(job, node string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(job))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(node))
	return h.Sum64()
}

// hearsMajority reports whether this node hears more than half the nodes
// it knows, itself included. A node cut off with a minority must not
// start the jobs of the nodes it no longer hears before a claim, which
// needs a quorum of servers, says they are its. It counts by nodeDead,
// the judgement takeovers act on; hearsMost (node.go) counts raw receipt
// times because it is an input of the health that nodeDead depends on.
func (n *Node) hearsMajority(now time.Time) bool {
	nodes := n.view.allNodes()
	live := 0
	for _, o := range nodes {
		if !n.nodeDead(o.ID, now) {
			live++
		}
	}
	return 2*live > len(nodes)
}

// liveRunners maps each job to the live nodes whose heartbeat lists it.
func (n *Node) liveRunners(now time.Time) map[string][]string {
	out := map[string][]string{}
	for _, o := range n.view.allNodes() {
		if n.nodeDead(o.ID, now) {
			continue
		}
		for _, id := range o.Jobs {
			out[id] = append(out[id], o.ID)
		}
	}
	return out
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
