package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/redact"
)

// Names of the JetStream resources. Every node opens them idempotently.
const (
	JobsBucket     = "prism_jobs"     // job id → Job (JSON), revision-checked
	NodesBucket    = "prism_nodes"    // node id → NodeInfo (JSON), expires without heartbeats
	DispatchStream = "PRISM_DISPATCH" // work queue of dispatch tickets
	// DispatchSubjects are the ticket subjects, prism.dispatch.<job id>.
	DispatchSubjects = "prism.dispatch.>"

	dispatchPrefix   = "prism.dispatch."
	dispatchConsumer = "prism-nodes" // the one durable consumer every node pulls from
)

// Store defaults and fixed limits. JetStream enforces the sizes, so that
// nothing that can write on the bus (a bug, a hostile client) fills the
// servers' disk or memory; Submit checks the job count and record size
// first, to fail with a clear error.
const (
	DefaultMaxJobs        = 1000
	DefaultMaxRecordBytes = 1 << 20   // a job record; a lean one is about 1 KiB
	DefaultJobsMaxBytes   = 256 << 20 // 1000 jobs × 64 revisions × 4 KiB

	// recordSlack is what a job's life adds to its submitted record (owner,
	// lease, reason of at most maxReasonLen, timestamps) and the message
	// headers of a revision-checked write: Submit leaves it free.
	recordSlack  = 4 << 10
	maxReasonLen = 1 << 10

	nodesMaxBytes     = 16 << 20 // heartbeats of a few hundred bytes, in memory
	nodesMaxValueSize = 64 << 10
	// Tickets name a job (at most 64 bytes) and carry a message id.
	dispatchMaxMsgs    = 100_000
	dispatchMaxBytes   = 64 << 20
	dispatchMaxMsgSize = 4 << 10
)

// LadderCheck resolves a job's ladder (a shipped name or file path in ref,
// or inline YAML) and returns its nominal encoding cost in pixels per
// second. It is a parameter so that this package does not import the
// transcoder; queue/ladderref provides the real one.
type LadderCheck func(ref, inlineYAML string) (cost float64, err error)

// StoreConfig configures the JetStream resources.
type StoreConfig struct {
	// Replicas of every bucket and stream: 1 for one server, 3 in a cluster
	// (so that losing one server loses no job).
	Replicas int
	// History is how many revisions of each job are kept (default 64, the
	// maximum; at least 10). Only state changes are revisions: an owner
	// does not rewrite a running job (its node's heartbeat is the lease).
	History int
	// NodeTTL is how long a node stays listed without a heartbeat (default
	// 1.5 s, three default heartbeats).
	NodeTTL time.Duration
	// DuplicateWindow is how long a repeated submission is recognised by
	// its message id (default 2 min).
	DuplicateWindow time.Duration
	// CheckLadder validates ladder references at submission and gives the
	// job's cost. Nil accepts any non-empty reference at cost 0.
	CheckLadder LadderCheck
	// SourceCost prices a pushed stream's job from its publisher's source
	// (Spec.Ingest) instead of the nominal cost; nil keeps the nominal one.
	SourceCost SourceCost
	// RequiredEncoder names the hardware encoder a ladder cannot run
	// without ("nvenc" for a rung with encoder: nvenc and no software
	// fallback), or "". A job without an encoder constraint gets it, so it
	// is placed only where that encoder opens. Nil adds none.
	RequiredEncoder func(ref, inlineYAML string) (string, error)
	// OpTimeout bounds each JetStream request (default 5 s).
	OpTimeout time.Duration
	// MaxJobs bounds the jobs in the store, ended ones included (default
	// DefaultMaxJobs): Submit of a new id beyond it fails with
	// ErrTooManyJobs. Concurrent submissions from several clients may
	// overshoot it by a few; JobsMaxBytes is the hard bound.
	MaxJobs int
	// MaxRecordBytes is the largest job record the prism_jobs bucket
	// accepts (its MaxValueSize; default DefaultMaxRecordBytes, at least
	// 16 KiB). Submit refuses a spec whose record would leave less than
	// 4 KiB of it for what the job's life adds (ErrInvalidSpec, "spec").
	MaxRecordBytes int
	// JobsMaxBytes bounds the prism_jobs bucket, every kept revision
	// included (default DefaultJobsMaxBytes). A full bucket refuses
	// writes, claims and state changes included: size it for MaxJobs × History ×
	// the typical record (a few KiB with an inline ladder).
	JobsMaxBytes int64
}

