package jobs

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// view is a node's copy of prism_jobs and prism_nodes, kept current by KV
// watchers. Takeover decisions read it; every write they lead to is still
// revision-checked, so a stale view costs a failed write, never a second
// owner.
type view struct {
	mu    sync.Mutex
	jobs  map[string]*Job
	nodes map[string]seenNode
	// owned is when this view first saw each job with its current owner
	// (local monotonic time): the grace before an owner's heartbeat must
	// list the job is counted from it.
	owned map[string]ownedSince
	// byOwner indexes the jobs in an owned state (starting, running,
	// stopping) by owner, so that the scan for orphans, every 100 ms on
	// every node, looks at each owner once instead of copying and sorting
	// every job (see orphanCandidates).
	byOwner map[string]*ownerJobs
	ready   bool // both initial snapshots loaded
	// changed gets a token whenever a job changes in the view; one token
	// waits at most, so a slow receiver sees one wake-up for many changes.
	changed chan struct{}
}

// ownerJobs is one owner's jobs in owned states, and the last check of
// them against its heartbeat. The check depends only on the jobs (and when
// this view first saw each with this owner, which changes with them), the
// heartbeat's list, and the heartbeat's receipt time only while some
// unlisted job is still within the grace: so it is kept until the jobs
// change, and reused while the owner's heartbeats list the same jobs.
type ownerJobs struct {
	jobs    map[string]*Job
	checked bool
	listing []string  // the heartbeat's Jobs at the check
	seen    time.Time // the receipt of the last heartbeat compared with it
	past    []string  // unlisted, past the grace: orphans
	inGrace bool      // some unlisted job was within the grace: check again
}

// setJob puts j (nil: removes id) into the live view and its owner index;
// v.mu is held.
func (v *view) setJob(id string, j *Job) {
	if old := v.jobs[id]; old != nil {
		v.unindex(old)
	}
	if j == nil {
		delete(v.jobs, id)
		return
	}
	v.jobs[id] = j
	v.index(j)
}

// index adds j to its owner's entry if it is in an owned state; v.mu is held.
func (v *view) index(j *Job) {
	if !j.State.owned() {
		return
	}
	if v.byOwner == nil {
		v.byOwner = map[string]*ownerJobs{}
	}
	e := v.byOwner[j.Owner]
	if e == nil {
		e = &ownerJobs{jobs: map[string]*Job{}}
		v.byOwner[j.Owner] = e
	}
	e.jobs[j.Spec.ID] = j
	e.checked = false
}

// unindex removes j from its owner's entry; v.mu is held.
func (v *view) unindex(j *Job) {
	e := v.byOwner[j.Owner]
	if e == nil || e.jobs[j.Spec.ID] != j {
		return
	}
	delete(e.jobs, j.Spec.ID)
	e.checked = false
	if len(e.jobs) == 0 {
		delete(v.byOwner, j.Owner)
	}
}

// owners returns the owners of jobs in owned states ("" included, for a
// record that names none).
func (v *view) owners() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.byOwner))
	for o := range v.byOwner {
		out = append(out, o)
	}
	return out
}

// jobsOf copies owner's jobs in owned states.
func (v *view) jobsOf(owner string) []*Job {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.byOwner[owner]
	if e == nil {
		return nil
	}
	out := make([]*Job, 0, len(e.jobs))
	for _, j := range e.jobs {
		c := *j
		out = append(out, &c)
	}
	return out
}

