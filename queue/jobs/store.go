package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	// maximum; at least 10). Lease renewals are revisions too.
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
	// OpTimeout bounds each JetStream request (default 5 s).
	OpTimeout time.Duration
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
	cfg      StoreConfig
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
	s := &Store{nc: nc, js: js, cfg: cfg}
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
		Bucket:      JobsBucket,
		Description: "Prism jobs: spec, state, owner and lease",
		History:     uint8(s.cfg.History),
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return err
	}
	s.nodes, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      NodesBucket,
		Description: "Prism node heartbeats",
		History:     1,
		TTL:         s.cfg.NodeTTL,
		Storage:     jetstream.MemoryStorage, // heartbeats are worthless after a restart
		Replicas:    s.cfg.Replicas,
	})
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

// Get returns the job's current record.
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	e, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return decodeJob(e)
}

// List returns every job, sorted by id.
func (s *Store) List(ctx context.Context) ([]*Job, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	keys, err := s.jobs.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	slices.Sort(keys)
	jobs := make([]*Job, 0, len(keys))
	for _, k := range keys {
		j, err := s.Get(ctx, k)
		if errors.Is(err, ErrJobNotFound) {
			continue // deleted between listing and reading
		}
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// Update writes j if the job is still at j.Revision (compare-and-set) and
// returns the new record. A concurrent writer makes it fail with
// ErrConflict: whoever lost re-reads and decides again, which is how a node
// learns it no longer owns a job.
func (s *Store) Update(ctx context.Context, j *Job) (*Job, error) {
	n := *j
	n.UpdatedAt = time.Now().UTC()
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
// its Revision set: the audit trail of owners and leases.
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

func decodeJob(e jetstream.KeyValueEntry) (*Job, error) {
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, fmt.Errorf("job %s revision %d: %w", e.Key(), e.Revision(), err)
	}
	j.Revision = e.Revision()
	return &j, nil
}

// Conn returns the connection the store uses.
func (s *Store) Conn() *nats.Conn { return s.nc }
