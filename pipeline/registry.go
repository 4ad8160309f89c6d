package pipeline

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
)

// Registry errors.
var (
	ErrStreamExists  = errors.New("stream already exists")
	ErrStreamName    = errors.New("invalid stream name")
	ErrStreamUnknown = errors.New("unknown stream")
)

var streamNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidStreamName reports whether name can be used in URLs and NATS
// subjects as it is: letters, digits, '-' and '_', at most 64.
func ValidStreamName(name string) error {
	if !streamNameRE.MatchString(name) {
		return fmt.Errorf("%w %q: use letters, digits, '-' and '_' (at most 64, starting with a letter or digit)", ErrStreamName, name)
	}
	return nil
}

// StreamEvent tells watchers that a stream appeared (Job set) or went away.
type StreamEvent struct {
	Name    string
	Job     Job // nil when removed
	Removed bool
}

// Registry is the set of running streams by name, shared by the service and
// its outputs. Outputs watch it to set up and tear down per-stream state.
type Registry struct {
	mu       sync.Mutex
	jobs     map[string]Job
	watchers map[int]func(StreamEvent)
	nextID   int
}

// Add registers a running job under name.
func (r *Registry) Add(name string, job Job) error {
	if err := ValidStreamName(name); err != nil {
		return err
	}
	r.mu.Lock()
	if r.jobs == nil {
		r.jobs = map[string]Job{}
	}
	if _, ok := r.jobs[name]; ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrStreamExists, name)
	}
	r.jobs[name] = job
	watchers := r.watcherList()
	r.mu.Unlock()
	for _, w := range watchers {
		w(StreamEvent{Name: name, Job: job})
	}
	return nil
}

// Remove unregisters name (it does not stop the job) and returns its job.
func (r *Registry) Remove(name string) (Job, bool) {
	r.mu.Lock()
	job, ok := r.jobs[name]
	if ok {
		delete(r.jobs, name)
	}
	watchers := r.watcherList()
	r.mu.Unlock()
	if ok {
		for _, w := range watchers {
			w(StreamEvent{Name: name, Removed: true})
		}
	}
	return job, ok
}

// Get returns the job of a stream.
func (r *Registry) Get(name string) (Job, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j, ok := r.jobs[name]
	return j, ok
}

// Names returns the stream names, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.jobs))
	for n := range r.jobs {
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
	current := make([]StreamEvent, 0, len(r.jobs))
	for n, j := range r.jobs {
		current = append(current, StreamEvent{Name: n, Job: j})
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