func (c *StoreConfig) applyDefaults() error {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("store: Replicas %d: want 1..5", c.Replicas)
	}
	if c.History == 0 {
		c.History = jetstream.KeyValueMaxHistory
	}
	if c.History < 10 || c.History > jetstream.KeyValueMaxHistory {
		return fmt.Errorf("store: History %d: want 10..%d", c.History, jetstream.KeyValueMaxHistory)
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = 3 * DefaultHeartbeat
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 5 * time.Second
	}
	if c.MaxJobs == 0 {
		c.MaxJobs = DefaultMaxJobs
	}
	if c.MaxJobs < 0 {
		return fmt.Errorf("store: MaxJobs %d: want at least 1", c.MaxJobs)
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.MaxRecordBytes < 4*recordSlack || c.MaxRecordBytes > math.MaxInt32 {
		return fmt.Errorf("store: MaxRecordBytes %d: want %d..%d", c.MaxRecordBytes, 4*recordSlack, math.MaxInt32)
	}
	if c.JobsMaxBytes == 0 {
		c.JobsMaxBytes = DefaultJobsMaxBytes
	}
	if c.JobsMaxBytes < int64(c.MaxRecordBytes) {
		return fmt.Errorf("store: JobsMaxBytes %d: want at least MaxRecordBytes (%d)", c.JobsMaxBytes, c.MaxRecordBytes)
	}
	return nil
}

// Store is the job state in JetStream, seen through one NATS connection.
// It is safe for concurrent use. It does not own the connection.
type Store struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	jobs     jetstream.KeyValue
	nodes    jetstream.KeyValue
	stream   jetstream.Stream
	consumer jetstream.Consumer
	// jobsStream is the stream under prism_jobs: its subject count bounds
	// the number of jobs in one request (roomFor).
	jobsStream jetstream.Stream
	// nodesCache is shared by the copies withClockOffset makes.
	nodesCache *nodesCache
	cfg        StoreConfig
	// skew shifts the wall-clock times this store writes: the clock-skew
	// test hook (Node.ClockOffset).
	skew time.Duration
}

// now is the wall-clock time the store writes.
func (s *Store) now() time.Time { return time.Now().Add(s.skew).UTC() }

// withClockOffset returns a copy of the store that writes times shifted by
// d (Node.ClockOffset, a test hook).
func (s *Store) withClockOffset(d time.Duration) *Store {
	c := *s
	c.skew = d
	return &c
}

// OpenStore creates (or updates to cfg) the buckets, the dispatch stream
// and its consumer. In a cluster JetStream answers only once it elected a
// leader, so errors are retried until ctx ends: give it a deadline, and a
// configuration the servers cannot satisfy (three replicas on one server)
// is reported when it passes.
func OpenStore(ctx context.Context, nc *nats.Conn, cfg StoreConfig) (*Store, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{nc: nc, js: js, cfg: cfg, nodesCache: &nodesCache{}}
	delay := 50 * time.Millisecond
	for {
		err = s.open(ctx)
		if err == nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("store: open %s, %s, %s: %w", JobsBucket, NodesBucket, DispatchStream, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

func (s *Store) open(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	s.jobs, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       JobsBucket,
		Description:  "Prism jobs: spec, state and owner",
		History:      uint8(s.cfg.History),
		Storage:      jetstream.FileStorage,
		Replicas:     s.cfg.Replicas,
		MaxValueSize: int32(s.cfg.MaxRecordBytes),
		MaxBytes:     s.cfg.JobsMaxBytes,
	})
	if err != nil {
		return err
	}
	s.jobsStream, err = s.js.Stream(ctx, "KV_"+JobsBucket)
	if err != nil {
		return err
	}
	s.nodes, err = s.js.CreateOrUpdateKeyValue(ctx, s.nodesConfig())
	if err != nil {
		return err
	}
	s.stream, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DispatchStream,
		Description: "Prism dispatch tickets: a node with capacity claims the job named by the subject",
		Subjects:    []string{DispatchSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  s.cfg.DuplicateWindow,
		Replicas:    s.cfg.Replicas,
		// Full, it drops the oldest tickets: they are hints, and
		// maintenance republishes the ticket of a pending job that has none.
		Discard:    jetstream.DiscardOld,
		MaxMsgs:    dispatchMaxMsgs,
		MaxBytes:   dispatchMaxBytes,
		MaxMsgSize: dispatchMaxMsgSize,
	})
	if err != nil {
		return err
	}
	s.consumer, err = s.js.CreateOrUpdateConsumer(ctx, DispatchStream, jetstream.ConsumerConfig{
		Durable:     dispatchConsumer,
		Description: "shared by every Prism node; each pulls one ticket per free slot",
		AckPolicy:   jetstream.AckExplicitPolicy,
		// Handling a ticket takes a few requests; a node that dies holding
		// one leaves it for this long.
		AckWait: 5 * time.Second,
		// A ticket nobody can take yet is retried forever: capacity may
		// join the cluster later.
		MaxDeliver:    -1,
		MaxAckPending: 10000,
	})
	return err
}

func (s *Store) nodesConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       NodesBucket,
		Description:  "Prism node heartbeats",
		History:      1,
		TTL:          s.cfg.NodeTTL,
		Storage:      jetstream.MemoryStorage, // heartbeats are worthless after a restart
		Replicas:     s.cfg.Replicas,
		MaxValueSize: nodesMaxValueSize,
		MaxBytes:     nodesMaxBytes,
	}
}