// unlisted copies owner's jobs that its latest heartbeat does not list
// although it came more than grace after this view first saw the job with
// that owner: the owner, alive, abandoned or never started them. None while no heartbeat of the owner
// is known.
func (v *view) unlisted(owner string, grace time.Duration) []*Job {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.byOwner[owner]
	hb, ok := v.nodes[owner]
	if e == nil || !ok {
		return nil
	}
	// Every node scans ten times a heartbeat: compare a listing only once
	// per heartbeat received.
	// The grace is counted to the heartbeat's receipt, not to now: the
	// same heartbeat gives the same answer, jobs within the grace or not.
	same := e.checked && (hb.seen.Equal(e.seen) || !e.inGrace && slices.Equal(e.listing, hb.info.Jobs))
	e.seen = hb.seen
	if !same {
		e.checked, e.listing, e.past, e.inGrace = true, hb.info.Jobs, e.past[:0], false
		sorted := slices.IsSorted(hb.info.Jobs) // as Node.info writes it; anything else is searched in full
		for id := range e.jobs {
			listed := false
			if sorted {
				_, listed = slices.BinarySearch(hb.info.Jobs, id)
			} else {
				listed = slices.Contains(hb.info.Jobs, id)
			}
			if listed {
				continue
			}
			o, claimed := v.owned[id]
			switch {
			case !claimed || o.owner != owner:
				// Not seen with this owner: never held against it (the
				// record changes, and with it this entry, when it is).
			case hb.seen.Sub(o.since) > grace:
				e.past = append(e.past, id)
			default:
				e.inGrace = true
			}
		}
	}
	out := make([]*Job, 0, len(e.past))
	for _, id := range e.past {
		c := *e.jobs[id]
		out = append(out, &c)
	}
	return out
}

// notify wakes the receiver of changed; v.mu is held.
func (v *view) notify() {
	if v.changed == nil {
		v.changed = make(chan struct{}, 1)
	}
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// changes returns the wake-up channel.
func (v *view) changes() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.changed == nil {
		v.changed = make(chan struct{}, 1)
	}
	return v.changed
}

// seenNode is a heartbeat and when this node received it. Liveness is
// judged by local receipt time, so clock skew between nodes does not
// matter for it (and the bucket's TTL expiry sends no event to watchers).
// rev tells a new heartbeat from the same one delivered again by a
// reloaded watcher, which must not make a dead node look alive.
type seenNode struct {
	info NodeInfo
	seen time.Time
	rev  uint64
}

// ownedSince is when the view first saw a job with its current owner, and
// its current revision.
type ownedSince struct {
	owner string
	since time.Time
	rev   uint64
	revAt time.Time
}

// noteOwner records when the view first saw j with its owner, and at its
// revision; v.mu is held.
func (v *view) noteOwner(j *Job, now time.Time) {
	if v.owned == nil {
		v.owned = map[string]ownedSince{}
	}
	cur, ok := v.owned[j.Spec.ID]
	if !ok || cur.owner != j.Owner {
		cur.owner, cur.since = j.Owner, now
	}
	if !ok || cur.rev != j.Revision {
		cur.rev, cur.revAt = j.Revision, now
	}
	v.owned[j.Spec.ID] = cur
}

// revisionAge is how long ago this view first saw j at its revision (0
// when it never did).
func (v *view) revisionAge(j *Job, now time.Time) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	o, ok := v.owned[j.Spec.ID]
	if !ok || o.rev != j.Revision {
		return 0
	}
	return now.Sub(o.revAt)
}

// allNodes returns every node in the view, sorted by id.
func (v *view) allNodes() []NodeInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]NodeInfo, 0, len(v.nodes))
	for _, n := range v.nodes {
		out = append(out, n.info)
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// pruneNodes forgets nodes unheard for longer than d: the bucket's TTL
// expiry sends watchers nothing, so the dead would stay forever.
func (v *view) pruneNodes(now time.Time, d time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, n := range v.nodes {
		if now.Sub(n.seen) > d {
			delete(v.nodes, id)
		}
	}
}

// heard counts the nodes in the view heard within d, and all of them.
func (v *view) heard(now time.Time, d time.Duration) (recent, known int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range v.nodes {
		if now.Sub(n.seen) <= d {
			recent++
		}
	}
	return recent, len(v.nodes)
}

// heartbeatOf returns node id's latest heartbeat and when it came.
func (v *view) heartbeatOf(id string) (NodeInfo, time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, ok := v.nodes[id]
	return n.info, n.seen, ok
}

// lastSeen is when this node last received a new heartbeat of node id.
func (v *view) lastSeen(id string) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, ok := v.nodes[id]
	return n.seen, ok
}

