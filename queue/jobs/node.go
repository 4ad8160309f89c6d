package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/pipeline"
)

// Node defaults. A node's heartbeat is the lease of all its jobs: others
// call it dead after four heartbeats unheard (counted on their own clock,
// while they themselves are healthy), so a node that misses one beat (a GC
// pause, a slow write) keeps its jobs, while a dead node's jobs run
// elsewhere about two seconds after its last heartbeat. An owner stops its
// jobs itself only after FenceAfter without an acknowledged heartbeat:
// longer than a JetStream election (nats-server: several seconds), so
// losing one server of a cluster stops nothing.
const (
	DefaultHeartbeat     = 500 * time.Millisecond
	DefaultNodeDeadAfter = 2 * time.Second
	DefaultFenceAfter    = 12 * time.Second
	// DefaultLeaseTTL is the old name of DefaultNodeDeadAfter.
	DefaultLeaseTTL     = DefaultNodeDeadAfter
	DefaultStartTimeout = 30 * time.Second
	DefaultMaxAttempts  = 5
	// DefaultCPUBudgetPerCore is a conservative x264 veryfast figure: the
	// project's benchmark encodes ~1.7e8 px/s of a 720p/480p/360p ladder on
	// two cores, decoding 1080p included. Calibrate for real numbers.
	DefaultCPUBudgetPerCore = 6e7
)

// DefaultCapacity is DefaultCPUBudgetPerCore for each CPU this process may
// use: GOMAXPROCS, which follows a cgroup CPU limit, as the job shares do
// (queue/worker), so that a container given 4 of 64 CPUs advertises 4.
func DefaultCapacity() float64 { return DefaultCPUBudgetPerCore * float64(runtime.GOMAXPROCS(0)) }

// Runner runs a job's media work. Run blocks until ctx is cancelled (stop,
// lost ownership, drain) or the job fails; it calls running() once the
// media is flowing. It must return soon after ctx is cancelled: the node
// waits for it, still listing the job in its heartbeat, before it records
// the job's end or lets another node start it.
type Runner interface {
	Run(ctx context.Context, spec Spec, running func()) error
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, spec Spec, running func()) error

// Run implements Runner.
func (f RunnerFunc) Run(ctx context.Context, spec Spec, running func()) error {
	return f(ctx, spec, running)
}

// Node is the agent that runs jobs on one Prism node: it heartbeats in
// prism_nodes (listing its jobs: the heartbeat is their lease), claims
// dispatched jobs it has room for, and takes over jobs whose owner is dead
// or no longer runs them. Set the exported fields, then Start; Drain and
// Close end it.
type Node struct {
	ID       string   // unique in the cluster; letters, digits, '-', '_'
	Roles    []string // advertised (RoleTranscode, RoleServe)
	Store    *Store   // on this node's own connection
	Runner   Runner   // required when Capacity > 0
	Capacity float64  // pixels/s this node encodes; 0 takes no jobs
	GPUs     []string // from the GPU probe
	Encoders []string // encoders that open here; Constraints.Encoder must be one

	Heartbeat time.Duration // default DefaultHeartbeat
	// NodeDeadAfter is how long another node must go unheard (on this
	// node's clock, while this node is healthy) before this node takes its
	// jobs over; default DefaultNodeDeadAfter, at least two heartbeats.
	NodeDeadAfter time.Duration
	// LeaseTTL is the old name of NodeDeadAfter, used when that is zero.
	LeaseTTL time.Duration
	// FenceAfter: a node whose heartbeats have not been acknowledged for
	// this long (disconnected, or connected without a JetStream quorum)
	// stops its runners, so that a cut-off owner does not run on forever
	// beside the node that took its jobs. Default DefaultFenceAfter; more
	// than NodeDeadAfter.
	FenceAfter time.Duration
	// ClockOffset shifts every wall-clock time this node writes or reads
	// (UpdatedAt, NotBefore, heartbeat timestamps). A test hook, to show
	// that skewed clocks steal no jobs; leave it zero.
	ClockOffset  time.Duration
	StartTimeout time.Duration // running() must come within this; default DefaultStartTimeout
	MaxAttempts  int           // failed attempts before the job fails; default DefaultMaxAttempts
	// Retry paces a failed job's next attempts; an attempt running
	// Retry.StableAfter resets the job's Attempts. Zero fields take
	// DefaultRetryPolicy's.
	Retry RetryPolicy
	Log   *slog.Logger

	nc     *nats.Conn
	log    *slog.Logger
	ctx    context.Context // the node's life; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the node started
	view   view
	wake   chan struct{} // capacity or draining changed: the dispatch loop looks again
	beatCh chan struct{} // heartbeat now (capacity changed)

	pulling   sync.Mutex // held while a dispatch pull is outstanding
	mu        sync.Mutex
	state     nodeState
	attempts  map[string]*attempt
	used      float64
	draining  bool
	health    health
	orphans   map[string]time.Time // job id → when this node first judged it orphaned
	closeOnce sync.Once
	beats     *nats.Subscription // core heartbeats of every node (beat.go)
}

