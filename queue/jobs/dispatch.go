package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Dispatch tickets. A ticket on prism.dispatch.<job id> tells the nodes
// that the job is pending; the KV record stays the only truth. Whoever
// pulls a ticket re-reads the job: a ticket for a job that is no longer
// pending is stale and simply acknowledged, so extra tickets are harmless
// and a lost one is republished by the cluster's maintenance (see
// takeover.go).

// dispatch publishes a ticket for a pending job. Its message id names the
// job and the revision that made it pending: a repeated submission of the
// same revision is dropped by the stream's duplicate window, while a later
// return to pending (hand-back, retry, resubmission) gets a ticket of its
// own. (The job id alone would swallow those re-dispatches for two
// minutes.)
func (s *Store) dispatch(ctx context.Context, j *Job) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	msgID := j.Spec.ID + "@" + strconv.FormatUint(j.Revision, 10)
	if _, err := s.js.Publish(ctx, dispatchPrefix+j.Spec.ID, []byte(j.Spec.ID), jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("dispatch %s: %w", j.Spec.ID, err)
	}
	return nil
}

// hasTicket reports whether a ticket for the job is waiting or being
// handled.
func (s *Store) hasTicket(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	_, err := s.stream.GetLastMsgForSubject(ctx, dispatchPrefix+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return err == nil, err
}

// nextTicket waits for one ticket until ctx ends. It pulls exactly one
// message, and only when asked: a node pulls only when it has room, so no
// ticket sits in a busy node's buffer while another node could start it.
func (s *Store) nextTicket(ctx context.Context) (jetstream.Msg, error) {
	return s.consumer.Next(jetstream.FetchContext(ctx))
}

// redispatch publishes another ticket for a pending job that lost its
// own. The message id must differ from the original's: that one may still
// be inside the duplicate window, which would silently drop this.
func (s *Store) redispatch(ctx context.Context, j *Job) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	msgID := j.Spec.ID + "@" + strconv.FormatUint(j.Revision, 10) + "/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := s.js.Publish(ctx, dispatchPrefix+j.Spec.ID, []byte(j.Spec.ID), jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("redispatch %s: %w", j.Spec.ID, err)
	}
	return nil
}

// staleReadRetry is how soon a ticket read against a stale job returns.
const staleReadRetry = 100 * time.Millisecond

// ticketRevision is the job revision a ticket was published for (its
// message id, "<job>@<revision>[/<nonce>]"); 0 when it does not say.
func ticketRevision(m ticket) uint64 {
	id := m.Headers().Get(jetstream.MsgIDHeader)
	_, rev, ok := strings.Cut(id, "@")
	if !ok {
		return 0
	}
	rev, _, _ = strings.Cut(rev, "/")
	v, _ := strconv.ParseUint(rev, 10, 64)
	return v
}

// ticket is a pulled dispatch message.
type ticket = jetstream.Msg

// ticketJob returns the job id a ticket names.
func ticketJob(m ticket) string { return strings.TrimPrefix(m.Subject(), dispatchPrefix) }

// dispatchLoop pulls one ticket at a time, and only while this node has
// room: a ticket it cannot take goes back at once for the others.
func (n *Node) dispatchLoop() {
	defer n.wg.Done()
	for {
		if !n.wantsTickets() {
			select {
			case <-n.ctx.Done():
				return
			case <-n.wake:
			case <-time.After(n.Heartbeat):
			}
			continue
		}
		// pulling is held while a pull request is outstanding: Drain waits
		// for it, so that a ticket it re-dispatches cannot land in a pull of
		// this node that outlives the process (the server would hold that
		// ticket for the whole AckWait).
		n.pulling.Lock()
		if !n.wantsTickets() { // Drain may have begun since the check above
			n.pulling.Unlock()
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, time.Second)
		msg, err := n.Store.nextTicket(ctx)
		cancel()
		n.pulling.Unlock()
		if n.ctx.Err() != nil {
			if msg != nil {
				_ = msg.Nak()
			}
			return
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
				n.log.Debug("pull failed", "err", err)
				n.sleep(n.Heartbeat) // disconnected or JetStream unavailable: do not spin
			}
			continue
		}
		if n.handleTicket(msg) == ticketRefused {
			// We could not take it; let the others have a go before pulling
			// again, unless our capacity changes.
			select {
			case <-n.ctx.Done():
				return
			case <-n.wake:
			case <-time.After(n.Heartbeat):
			}
		}
	}
}

func (n *Node) sleep(d time.Duration) {
	select {
	case <-n.ctx.Done():
	case <-time.After(d):
	}
}

// ticketOutcome is what a node did with a ticket.
type ticketOutcome int

const (
	ticketTaken   ticketOutcome = iota
	ticketStale                 // acknowledged: the job is no longer pending
	ticketRefused               // returned: no room here, or it changed under us
)

// handleTicket acts on one dispatch ticket.
func (n *Node) handleTicket(msg ticket) ticketOutcome {
	id := ticketJob(msg)
	ctx, cancel := context.WithTimeout(n.ctx, n.opTimeout())
	j, err := n.Store.Get(ctx, id)
	cancel()
	switch {
	case errors.Is(err, ErrJobNotFound), errors.Is(err, ErrCorruptJob):
		// Nobody can run a job that is gone or unreadable; returning the
		// ticket would cycle it through every node forever. A job
		// submitted again gets a ticket of its own.
		_ = msg.Term()
		return ticketStale
	case err != nil:
		_ = msg.Nak()
		return ticketRefused
	case j.State != StatePending && j.Revision < ticketRevision(msg):
		// Older than the write the ticket was published for: a replica
		// behind its leader answered (right after a NATS server came
		// back). Acknowledging would lose the ticket until maintenance
		// republishes it, seconds later; whoever gets it next re-reads.
		_ = msg.NakWithDelay(staleReadRetry)
		return ticketRefused
	case j.State != StatePending:
		_ = msg.Ack() // the job was placed or stopped since
		return ticketStale
	}
	// NotBefore was written on another host's clock: skew only shifts the
	// retry, and the wait is capped so a slow clock cannot park a job.
	if wait := j.NotBefore.Sub(n.wallNow()); wait > 0 {
		_ = msg.NakWithDelay(min(wait, n.Retry.Max)) // retry backoff, for every node
		return ticketStale
	}
	if !n.canTake(j) {
		if n.notePlacement(j) {
			// Nobody can take it now: do not cycle it through every node
			// on every heartbeat.
			_ = msg.NakWithDelay(2 * n.Heartbeat)
		} else {
			_ = msg.Nak() // at once: another node has room
		}
		return ticketRefused
	}
	if !n.claim(j, "", j.Attempts) {
		_ = msg.Nak() // it changed under us: whoever gets it next re-reads it
		return ticketRefused
	}
	_ = msg.Ack()
	return ticketTaken
}

// notePlacement records on a pending job why no node can take it, when
// that is new, and reports whether no live node can take it now.
func (n *Node) notePlacement(j *Job) bool {
	r := placementReason(n.liveNodes(time.Now()), j)
	if newReason(j.Reason, r) {
		c := *j
		c.Reason = r
		n.write(&c, false)
	}
	return r != ""
}
