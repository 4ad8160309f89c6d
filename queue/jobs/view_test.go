package jobs

import (
	"slices"
	"testing"
	"time"
)

// The owner index behind the scan: it must find exactly the jobs that
// orphanCause used to, as records and heartbeats change, although it keeps
// its check of an owner until the owner's jobs or listing change.
func TestViewOwnerIndex(t *testing.T) {
	job := func(id, owner string, st State) *Job {
		return &Job{Spec: Spec{ID: id}, Owner: owner, State: st, Revision: 1}
	}
	v := &view{}
	v.install(map[string]*Job{
		"a": job("a", "n1", StateRunning),
		"b": job("b", "n1", StateStarting),
		"c": job("c", "", StatePending),
	}, nil, true)
	grace := 100 * time.Millisecond
	start := time.Now()
	beat := func(node string, at time.Duration, jobs ...string) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.nodes == nil {
			v.nodes = map[string]seenNode{}
		}
		v.nodes[node] = seenNode{info: NodeInfo{ID: node, Jobs: jobs}, seen: start.Add(at)}
	}
	ids := func(js []*Job) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.Spec.ID)
		}
		slices.Sort(out)
		return out
	}
	check := func(what, owner string, want ...string) {
		t.Helper()
		if got := ids(v.unlisted(owner, grace)); !slices.Equal(got, want) {
			t.Fatalf("%s: unlisted(%s) = %v, want %v", what, owner, got, want)
		}
	}

	check("no heartbeat yet", "n1")
	beat("n1", time.Second, "a")
	check("b omitted", "n1", "b")
	check("same again (kept check)", "n1", "b")
	beat("n1", 2*time.Second, "a", "b")
	check("both listed", "n1")

	// b changes owner: n1's check is redone, n2 gets an entry.
	v.mu.Lock()
	v.setJob("b", job("b", "n2", StateRunning))
	v.noteOwner(v.jobs["b"], start)
	v.mu.Unlock()
	check("b moved away", "n1")
	if got := ids(v.jobsOf("n2")); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("jobsOf(n2) = %v", got)
	}

	// A job claimed just now is not held against a heartbeat within the
	// grace, and is once a later heartbeat with the same list comes.
	now := time.Now()
	v.mu.Lock()
	d := job("d", "n1", StateRunning)
	v.setJob("d", d)
	v.noteOwner(d, now)
	v.mu.Unlock()
	beat("n1", now.Sub(start), "a", "b")
	check("d within the grace", "n1")
	beat("n1", now.Sub(start)+2*grace, "a", "b")
	check("d past the grace", "n1", "d")

	// Ended jobs leave the index; an owner without jobs leaves it too.
	v.mu.Lock()
	v.setJob("b", job("b", "n2", StateStopped))
	v.setJob("d", nil)
	v.mu.Unlock()
	if got := v.owners(); !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("owners = %v, want [n1]", got)
	}
	check("d deleted", "n1")
	v.mu.Lock()
	v.setJob("a", job("a", "n1", StateStopped))
	v.mu.Unlock()
	if got := v.owners(); len(got) != 0 {
		t.Fatalf("owners = %v, want none", got)
	}
}