// health is this node's own standing, on its monotonic clock: when its
// heartbeats were last acknowledged and last came back through its
// watcher or as core heartbeats, and since when it has heard itself
// without a break. A node judges
// others dead only while healthy, and only over time it was healthy: an
// election on the nodes bucket or a stalled watcher, which silences
// everyone's heartbeats alike, makes nobody look dead. Guarded by Node.mu.
type health struct {
	lastAck      time.Time // last heartbeat the server acknowledged (sent at)
	lastEcho     time.Time // last own heartbeat received by the watcher
	lastCoreEcho time.Time // last own core heartbeat received (beat.go)
	healthySince time.Time // zero while unhealthy
}

type nodeState int

const (
	nodeNew nodeState = iota
	nodeStarted
	nodeClosed
)

func (n *Node) applyDefaults() error {
	if !pipeline.ValidName(n.ID) {
		return fmt.Errorf("%w: ID %q: use letters, digits, '-' and '_' (at most 64)", ErrNodeConfig, n.ID)
	}
	if n.Store == nil {
		return fmt.Errorf("%w: %s: Store is required", ErrNodeConfig, n.ID)
	}
	if n.Capacity < 0 {
		return fmt.Errorf("%w: %s: Capacity %g is negative", ErrNodeConfig, n.ID, n.Capacity)
	}
	if n.Capacity > 0 && n.Runner == nil {
		return fmt.Errorf("%w: %s: a node with capacity needs a Runner", ErrNodeConfig, n.ID)
	}
	setDefault(&n.Heartbeat, DefaultHeartbeat)
	setDefault(&n.NodeDeadAfter, n.LeaseTTL)
	setDefault(&n.NodeDeadAfter, DefaultNodeDeadAfter)
	n.LeaseTTL = n.NodeDeadAfter
	setDefault(&n.FenceAfter, max(DefaultFenceAfter, 2*n.NodeDeadAfter))
	setDefault(&n.StartTimeout, DefaultStartTimeout)
	setDefault(&n.MaxAttempts, DefaultMaxAttempts)
	n.Retry = n.Retry.OrDefault()
	if ttl := n.Store.cfg.NodeTTL; 2*n.Heartbeat > ttl {
		return fmt.Errorf("%w: %s: Heartbeat %s must be at most half the store's NodeTTL (%s), or the node looks dead between beats", ErrNodeConfig, n.ID, n.Heartbeat, ttl)
	}
	if n.NodeDeadAfter < 2*n.Heartbeat {
		return fmt.Errorf("%w: %s: NodeDeadAfter %s must be at least two heartbeats (%s)", ErrNodeConfig, n.ID, n.NodeDeadAfter, n.Heartbeat)
	}
	if n.FenceAfter <= n.NodeDeadAfter {
		return fmt.Errorf("%w: %s: FenceAfter %s must be longer than NodeDeadAfter %s", ErrNodeConfig, n.ID, n.FenceAfter, n.NodeDeadAfter)
	}
	if n.Heartbeat <= 0 || n.StartTimeout <= 0 || n.MaxAttempts <= 0 {
		return fmt.Errorf("%w: %s: durations and MaxAttempts must be positive", ErrNodeConfig, n.ID)
	}
	n.log = n.Log
	if n.log == nil {
		n.log = slog.Default()
	}
	n.log = n.log.With("node", n.ID)
	return nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Start registers the node and starts its loops. ctx bounds only the
// start-up; Close ends the node.
func (n *Node) Start(ctx context.Context) error {
	if err := n.applyDefaults(); err != nil {
		return err
	}
	n.mu.Lock()
	if n.state != nodeNew {
		n.mu.Unlock()
		return fmt.Errorf("%w: %s: Start called twice", ErrNodeConfig, n.ID)
	}
	n.state = nodeStarted
	n.nc = n.Store.nc
	n.attempts = make(map[string]*attempt)
	n.wake = make(chan struct{}, 1)
	n.beatCh = make(chan struct{}, 1)
	n.orphans = make(map[string]time.Time)
	n.health = health{}
	if n.ClockOffset != 0 {
		n.Store = n.Store.withClockOffset(n.ClockOffset)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.mu.Unlock()

	if err := n.firstBeat(ctx); err != nil {
		n.cancel()
		n.mu.Lock()
		n.state = nodeNew // nothing started: Start may be tried again
		n.mu.Unlock()
		return fmt.Errorf("node %s: first heartbeat: %w", n.ID, err)
	}
	beats, err := n.subscribeBeats()
	if err != nil {
		n.cancel()
		n.mu.Lock()
		n.state = nodeNew
		n.mu.Unlock()
		return fmt.Errorf("node %s: subscribe to core heartbeats: %w", n.ID, err)
	}
	n.beats = beats
	n.wg.Add(5)
	go n.watchLoop()
	go n.beatLoop()
	go n.kvBeatLoop()
	go n.tickLoop()
	go n.dispatchLoop()
	n.log.Info("node started", "capacity", formatRate(n.Capacity), "heartbeat", n.Heartbeat,
		"dead_after", n.NodeDeadAfter, "fence_after", n.FenceAfter)
	return nil
}

// KnownJobs returns every job as this node's KV watchers last saw it, sorted
// by id, without a NATS round trip; ok is false until the first snapshot
// is loaded (or while reloading after a reconnect).
func (n *Node) KnownJobs() (jobs []*Job, ok bool) {
	if !n.view.isReady() {
		return nil, false
	}
	return n.view.jobsSnapshot(), true
}

// JobsChanged is woken after KnownJobs changed: a job was written,
// deleted, or the view reloaded. Wake-ups coalesce, and there is one
// channel for the node, so it has one receiver (the media watcher).
func (n *Node) JobsChanged() <-chan struct{} { return n.view.changes() }

// Drain stops taking jobs and hands every running job back (pending, owner
// cleared, dispatched again) so that other nodes start them, then returns.
// The node keeps heartbeating, marked draining, until Close.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	started := n.state == nodeStarted
	n.mu.Unlock()
	if !started {
		return nil
	}
	return n.drain(ctx)
}

func (n *Node) drain(ctx context.Context) error {
	n.mu.Lock()
	n.draining = true
	list := n.attemptList()
	n.mu.Unlock()
	n.poke(n.wake)
	n.poke(n.beatCh)
	// Let an outstanding pull end (at most a second) before handing jobs
	// back; the dispatch loop pulls no more once draining.
	n.pulling.Lock()
	n.pulling.Unlock() //nolint:staticcheck // a barrier, not a critical section
	for _, a := range list {
		a.handBack()
	}
	for _, a := range list {
		select {
		case <-a.done:
		case <-ctx.Done():
			return fmt.Errorf("node %s: drain: %w", n.ID, ctx.Err())
		}
	}
	n.log.Info("node drained", "jobs", len(list))
	return nil
}

// Close hands running jobs back (as Drain, for at most NodeDeadAfter) so
// that nobody waits to call this node dead, stops every goroutine of the
// node and removes its heartbeat. On a closed connection nothing can be
// handed back: the jobs then move once the others call this node dead,
// exactly as if the process had died.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		started := n.state == nodeStarted
		if !started {
			n.state = nodeClosed
		}
		n.mu.Unlock()
		if !started {
			return
		}
		if !n.nc.IsClosed() {
			ctx, cancel := context.WithTimeout(context.Background(), n.NodeDeadAfter)
			if err := n.drain(ctx); err != nil {
				n.log.Warn("close: hand-back incomplete", "err", err)
			}
			cancel()
		}
		n.mu.Lock()
		n.state = nodeClosed
		list := n.attemptList()
		n.mu.Unlock()
		for _, a := range list {
			a.abandonRun("node closed")
		}
		for _, a := range list {
			<-a.done
		}
		n.cancel()
		n.wg.Wait()
		_ = n.beats.Unsubscribe()
		if !n.nc.IsClosed() {
			ctx, cancel := context.WithTimeout(context.Background(), n.Heartbeat)
			_ = n.Store.deleteNode(ctx, n.ID) // best effort: it expires anyway
			cancel()
		}
		n.log.Info("node closed")
	})
	return nil
}

