package pipeline

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrClosed is returned by Reader.Read once the reader or its fan-out is closed
// and the buffered packets are drained.
var ErrClosed = errors.New("pipeline: reader closed")

// DefaultReaderBuffer is the per-reader buffer when none is given: about
// four seconds of a four-rung ladder with audio at 30 fps.
const DefaultReaderBuffer = 1024

// Fanout hands every published packet to every subscribed reader. Each reader
// has its own bounded buffer: a slow reader drops its own packets (counted,
// logged at most once a second) and never stalls the publisher, unless it
// asked to be lossless.
type Fanout struct {
	// Log receives drop reports; nil discards them.
	Log func(format string, args ...any)

	mu      sync.RWMutex
	readers map[*Reader]struct{}
	closed  bool
	done    chan struct{}
	once    sync.Once
}

func (f *Fanout) init() {
	f.once.Do(func() {
		f.readers = make(map[*Reader]struct{})
		f.done = make(chan struct{})
	})
}

// ReaderOption configures a Reader.
type ReaderOption func(*Reader)

// WithTracks limits a reader to the given track IDs.
func WithTracks(ids ...int) ReaderOption {
	return func(r *Reader) {
		r.tracks = make(map[int]bool, len(ids))
		for _, id := range ids {
			r.tracks[id] = true
		}
	}
}

// WithBufferSize sets how many packets a reader may hold before it drops.
func WithBufferSize(n int) ReaderOption {
	return func(r *Reader) {
		if n > 0 {
			r.buf = make([]*Packet, n)
		}
	}
}

// WithName names the reader in drop reports.
func WithName(name string) ReaderOption { return func(r *Reader) { r.name = name } }

// Lossless makes Publish wait for room in this reader instead of dropping.
// Only for offline consumers (files, benchmarks): a lossless reader that
// stops reading stalls the encoders.
func Lossless() ReaderOption { return func(r *Reader) { r.lossless = true } }

// WithKeyframeRequest is called with a track ID when the reader dropped part
// of that video track and now waits for its next keyframe to resume.
func WithKeyframeRequest(fn func(track int)) ReaderOption {
	return func(r *Reader) { r.onKeyframeWait = fn }
}

// Subscribe adds a reader that receives packets published from now on.
func (f *Fanout) Subscribe(opts ...ReaderOption) *Reader {
	f.init()
	r := &Reader{
		fanout:  f,
		notify:  make(chan struct{}, 1),
		space:   make(chan struct{}, 1),
		waitKey: make(map[int]bool),
	}
	for _, o := range opts {
		o(r)
	}
	if r.buf == nil {
		r.buf = make([]*Packet, DefaultReaderBuffer)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		r.closed = true
		return r
	}
	f.readers[r] = struct{}{}
	return r
}

// Readers returns the number of subscribed readers.
func (f *Fanout) Readers() int {
	f.init()
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.readers)
}

// Publish hands p to every reader. It blocks only on lossless readers that
// are full, and returns when the fan-out is closed.
func (f *Fanout) Publish(p *Packet, kind Kind) {
	f.init()
	f.mu.RLock()
	defer f.mu.RUnlock()
	for r := range f.readers {
		if r.push(p, kind) {
			continue
		}
		// Lossless and full: wait for room, or for either side to close.
		for !r.push(p, kind) {
			select {
			case <-r.space:
			case <-f.done:
				return
			}
		}
	}
}

// Close closes every reader; their Read returns ErrClosed once drained.
func (f *Fanout) Close() {
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	close(f.done)
	for r := range f.readers {
		r.mu.Lock()
		r.closeLocked()
		r.mu.Unlock()
	}
	f.readers = nil
}

func (f *Fanout) remove(r *Reader) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers != nil {
		delete(f.readers, r)
	}
}

// Reader is one consumer's view of a Fanout.
type Reader struct {
	fanout         *Fanout
	name           string
	tracks         map[int]bool
	lossless       bool
	onKeyframeWait func(track int)

	mu      sync.Mutex
	buf     []*Packet // ring
	head, n int
	closed  bool
	waitKey map[int]bool // video tracks that lost packets and wait for a keyframe
	notify  chan struct{}
	space   chan struct{}

	dropped     uint64
	lastReport  time.Time
	reportedDrp uint64
}

// push returns false only for a lossless reader that is full.
func (r *Reader) push(p *Packet, kind Kind) bool {
	if r.tracks != nil && !r.tracks[p.Track] {
		return true
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return true
	}
	if kind == KindVideo && r.waitKey[p.Track] {
		// Still waiting: skip everything up to a keyframe that fits.
		if !p.Keyframe || r.n == len(r.buf) {
			if r.lossless && p.Keyframe {
				r.mu.Unlock()
				return false
			}
			r.dropped++
			r.mu.Unlock()
			return true
		}
		delete(r.waitKey, p.Track)
	}
	if r.n == len(r.buf) {
		if r.lossless {
			r.mu.Unlock()
			return false
		}
		r.dropped++
		// Dropping at packet boundaries is not enough for video: the decoder
		// needs the frames this one refers to, so skip to the next keyframe.
		startWait := kind == KindVideo && !r.waitKey[p.Track]
		if kind == KindVideo {
			r.waitKey[p.Track] = true
		}
		report := r.dueReport()
		r.mu.Unlock()
		if startWait && r.onKeyframeWait != nil {
			r.onKeyframeWait(p.Track)
		}
		if report > 0 && r.fanout.Log != nil {
			r.fanout.Log("reader %q is too slow, dropped %d packets", r.name, report)
		}
		return true
	}
	r.buf[(r.head+r.n)%len(r.buf)] = p
	r.n++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return true
}

// dueReport returns how many drops to report now, at most once a second.
func (r *Reader) dueReport() uint64 {
	now := time.Now()
	if now.Sub(r.lastReport) < time.Second {
		return 0
	}
	r.lastReport = now
	n := r.dropped - r.reportedDrp
	r.reportedDrp = r.dropped
	return n
}

// Read returns the next packet, waiting for one. It returns ErrClosed after
// Close (of the reader or the fan-out) once the buffer is drained, or the
// context's error.
func (r *Reader) Read(ctx context.Context) (*Packet, error) {
	for {
		r.mu.Lock()
		if r.n > 0 {
			p := r.buf[r.head]
			r.buf[r.head] = nil
			r.head = (r.head + 1) % len(r.buf)
			r.n--
			r.mu.Unlock()
			if r.lossless {
				select {
				case r.space <- struct{}{}:
				default:
				}
			}
			return p, nil
		}
		closed := r.closed
		r.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Dropped returns how many packets this reader lost because it was too slow.
func (r *Reader) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Close unsubscribes the reader. Packets still buffered can be read.
func (r *Reader) Close() {
	// Mark closed first: a Publish blocked on this lossless reader holds the
	// fan-out's read lock until it sees the reader closed.
	r.mu.Lock()
	r.closeLocked()
	r.mu.Unlock()
	r.fanout.remove(r)
}

func (r *Reader) closeLocked() {
	if r.closed {
		return
	}
	r.closed = true
	select {
	case r.notify <- struct{}{}:
	default:
	}
	select {
	case r.space <- struct{}{}:
	default:
	}
}
