package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// Registry errors.
var (
	ErrStreamExists  = errors.New("stream already exists")
	ErrStreamName    = errors.New("invalid stream name")
	ErrStreamUnknown = errors.New("unknown stream")
)

// Output names, as jobs list them and outputs check them.
const (
	OutputHLS    = "hls"
	OutputWebRTC = "webrtc"
)

// StreamEvent tells watchers that a stream appeared (Source set) or went away.
type StreamEvent struct {
	Name    string
	Source  Source // nil when removed
	Removed bool
	// Outputs are the outputs that serve the stream; empty means all.
	Outputs []string
}

// Serves reports whether the stream is to be served by the named output.
func (e StreamEvent) Serves(output string) bool {
	return len(e.Outputs) == 0 || slices.Contains(e.Outputs, output)
}

type entry struct {
	src     Source
	outputs []string
}

// Registry is the set of running streams by name, shared by the service and
// its outputs. Outputs watch it to set up and tear down per-stream state.
// It also carries the demand for streams that run but are not registered
// (demand.go).
type Registry struct {
	mu       sync.Mutex
	sources  map[string]entry
	watchers map[int]func(StreamEvent)
	nextID   int

	offers  map[string]*offer
	demand  chan struct{} // Demanded
	changed chan struct{} // closed after each Add, Remove, Withdraw (Await)
}

// Add registers a running src under name, to be served by the named
// outputs (all when none are named).
func (r *Registry) Add(name string, src Source, outputs ...string) error {
	if err := ValidStreamName(name); err != nil {
		return err
	}
	r.mu.Lock()
	if r.sources == nil {
		r.sources = map[string]entry{}
	}
	if _, ok := r.sources[name]; ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrStreamExists, name)
	}
	r.sources[name] = entry{src: src, outputs: outputs}
	watchers := r.watcherList()
	r.mu.Unlock()
	for _, w := range watchers {
		w(StreamEvent{Name: name, Source: src, Outputs: outputs})
	}
	r.notify()
	return nil
}

// notify wakes Await after the watchers ran, so that an output woken for
// a stream has set it up already.
func (r *Registry) notify() {
	r.mu.Lock()
	r.changedLocked()
	r.mu.Unlock()
}

// Remove unregisters name (it does not stop the source) and returns it.
func (r *Registry) Remove(name string) (Source, bool) {
	r.mu.Lock()
	e, ok := r.sources[name]
	if ok {
		delete(r.sources, name)
	}
	watchers := r.watcherList()
	r.mu.Unlock()
	if ok {
		for _, w := range watchers {
			w(StreamEvent{Name: name, Removed: true})
		}
		r.notify()
	}
	return e.src, ok
}

// Get returns the source of a stream.
func (r *Registry) Get(name string) (Source, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.sources[name]
	return e.src, ok
}

// Names returns the stream names, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.sources))
	for n := range r.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Watch calls fn for every stream now registered, then for every change,
// until the returned cancel is called. fn runs on the goroutine that changed
// the registry: it must not block or call back into the registry.
func (r *Registry) Watch(fn func(StreamEvent)) (cancel func()) {
	r.mu.Lock()
	if r.watchers == nil {
		r.watchers = map[int]func(StreamEvent){}
	}
	id := r.nextID
	r.nextID++
	r.watchers[id] = fn
	current := make([]StreamEvent, 0, len(r.sources))
	for n, e := range r.sources {
		current = append(current, StreamEvent{Name: n, Source: e.src, Outputs: e.outputs})
	}
	r.mu.Unlock()
	for _, ev := range current {
		fn(ev)
	}
	return func() {
		r.mu.Lock()
		delete(r.watchers, id)
		r.mu.Unlock()
	}
}

func (r *Registry) watcherList() []func(StreamEvent) {
	out := make([]func(StreamEvent), 0, len(r.watchers))
	for _, w := range r.watchers {
		out = append(out, w)
	}
	return out
}
