package whip

import (
	"time"

	"github.com/pion/rtp"
)

// reorderSlots is the ring size of a reorder buffer: a power of two larger
// than reorderMaxPackets, so a packet up to that far ahead has a slot.
const reorderSlots = 512

// reorderLateReset is how many late packets in a row mean the sender
// restarted its sequence numbers (rather than a stray duplicate): the
// buffer starts over at the newest instead of dropping everything.
const reorderLateReset = 64

type held struct {
	p  *rtp.Packet
	at time.Time // arrival
}

// reorder puts one SSRC's RTP packets back in sequence-number order, waiting
// at most maxPackets packets or maxDelay for a missing one (NACK
// retransmissions arrive within that on any sane path). A gap that outlives
// the wait is skipped and reported as loss on the next packet out.
type reorder struct {
	maxPackets int
	maxDelay   time.Duration

	started bool
	next    uint16 // sequence number expected next
	count   int    // packets held
	late    int    // consecutive late packets
	lost    bool
	slots   [reorderSlots]held

	// Counters, read by the owner.
	dropped, skipped uint64
}

func newReorder(maxPackets int, maxDelay time.Duration) *reorder {
	return &reorder{maxPackets: min(maxPackets, reorderSlots-1), maxDelay: maxDelay}
}

// push adds p (the reorder keeps it: the caller must not reuse it) and calls
// out with every packet now in order; lost is true on the first packet
// after a gap that was given up on.
func (r *reorder) push(p *rtp.Packet, now time.Time, out func(p *rtp.Packet, lost bool)) {
	seq := p.SequenceNumber
	if !r.started {
		r.started, r.next = true, seq
	}
	diff := int16(seq - r.next)
	switch {
	case diff < 0:
		// A retransmission of something already given up on, a duplicate,
		// or a sender that restarted its numbering.
		r.dropped++
		if r.late++; r.late < reorderLateReset {
			return
		}
		r.reset(seq)
	case int(diff) >= reorderSlots:
		// Too far ahead to hold: everything between is lost.
		r.flushAll(out)
		r.reset(seq)
	}
	r.late = 0
	slot := &r.slots[seq%reorderSlots]
	if slot.p != nil {
		r.dropped++ // duplicate
		return
	}
	*slot = held{p: p, at: now}
	r.count++
	r.drain(out)
	// Give up on a missing packet once the packet after it has waited
	// maxDelay, or the buffer is full.
	for r.count > 0 {
		first := r.next
		for r.slots[first%reorderSlots].p == nil {
			first++
		}
		if r.count <= r.maxPackets && now.Sub(r.slots[first%reorderSlots].at) < r.maxDelay {
			return
		}
		r.skipGap()
		r.drain(out)
	}
}

// drain emits the in-order run starting at next.
func (r *reorder) drain(out func(p *rtp.Packet, lost bool)) {
	for {
		slot := &r.slots[r.next%reorderSlots]
		p := slot.p
		if p == nil {
			return
		}
		*slot = held{}
		r.count--
		r.next++
		lost := r.lost
		r.lost = false
		out(p, lost)
	}
}

// skipGap moves next to the oldest held packet.
func (r *reorder) skipGap() {
	for i := 0; i < reorderSlots && r.slots[r.next%reorderSlots].p == nil; i++ {
		r.next++
		r.skipped++
	}
	r.lost = true
}

// flushAll emits every held packet in order, gaps and all.
func (r *reorder) flushAll(out func(p *rtp.Packet, lost bool)) {
	for r.count > 0 {
		r.skipGap()
		r.drain(out)
	}
}

func (r *reorder) reset(seq uint16) {
	clear(r.slots[:])
	r.count, r.next, r.late, r.lost = 0, seq, 0, true
}