// ensureNodes recreates the nodes bucket if it is gone: a memory stream
// does not survive the restart of a server that is not clustered, and
// without it no heartbeat is acknowledged (the owners would fence).
func (s *Store) ensureNodes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	_, err := s.js.KeyValue(ctx, NodesBucket)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return err
	}
	_, err = s.js.CreateOrUpdateKeyValue(ctx, s.nodesConfig())
	return err
}

// Get returns the job's current record. A record that does not decode
// fails with ErrCorruptJob (Delete purges it).
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	e, err := s.entry(ctx, id)
	if err != nil {
		return nil, err
	}
	return decodeJob(e)
}

// entry reads the job's current KV entry, undecoded.
func (s *Store) entry(ctx context.Context, id string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	e, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return e, nil
}

// List returns every job, sorted by id. Records that do not decode are
// left out, so that one damaged record does not hide the others: Corrupt
// names them.
func (s *Store) List(ctx context.Context) ([]*Job, error) {
	jobs, _, err := s.list(ctx)
	return jobs, err
}

// Corrupt returns the ids whose records do not decode (ErrCorruptJob),
// sorted: what List leaves out. Delete purges them.
func (s *Store) Corrupt(ctx context.Context) ([]string, error) {
	_, corrupt, err := s.list(ctx)
	return corrupt, err
}

func (s *Store) list(ctx context.Context) (jobs []*Job, corrupt []string, err error) {
	keys, err := s.keys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list jobs: %w", err)
	}
	slices.Sort(keys)
	jobs = make([]*Job, 0, len(keys))
	for _, k := range keys {
		j, err := s.Get(ctx, k)
		switch {
		case errors.Is(err, ErrJobNotFound):
			continue // deleted between listing and reading
		case errors.Is(err, ErrCorruptJob):
			corrupt = append(corrupt, k)
			continue
		case err != nil:
			return nil, nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, corrupt, nil
}

// keys lists the ids in the bucket, corrupt records included.
func (s *Store) keys(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	keys, err := s.jobs.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	return keys, err
}

// Update writes j if the job is still at j.Revision (compare-and-set) and
// returns the new record. A concurrent writer makes it fail with
// ErrConflict: whoever lost re-reads and decides again, which is how a node
// learns it no longer owns a job.
func (s *Store) Update(ctx context.Context, j *Job) (*Job, error) {
	n := *j
	n.UpdatedAt = s.now()
	n.Reason = clipReason(n.Reason)
	data, err := json.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("update job %s: %w", j.Spec.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	rev, err := s.jobs.Update(ctx, j.Spec.ID, data, j.Revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, fmt.Errorf("%w: %s at revision %d: %w", ErrConflict, j.Spec.ID, j.Revision, err)
	}
	if err != nil {
		return nil, fmt.Errorf("update job %s: %w", j.Spec.ID, err)
	}
	n.Revision = rev
	return &n, nil
}

// modify applies change to the current record and writes it with
// compare-and-set, re-reading and retrying after a conflict. change returns
// false to leave the record as it is.
func (s *Store) modify(ctx context.Context, id string, change func(j *Job) bool) (*Job, error) {
	for {
		j, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !change(j) {
			return j, nil
		}
		n, err := s.Update(ctx, j)
		if errors.Is(err, ErrConflict) {
			if ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		return n, err
	}
}

// History returns every kept revision of the job, oldest first, each with
// its Revision set: the audit trail of owners and states.
func (s *Store) History(ctx context.Context, id string) ([]*Job, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	entries, err := s.jobs.History(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("history of job %s: %w", id, err)
	}
	var out []*Job
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		j, err := decodeJob(e)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// decodeJob decodes a record; one that is not a job of its key fails with
// ErrCorruptJob.
func decodeJob(e jetstream.KeyValueEntry) (*Job, error) {
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, fmt.Errorf("%w: %s revision %d: %w", ErrCorruptJob, e.Key(), e.Revision(), err)
	}
	if j.Spec.ID != e.Key() {
		return nil, fmt.Errorf("%w: %s revision %d: the record is of job %q", ErrCorruptJob, e.Key(), e.Revision(), j.Spec.ID)
	}
	j.Revision = e.Revision()
	return &j, nil
}

// clipReason bounds a reason (often a runner's error, which may quote a
// whole FFmpeg message), so that the record stays within recordSlack of
// what was submitted.
// Secrets in the URLs a reason quotes are masked: reasons are shown by the
// API and logged.
func clipReason(r string) string {
	r = redact.Text(r)
	if len(r) <= maxReasonLen {
		return r
	}
	cut := maxReasonLen - len("…")
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut] + "…"
}

// Conn returns the connection the store uses.
func (s *Store) Conn() *nats.Conn { return s.nc }
