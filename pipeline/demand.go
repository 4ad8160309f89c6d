package pipeline

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"
)

// FollowWait caps how long an output waits for an offered stream to be
// followed before answering: a follow takes one NATS round trip and the
// publisher's next keyframe, well under this.
const FollowWait = 5 * time.Second

// offer is a stream known to run in the cluster, followed here or not, and
// the use this node's outputs make of it.
type offer struct {
	outputs []string
	holds   int       // WebRTC sessions and requests being answered
	lastUse time.Time // the last Await, or the end of a hold or use
}

// Demand is how outputs make a node follow a stream only while it is used
// here. The node offers every running stream (Offer); an output asked for
// an offered stream that is not registered yet calls Await, which wakes
// whoever follows (Demanded) and waits for the stream to be added. Uses
// are recorded by Await, Hold and Use; the follower lets go of a stream
// whose LastUse is older than its idle timeout and that nobody holds.
//
// Streams added without an offer (tests, in-process transcoders) are served
// as before: Await returns them at once and uses are not recorded.

// Offer marks name as running, to be served by the named outputs (all when
// none are named), whether or not it is registered. It replaces an earlier
// offer's outputs and keeps its uses.
func (r *Registry) Offer(name string, outputs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.offers == nil {
		r.offers = map[string]*offer{}
	}
	if o := r.offers[name]; o != nil {
		o.outputs = outputs
		return
	}
	r.offers[name] = &offer{outputs: outputs}
}

// Withdraw ends the offer of name (its job stopped); requests waiting for
// it give up at once.
func (r *Registry) Withdraw(name string) {
	r.mu.Lock()
	_, ok := r.offers[name]
	delete(r.offers, name)
	if ok {
		r.changedLocked()
	}
	r.mu.Unlock()
}

// Offered reports whether name is running: offered, or registered.
func (r *Registry) Offered(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, offered := r.offers[name]
	_, present := r.sources[name]
	return offered || present
}

// Available returns, sorted, the streams that are offered or registered.
func (r *Registry) Available() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.offers)+len(r.sources))
	for n := range r.offers {
		names = append(names, n)
	}
	for n := range r.sources {
		if _, ok := r.offers[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Demanded is signalled when a request waits for an offered stream that
// is not registered, or a hold ends: the follower should look at LastUse
// again.
func (r *Registry) Demanded() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.demandLocked()
}

func (r *Registry) demandLocked() chan struct{} {
	if r.demand == nil {
		r.demand = make(chan struct{}, 1)
	}
	return r.demand
}

// Await returns the source of name for the named output, recording a use.
// A stream that is offered but not registered is asked for (Demanded) and
// waited for until it is added, its offer is withdrawn or ctx ends (callers
// bound it, e.g. by FollowWait). A stream neither registered nor offered,
// or not served by output, is ErrStreamUnknown at once.
func (r *Registry) Await(ctx context.Context, name, output string) (Source, error) {
	for {
		r.mu.Lock()
		o := r.offers[name]
		if o != nil {
			if !serves(o.outputs, output) {
				r.mu.Unlock()
				return nil, fmt.Errorf("%w: %s", ErrStreamUnknown, name)
			}
			o.lastUse = time.Now()
		}
		if e, ok := r.sources[name]; ok {
			r.mu.Unlock()
			if o == nil && !serves(e.outputs, output) {
				return nil, fmt.Errorf("%w: %s", ErrStreamUnknown, name)
			}
			return e.src, nil
		}
		if o == nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrStreamUnknown, name)
		}
		r.signalLocked()
		changed := r.changedChanLocked()
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s not followed yet: %w", name, ctx.Err())
		}
	}
}

// Hold keeps name followed until release is called (a WebRTC session's
// life); the idle timeout counts from the release, which the follower is
// told of at once.
func (r *Registry) Hold(name string) (release func()) { return r.hold(name, true) }

// Use keeps name followed while one request is answered (an LL-HLS
// blocking request may wait longer than the idle timeout); its end is its
// last use. Unlike Hold, the end is not signalled: requests come many times
// a second per viewer, and the follower looks at a held stream again
// within its idle timeout anyway.
func (r *Registry) Use(name string) (done func()) { return r.hold(name, false) }

func (r *Registry) hold(name string, signal bool) (release func()) {
	r.mu.Lock()
	o := r.offers[name]
	if o != nil {
		o.holds++
		o.lastUse = time.Now()
	}
	r.mu.Unlock()
	if o == nil {
		return func() {}
	}
	var released bool
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if released {
			return
		}
		released = true
		o.holds--
		o.lastUse = time.Now()
		if signal {
			r.signalLocked() // the idle time starts now: the follower sets its timer
		}
	}
}

func (r *Registry) signalLocked() {
	select {
	case r.demandLocked() <- struct{}{}:
	default: // already signalled
	}
}

// LastUse returns when name was last used, and whether something holds it
// now; the zero time for a stream never used or not offered.
func (r *Registry) LastUse(name string) (last time.Time, held bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.offers[name]; o != nil {
		return o.lastUse, o.holds > 0
	}
	return time.Time{}, false
}

// changedChanLocked is closed at the next Add, Remove or Withdraw.
func (r *Registry) changedChanLocked() chan struct{} {
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

func (r *Registry) changedLocked() {
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

func serves(outputs []string, output string) bool {
	return len(outputs) == 0 || output == "" || slices.Contains(outputs, output)
}
