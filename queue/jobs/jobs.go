package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Submit records a new job as pending and dispatches it. Submitting the
// same spec again is harmless (it returns the existing job, and the
// dispatch ticket is deduplicated); a different spec under the id of a job
// that has not ended fails with ErrJobExists. A stopped or failed job is
// started again with the submitted spec. A new id when the store holds
// StoreConfig.MaxJobs jobs fails with ErrTooManyJobs; an id whose record
// is corrupt fails with ErrCorruptJob until it is deleted.
// SubmitOption tunes Submit.
type SubmitOption func(*submitOptions)

type submitOptions struct{ replace bool }

// Replace lets Submit give an ended job's id to a different spec. Without
// it the id of a stopped or failed job keeps its spec (ErrJobExists), so
// nobody takes over a stream's name, and its viewers, by resubmitting it.
func Replace() SubmitOption { return func(o *submitOptions) { o.replace = true } }

func (s *Store) Submit(ctx context.Context, spec Spec, opts ...SubmitOption) (*Job, error) {
	var o submitOptions
	for _, f := range opts {
		f(&o)
	}
	if len(spec.Outputs) == 0 {
		spec.Outputs = nil // an empty and a missing list are the same request
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	// Before the ladder is parsed: an oversized spec costs nothing more.
	if n, limit := recordSize(spec), s.cfg.MaxRecordBytes-recordSlack; n > limit {
		return nil, fmt.Errorf("%w: %s: spec: the job record would be %d bytes, more than %d", ErrInvalidSpec, spec.ID, n, limit)
	}
	var cost float64
	if s.cfg.CheckLadder != nil {
		c, err := s.cfg.CheckLadder(spec.Ladder, spec.LadderYAML)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: ladder: %w", ErrInvalidSpec, spec.ID, err)
		}
		cost = c
		if s.cfg.RequiredEncoder != nil && (spec.Constraints.Encoder == "" || spec.Constraints.Encoder == "auto") {
			if enc, err := s.cfg.RequiredEncoder(spec.Ladder, spec.LadderYAML); err == nil && enc != "" {
				spec.Constraints.Encoder = enc
			}
		}
		if in := spec.Ingest; in != nil && in.Width > 0 && in.Height > 0 && s.cfg.SourceCost != nil {
			if c, err := s.cfg.SourceCost(spec.Ladder, spec.LadderYAML, in.Width, in.Height, in.FPS); err == nil && c > 0 {
				cost = c
			}
		}
	}
	for {
		j, err := s.submitOnce(ctx, spec, cost, o)
		if errors.Is(err, ErrConflict) && ctx.Err() == nil {
			continue // the job changed while we looked at it: look again
		}
		return j, err
	}
}

// recordSize is the size of a fresh job record for spec.
func recordSize(spec Spec) int {
	data, err := json.Marshal(&Job{Spec: spec, State: StatePending})
	if err != nil {
		return math.MaxInt
	}
	return len(data)
}

func (s *Store) submitOnce(ctx context.Context, spec Spec, cost float64, o submitOptions) (*Job, error) {
	fresh := &Job{Spec: spec, State: StatePending, Cost: cost}
	fresh.Reason = s.pendingReason(ctx, fresh)
	fresh.UpdatedAt = s.now()
	data, err := json.Marshal(fresh)
	if err != nil {
		return nil, err
	}
	if err := s.roomFor(ctx, spec.ID); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	rev, err := s.jobs.Create(cctx, spec.ID, data)
	cancel()
	if err == nil {
		fresh.Revision = rev
		return fresh, s.dispatch(ctx, fresh)
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("submit %s: %w", spec.ID, err)
	}

	cur, err := s.Get(ctx, spec.ID)
	if err != nil {
		return nil, err
	}
	if !cur.State.Terminal() {
		if !cur.Spec.equal(&spec) {
			return nil, fmt.Errorf("%w: %s is %s", ErrJobExists, spec.ID, cur.State)
		}
		if cur.State == StatePending {
			// The first submitter may have died between recording the job
			// and dispatching it; the ticket's message id makes this a no-op
			// when it did not.
			return cur, s.dispatch(ctx, cur)
		}
		return cur, nil
	}
	if !cur.Spec.equal(&spec) && !o.replace {
		return nil, fmt.Errorf("%w: %s has %s with another spec: submit it with replace to give its id new work", ErrJobExists, spec.ID, cur.State)
	}
	// Ended: start it again from a clean slate.
	fresh.Revision = cur.Revision
	j, err := s.Update(ctx, fresh)
	if err != nil {
		return nil, err
	}
	return j, s.dispatch(ctx, j)
}

