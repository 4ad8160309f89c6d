package jobs

// KnownJob returns one job as this node's KV watchers last saw it, without
// a NATS round trip: cheap enough for every playback request. ok is false
// for an unknown job and until the first snapshot is loaded.
func (n *Node) KnownJob(id string) (j *Job, ok bool) {
	n.view.mu.Lock()
	defer n.view.mu.Unlock()
	if !n.view.ready {
		return nil, false
	}
	cur, ok := n.view.jobs[id]
	if !ok {
		return nil, false
	}
	c := *cur
	return &c, true
}