// Jobs returns the ids of the jobs this node runs now.
func (n *Node) Jobs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := make([]string, 0, len(n.attempts))
	for id := range n.attempts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (n *Node) attemptList() []*attempt {
	list := make([]*attempt, 0, len(n.attempts))
	for _, a := range n.attempts {
		list = append(list, a)
	}
	return list
}

// info is this node's heartbeat record.
func (n *Node) info() *NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.infoLocked()
}

func (n *Node) infoLocked() *NodeInfo {
	jobs := make([]string, 0, len(n.attempts))
	for id := range n.attempts {
		jobs = append(jobs, id)
	}
	slices.Sort(jobs)
	return &NodeInfo{
		ID: n.ID, Roles: n.Roles, CPUBudget: n.Capacity, Used: n.used, GPUs: n.GPUs, Encoders: n.Encoders,
		Jobs: jobs, Draining: n.draining || n.state == nodeClosed, Heartbeat: n.wallNow(),
	}
}

// wallNow is the wall-clock time this node writes, ClockOffset included.
// Nothing compares it with another host's clock; it is for people.
func (n *Node) wallNow() time.Time { return time.Now().Add(n.ClockOffset).UTC() }

// beat writes the heartbeat and notes when the server acknowledged one.
// firstBeatWait bounds the retries of a node's first heartbeat, as the
// store's opening is: a node restarted with its embedded server (kill -9)
// writes it while that server still catches up with the cluster, and a
// write then times out for a few seconds.
const firstBeatWait = 30 * time.Second