// roomFor fails with ErrTooManyJobs when id is not in the store and the
// store holds MaxJobs jobs. It first asks for the bucket's subject count,
// one request: every key in the bucket (corrupt records included) has a
// subject, so below MaxJobs there is room. Deleted keys keep a subject
// (their delete marker) until purged, so only at or above MaxJobs are the
// keys listed and counted exactly, as before. The check and the Create
// that follows are two requests: concurrent submissions of new ids may
// overshoot MaxJobs by as many as are in flight (JobsMaxBytes is the hard
// bound).
func (s *Store) roomFor(ctx context.Context, id string) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	info, err := s.jobsStream.Info(cctx)
	cancel()
	if err != nil {
		return fmt.Errorf("submit %s: counting jobs: %w", id, err)
	}
	if info.State.NumSubjects < uint64(s.cfg.MaxJobs) {
		return nil
	}
	keys, err := s.keys(ctx)
	if err != nil {
		return fmt.Errorf("submit %s: counting jobs: %w", id, err)
	}
	if len(keys) < s.cfg.MaxJobs || slices.Contains(keys, id) {
		return nil
	}
	return fmt.Errorf("%w: %s: the store holds %d jobs (at most %d); delete ended ones first", ErrTooManyJobs, id, len(keys), s.cfg.MaxJobs)
}

// pendingReason says why a pending job may wait, from the live nodes as
// listed at most a heartbeat ago; "" when a node can take it now or the
// nodes cannot be read.
func (s *Store) pendingReason(ctx context.Context, j *Job) string {
	nodes, err := s.cachedNodes(ctx, s.cfg.NodeTTL/3)
	if err != nil {
		return ""
	}
	return placementReason(nodes, j)
}

// Stop asks for the job to end. A pending job stops at once; a starting or
// running one becomes stopping, and its owner stops the media and records
// stopped (or, if the owner is dead, whichever node notices).
// Stopping an ended job changes nothing.
func (s *Store) Stop(ctx context.Context, id string) (*Job, error) {
	return s.modify(ctx, id, func(j *Job) bool {
		switch j.State {
		case StatePending:
			j.State, j.Reason, j.NotBefore = StateStopped, "stopped before it started", time.Time{}
		case StateStarting, StateRunning:
			j.State, j.Reason = StateStopping, "stop requested"
		default:
			return false
		}
		return true
	})
}

// Delete removes an ended (stopped or failed) job's record; its id can
// then be submitted afresh. Deleting a job that may still run fails with
// ErrJobActive: stop it first. A corrupt record (ErrCorruptJob) is purged,
// its history with it: no node can run or stop what it cannot read, and
// an owner whose watcher finds it corrupt or gone stops the media.
func (s *Store) Delete(ctx context.Context, id string) error {
	e, err := s.entry(ctx, id)
	if err != nil {
		return err
	}
	j, err := decodeJob(e)
	if errors.Is(err, ErrCorruptJob) {
		return s.purge(ctx, id, e.Revision())
	}
	if err != nil {
		return err
	}
	if !j.State.Terminal() {
		return fmt.Errorf("%w: %s is %s", ErrJobActive, id, j.State)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	// Revision-checked: a resubmission in between wins.
	err = s.jobs.Delete(ctx, id, jetstream.LastRevision(j.Revision))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %s at revision %d: %w", ErrConflict, id, j.Revision, err)
	}
	if err != nil {
		return fmt.Errorf("delete job %s: %w", id, err)
	}
	return nil
}

// purge removes a corrupt record and its history, if it is still at rev.
func (s *Store) purge(ctx context.Context, id string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	err := s.jobs.Purge(ctx, id, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %s at revision %d: %w", ErrConflict, id, rev, err)
	}
	if err != nil {
		return fmt.Errorf("purge corrupt job %s: %w", id, err)
	}
	return nil
}