// install swaps in a freshly loaded snapshot of jobs or nodes (nil keeps
// the current one).
func (v *view) install(jobs map[string]*Job, nodes map[string]seenNode, ready bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if jobs != nil {
		v.jobs = jobs
		v.byOwner = nil
		now := time.Now()
		for _, j := range jobs {
			v.noteOwner(j, now)
			v.index(j)
		}
		for id := range v.owned {
			if jobs[id] == nil {
				delete(v.owned, id)
			}
		}
	}
	if nodes != nil {
		// A heartbeat the old view already had keeps its receipt time
		// (and a newer core heartbeat's jobs): a reload must not make a
		// node that stopped beating look fresh.
		for id, fresh := range nodes {
			if old, ok := v.nodes[id]; ok && old.rev >= fresh.rev {
				old.rev = fresh.rev
				nodes[id] = old
			}
		}
		// A node missing from the snapshot stays, as last heard: its
		// record expires (the bucket's TTL) whenever the bucket takes no
		// heartbeat for a while, an election, and a reload after one must
		// not make it look dead at once. pruneNodes forgets it in time; a
		// clean Close deletes it through the live watcher.
		for id, old := range v.nodes {
			if _, ok := nodes[id]; !ok {
				nodes[id] = old
			}
		}
		v.nodes = nodes
	}
	if jobs != nil || ready != v.ready {
		v.notify()
	}
	v.ready = ready
}

// jobsSnapshot copies the jobs, sorted by id.
func (v *view) jobsSnapshot() []*Job {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]*Job, 0, len(v.jobs))
	for _, j := range v.jobs {
		c := *j
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *Job) int { return strings.Compare(a.Spec.ID, b.Spec.ID) })
	return out
}

func (v *view) isReady() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ready
}

// refresh replaces a job with a newer copy read directly (after a failed
// write showed the view was behind).
func (v *view) refresh(j *Job) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.jobs[j.Spec.ID]; !ok || cur.Revision < j.Revision {
		c := *j
		v.setJob(j.Spec.ID, &c)
		v.noteOwner(&c, time.Now())
		v.notify()
	}
}

// watchLoop keeps the view current. It restarts the watchers after a
// reconnect, and when this node's own heartbeats are acknowledged but stop
// coming back: the KV watcher's ordered consumer would otherwise notice a
// restarted server, or a stream leader gone with a killed server, only
// after its idle heartbeats (5 s, twice) go missing.
func (n *Node) watchLoop() {
	defer n.wg.Done()
	for n.ctx.Err() == nil {
		if err := n.watchOnce(); err != nil && n.ctx.Err() == nil {
			n.log.Debug("watch restarts", "err", err)
			n.sleep(n.Heartbeat)
		}
	}
}

// errWatchEnded: a watcher's subscription closed under it (the connection
// closed, or the server dropped the consumer).
var errWatchEnded = errors.New("watcher ended")

func (n *Node) watchOnce() error {
	reconns := n.nc.Stats().Reconnects
	jw, err := n.Store.jobs.WatchAll(n.ctx)
	if err != nil {
		return err
	}
	defer stopWatcher(jw)
	nw, err := n.Store.nodes.WatchAll(n.ctx)
	if err != nil {
		return err
	}
	defer stopWatcher(nw)

	// Initial values go into fresh maps, swapped in at the end-of-snapshot
	// marker, so that keys deleted while we were away disappear.
	jobs, nodes := map[string]*Job{}, map[string]seenNode{}
	jobsInit, nodesInit := false, false
	check := time.NewTicker(200 * time.Millisecond)
	defer check.Stop()
	started := time.Now()
	for {
		select {
		case <-n.ctx.Done():
			return nil
		case <-check.C:
			if n.nc.Stats().Reconnects != reconns {
				return nil // start over at once, from a fresh snapshot
			}
			if now := time.Now(); now.Sub(started) > 2*n.healthWindow() && n.watchStalled(now) {
				n.log.Debug("own heartbeats acknowledged but not coming back: restarting the watchers")
				return nil
			}
		case e, ok := <-jw.Updates():
			if !ok {
				return errWatchEnded
			}
			if e == nil {
				jobsInit = true
				n.view.install(jobs, nil, jobsInit && nodesInit)
				n.resync(jobs)
				continue
			}
			j := n.applyJob(e, jobs, jobsInit)
			if j != nil && jobsInit {
				n.observed(j)
			}
		case e, ok := <-nw.Updates():
			if !ok {
				return errWatchEnded
			}
			if e == nil {
				nodesInit = true
				n.view.install(nil, nodes, jobsInit && nodesInit)
				continue
			}
			n.applyNode(e, nodes, nodesInit)
		}
	}
}