// firstBeat writes the node's first heartbeat, trying again (50 ms,
// doubling to 1 s) until it lands, ctx ends or firstBeatWait passed.
func (n *Node) firstBeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, firstBeatWait)
	defer cancel()
	retry := RetryPolicy{First: 50 * time.Millisecond, Max: time.Second}
	for failures := 1; ; failures++ {
		err := n.beat(ctx)
		if err == nil {
			return nil
		}
		if failures == 1 {
			n.log.Info("first heartbeat not written yet, trying again", "error", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%d tries, last: %w)", ctx.Err(), failures, err)
		case <-time.After(retry.Delay(failures)):
		}
	}
}

func (n *Node) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.opTimeout())
	defer cancel()
	sent := time.Now()
	if err := n.Store.putNode(ctx, n.info()); err != nil {
		return err
	}
	n.mu.Lock()
	n.health.lastAck = sent
	n.mu.Unlock()
	return nil
}

// echoed notes that this node's own heartbeat came back through the
// watcher.
func (n *Node) echoed(now time.Time) {
	n.mu.Lock()
	n.health.lastEcho = now
	n.mu.Unlock()
}

// healthWindow is how recent the last acknowledged and the last echoed
// heartbeat must be for this node to count as healthy: three beats, so
// one slow write does not break the run.
func (n *Node) healthWindow() time.Duration { return max(3*n.Heartbeat, 300*time.Millisecond) }

// hearsMost reports whether this node heard more than half the nodes it
// knows, itself included, within NodeDeadAfter (on receipt times only).
func (n *Node) hearsMost(now time.Time) bool {
	recent, known := n.view.heard(now, n.NodeDeadAfter)
	return 2*recent > known
}

// trackHealth updates healthySince; the tick loop calls it before judging.
func (n *Node) trackHealth(now time.Time) {
	most := n.hearsMost(now)
	n.mu.Lock()
	defer n.mu.Unlock()
	h := &n.health
	w := n.healthWindow()
	// Either path proves that this node hears the others: its KV
	// heartbeats acknowledged and coming back through the watcher, or its
	// core heartbeats coming back (they need no JetStream leader).
	kv := !h.lastAck.IsZero() && !h.lastEcho.IsZero() && now.Sub(h.lastAck) <= w && now.Sub(h.lastEcho) <= w
	// The core path counts only while most nodes are heard too: a node
	// whose core heartbeats reach only itself judges nobody.
	core := !h.lastCoreEcho.IsZero() && now.Sub(h.lastCoreEcho) <= w && most
	healthy := n.nc.Status() == nats.CONNECTED && (kv || core)
	switch {
	case !healthy:
		h.healthySince = time.Time{}
	case h.healthySince.IsZero():
		h.healthySince = now
	}
}

// healthyFor is how long this node has been healthy without a break (0
// while unhealthy).
func (n *Node) healthyFor(now time.Time) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.health.healthySince.IsZero() {
		return 0
	}
	return now.Sub(n.health.healthySince)
}

// unacked is how long this node's heartbeats have gone unacknowledged.
func (n *Node) unacked(now time.Time) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return now.Sub(n.health.lastAck)
}

// nodeDead reports whether node id is dead for this node: unheard for
// NodeDeadAfter, counted only over this node's current healthy run (see
// health). It never compares a time written by another host.
func (n *Node) nodeDead(id string, now time.Time) bool {
	n.mu.Lock()
	since := n.health.healthySince
	n.mu.Unlock()
	if since.IsZero() {
		return false
	}
	ref := since
	if seen, ok := n.view.lastSeen(id); ok && seen.After(ref) {
		ref = seen
	}
	return now.Sub(ref) > n.NodeDeadAfter
}

