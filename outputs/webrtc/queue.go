package webrtc

import "sync"

// queued is a unit waiting in a viewer's queue. gap is set on the first video
// unit queued after video units were dropped: the forwarder must then skip to
// a keyframe, since the frames in between referenced what was lost.
type queued struct {
	u   *unit
	gap bool
}

// unitQueue is one viewer's bounded buffer between the stream goroutine,
// which must never wait for a viewer, and the viewer's own goroutine. When
// full it drops whole units (never part of a frame's packets).
type unitQueue struct {
	notify chan struct{} // signalled (without blocking) when a unit is queued

	mu      sync.Mutex
	buf     []queued
	head, n int
	gap     bool // video was dropped since the last queued video unit
	dropped uint64
}

func newUnitQueue(size int) *unitQueue {
	return &unitQueue{buf: make([]queued, size), notify: make(chan struct{}, 1)}
}

// push queues u, or drops it when the queue is full. It returns true when
// this drop starts a video gap: the caller then asks for a keyframe.
func (q *unitQueue) push(u *unit) (gapStarted bool) {
	q.mu.Lock()
	if q.n == len(q.buf) {
		q.dropped++
		if u.video && !q.gap {
			q.gap, gapStarted = true, true
		}
		q.mu.Unlock()
		return gapStarted
	}
	e := queued{u: u}
	if u.video && q.gap {
		e.gap, q.gap = true, false
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return false
}

// pop returns the oldest unit, if any.
func (q *unitQueue) pop() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return queued{}, false
	}
	e := q.buf[q.head]
	q.buf[q.head] = queued{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return e, true
}

// droppedUnits returns how many units this queue dropped.
func (q *unitQueue) droppedUnits() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}