// applyJob records one job entry, in the live view once the snapshot is
// loaded, and returns the decoded job (nil for deletions and bad values).
func (n *Node) applyJob(e jetstream.KeyValueEntry, fresh map[string]*Job, live bool) *Job {
	n.view.mu.Lock()
	defer n.view.mu.Unlock()
	m := fresh
	if live {
		m = n.view.jobs
	}
	if live {
		defer n.view.notify()
	}
	set := func(j *Job) {
		switch {
		case live:
			n.view.setJob(e.Key(), j)
		case j == nil:
			delete(m, e.Key())
		default:
			m[e.Key()] = j
		}
	}
	if e.Operation() != jetstream.KeyValuePut {
		set(nil)
		if live {
			n.observedGone(e.Key())
		}
		return nil
	}
	j, err := decodeJob(e)
	if err != nil {
		// What the view held for the key is no longer the job's record:
		// drop it, so that nothing is decided on a copy the store has
		// overwritten. Store.Corrupt lists such keys; Delete purges them.
		set(nil)
		n.log.Warn("unreadable job record", "job", e.Key(), "err", err)
		if live {
			n.observedGone(e.Key())
		}
		return nil
	}
	if cur, ok := m[e.Key()]; !ok || cur.Revision < j.Revision {
		set(j)
		if live {
			n.view.noteOwner(j, time.Now())
		}
	}
	c := *j
	return &c
}

func (n *Node) applyNode(e jetstream.KeyValueEntry, fresh map[string]seenNode, live bool) {
	n.view.mu.Lock()
	defer n.view.mu.Unlock()
	m := fresh
	if live {
		m = n.view.nodes
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(m, e.Key())
		return
	}
	info, err := decodeBeat(e.Value(), m[e.Key()].info) // not decoded again when unchanged (beat.go)
	if err != nil {
		n.log.Warn("unreadable node record", "node", e.Key(), "err", err)
		return
	}
	now := time.Now()
	if old, ok := m[e.Key()]; ok && e.Revision() <= old.rev {
		return // delivered again, or already read directly: not a new sign of life
	}
	m[e.Key()] = seenNode{info: info, seen: now, rev: e.Revision()}
	if e.Key() == n.ID {
		n.echoed(now)
	}
}

// watchStalled reports whether this node's heartbeats are acknowledged but
// none came back through the watcher for a while.
func (n *Node) watchStalled(now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.health
	w := n.healthWindow()
	return !h.lastAck.IsZero() && now.Sub(h.lastAck) <= w && now.Sub(h.lastEcho) > 2*w
}

// resync hands every attempt of this node its job from a freshly loaded
// snapshot (or tells it the record is gone): changes made while the
// watcher was away reach the owner too.
func (n *Node) resync(jobs map[string]*Job) {
	n.mu.Lock()
	list := n.attemptList()
	n.mu.Unlock()
	for _, a := range list {
		if j, ok := jobs[a.id]; ok {
			c := *j
			a.observe(&c)
		} else {
			a.observeGone()
		}
	}
}

// observedGone tells this node's attempt for the job, if any, that its
// record was deleted or became unreadable.
func (n *Node) observedGone(id string) {
	n.mu.Lock()
	a := n.attempts[id]
	n.mu.Unlock()
	if a != nil {
		a.observeGone()
	}
}

// observed hands a changed job to this node's attempt for it, if any: how
// an owner learns at once that it was asked to stop or lost the job.
func (n *Node) observed(j *Job) {
	n.mu.Lock()
	a := n.attempts[j.Spec.ID]
	n.mu.Unlock()
	if a != nil {
		a.observe(j)
	}
}

// stopWatcher stops a KV watcher and drains it: the watcher's callback
// blocks on a full Updates channel while holding its lock, so it must be
// emptied for the subscription's goroutine to end. The channel is closed
// by the subscription's close handler, which never runs when the
// connection is already gone: draining stops once nothing came for a while.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	idle := time.NewTimer(watcherDrainIdle)
	defer idle.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
			idle.Reset(watcherDrainIdle)
		case <-idle.C:
			return
		}
	}
}

// watcherDrainIdle is how long stopWatcher waits for a stopped watcher's
// channel to close.
const watcherDrainIdle = 500 * time.Millisecond