// opTimeout bounds one KV request made from a loop that must keep its
// rhythm (heartbeats, renewals, scans).
func (n *Node) opTimeout() time.Duration { return max(n.Heartbeat, 250*time.Millisecond) }

// poke signals a loop without blocking; one pending signal is enough.
func (n *Node) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// tickLoop fences this node when its heartbeats go
// unacknowledged for FenceAfter, and scans the jobs for orphans. It is the
// only goroutine that takes jobs over.
func (n *Node) tickLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.scanInterval())
	defer t.Stop()
	var nextMaint time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if n.nc.IsClosed() {
			// The connection will not come back: this node can neither
			// heartbeat nor publish media, which is what dying looks like to
			// the others. Stop the media at once; they take the jobs.
			n.abandonAll("connection closed")
			continue
		}
		if d := n.unacked(now); d > n.FenceAfter && n.hasAttempts() && !n.hearsMost(now) {
			// Positive evidence that the others may have taken our jobs:
			// they call us dead after NodeDeadAfter of the same silence.
			// Stop the media (a camera must not be pulled twice); the
			// records stay as they are, and the others, or we once back,
			// take the jobs over. A node that still hears most of the
			// cluster is heard by it (core heartbeats): the nodes bucket
			// takes no writes (an election, its catch-up after one, seen
			// to last 12 s), and nobody calls this node dead.
			n.abandonAll(fmt.Sprintf("heartbeats unacknowledged for %s (FenceAfter %s) and most nodes unheard", d.Round(time.Millisecond), n.FenceAfter))
		}
		n.trackHealth(now)
		n.scan(now)
		if !now.Before(nextMaint) {
			n.maintain(now)
			nextMaint = now.Add(n.NodeDeadAfter)
		}
	}
}

// kvBeatLoop writes the heartbeat to prism_nodes every Heartbeat, and at
// once when capacity changed (beatCh). It has its own goroutine because a
// write waits up to a heartbeat while the bucket elects a leader, and the
// check that recreates a lost bucket longer: the tick loop's scans must
// not wait with them.
func (n *Node) kvBeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.Heartbeat)
	defer t.Stop()
	var nextEnsure, nextWarn time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.beatCh:
		case <-t.C:
		}
		if n.nc.IsClosed() {
			continue
		}
		now := time.Now()
		err := n.beat(n.ctx)
		switch {
		case err == nil || n.ctx.Err() != nil:
			if !nextWarn.IsZero() {
				n.log.Info("heartbeats acknowledged again")
				nextWarn = time.Time{}
			}
		case n.unacked(now) > n.healthWindow():
			// Long enough to be an election or worse, not one slow write:
			// say so, every 2 s, with the error.
			if now.After(nextWarn) {
				n.log.Warn("heartbeats unacknowledged", "for", n.unacked(now).Round(time.Millisecond), "fence_after", n.FenceAfter, "err", err)
				nextWarn = now.Add(2 * time.Second)
			}
			if n.nc.Status() == nats.CONNECTED && now.After(nextEnsure) {
				nextEnsure = now.Add(2 * time.Second)
				if err := n.Store.ensureNodes(n.ctx); err != nil {
					n.log.Debug("nodes bucket check failed", "err", err)
				}
			}
		default:
			n.log.Debug("heartbeat failed", "err", err)
		}
	}
}

// scanInterval is how often orphans are looked for: a fraction of a
// heartbeat, so takeover follows death closely.
func (n *Node) scanInterval() time.Duration { return min(n.Heartbeat/4, 100*time.Millisecond) }

func (n *Node) hasAttempts() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.attempts) > 0
}

func (n *Node) abandonAll(why string) {
	n.mu.Lock()
	list := n.attemptList()
	n.mu.Unlock()
	for _, a := range list {
		a.abandonRun(why)
	}
}

// wantsTickets reports whether this node could start some job now.
func (n *Node) wantsTickets() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state == nodeStarted && !n.draining && n.Capacity > 0 && n.used < n.Capacity &&
		n.nc.Status() == nats.CONNECTED
}

// canTake reports whether this node can start j now.
func (n *Node) canTake(j *Job) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.canTakeLocked(j)
}

func (n *Node) canTakeLocked(j *Job) bool {
	if n.state != nodeStarted || n.attempts[j.Spec.ID] != nil {
		return false
	}
	return n.infoLocked().fitsNow(j)
}

// load is the share of capacity in use, 0..1 (1 for a node without any).
func (n *Node) load() float64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.Capacity <= 0 {
		return 1
	}
	return min(n.used/n.Capacity, 1)
}
