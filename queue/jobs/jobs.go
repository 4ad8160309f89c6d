package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Submit records a new job as pending and dispatches it. Submitting the
// same spec again is harmless (it returns the existing job, and the
// dispatch ticket is deduplicated); a different spec under the id of a job
// that has not ended fails with ErrJobExists. A stopped or failed job is
// started again with the submitted spec.
func (s *Store) Submit(ctx context.Context, spec Spec) (*Job, error) {
	if len(spec.Outputs) == 0 {
		spec.Outputs = nil // an empty and a missing list are the same request
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	var cost float64
	if s.cfg.CheckLadder != nil {
		c, err := s.cfg.CheckLadder(spec.Ladder, spec.LadderYAML)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: ladder: %w", ErrInvalidSpec, spec.ID, err)
		}
		cost = c
	}
	for {
		j, err := s.submitOnce(ctx, spec, cost)
		if errors.Is(err, ErrConflict) && ctx.Err() == nil {
			continue // the job changed while we looked at it: look again
		}
		return j, err
	}
}

func (s *Store) submitOnce(ctx context.Context, spec Spec, cost float64) (*Job, error) {
	fresh := &Job{Spec: spec, State: StatePending, Cost: cost}
	fresh.Reason = s.pendingReason(ctx, fresh)
	fresh.UpdatedAt = time.Now().UTC()
	data, err := json.Marshal(fresh)
	if err != nil {
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
	// Ended: start it again from a clean slate.
	fresh.Revision = cur.Revision
	j, err := s.Update(ctx, fresh)
	if err != nil {
		return nil, err
	}
	return j, s.dispatch(ctx, j)
}

// pendingReason says why a pending job may wait, from the live nodes; ""
// when a node can take it now or the nodes cannot be read.
func (s *Store) pendingReason(ctx context.Context, j *Job) string {
	nodes, err := s.Nodes(ctx)
	if err != nil {
		return ""
	}
	return placementReason(nodes, j)
}

// Stop asks for the job to end. A pending job stops at once; a starting or
// running one becomes stopping, and its owner stops the media and records
// stopped (or, if the owner is gone, whichever node sees its lease expire).
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
// ErrJobActive: stop it first.
func (s *Store) Delete(ctx context.Context, id string) error {
	j, err := s.Get(ctx, id)
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
