package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Node roles, advertised in NodeInfo for whoever routes viewers. Taking
// jobs is decided by capacity alone.
const (
	RoleTranscode = "transcode" // runs jobs
	RoleServe     = "serve"     // serves viewers (HLS, WebRTC)
)

// NodeInfo is a node's heartbeat in the prism_nodes bucket.
type NodeInfo struct {
	// Gen names the content of the heartbeat, every field but Heartbeat:
	// a receiver that holds the same Gen for the node only notes that it
	// heard it, without decoding the rest (see beatGen). It is the first
	// field, so that it opens the encoded record.
	Gen   string   `json:"gen,omitempty"`
	ID    string   `json:"id"`
	Roles []string `json:"roles,omitempty"`
	// CPUBudget is how many pixels per second this node can encode (from
	// calibration, or DefaultCapacity); 0 means it takes no jobs.
	CPUBudget float64 `json:"cpu_budget"`
	Used      float64 `json:"used"` // sum of the costs of its jobs
	// GPUs and Encoders come from the GPU probe: device names, and the
	// encoders that opened ("x264", "nvenc", ...).
	GPUs      []string  `json:"gpus,omitempty"`
	Encoders  []string  `json:"encoders,omitempty"`
	Jobs      []string  `json:"jobs,omitempty"`
	Draining  bool      `json:"draining,omitempty"`
	Heartbeat time.Time `json:"heartbeat"`
}

// suits reports whether the node meets the job's constraints and could
// ever hold it, ignoring what it already runs.
func (n *NodeInfo) suits(j *Job) bool {
	c := j.Spec.Constraints
	switch {
	case n.Draining || n.CPUBudget <= 0:
		return false
	case c.NeedsGPU && len(n.GPUs) == 0:
		return false
	case c.Encoder != "" && c.Encoder != "auto" && !slices.Contains(n.Encoders, c.Encoder):
		return false
	}
	return j.Cost <= n.CPUBudget
}

// fitsNow reports whether the node can start the job now.
func (n *NodeInfo) fitsNow(j *Job) bool { return n.suits(j) && j.Cost <= n.CPUBudget-n.Used }

// placementReason says why no live node can start j now, or "" if one can.
// It becomes the Reason of a pending job.
func placementReason(nodes []NodeInfo, j *Job) string {
	if len(nodes) == 0 {
		return "no live node"
	}
	c := j.Spec.Constraints
	var eligible []NodeInfo
	for _, n := range nodes {
		if n.fitsNow(j) {
			return ""
		}
		if n.suits(j) {
			eligible = append(eligible, n)
		}
	}
	switch {
	case len(eligible) > 0:
		return "waiting for free capacity for " + formatRate(j.Cost) + " px/s"
	case c.NeedsGPU && !slices.ContainsFunc(nodes, func(n NodeInfo) bool { return len(n.GPUs) > 0 && !n.Draining }):
		return "no node with a GPU"
	case c.Encoder != "" && c.Encoder != "auto" && !slices.ContainsFunc(nodes, func(n NodeInfo) bool { return slices.Contains(n.Encoders, c.Encoder) && !n.Draining }):
		return "no node with encoder " + c.Encoder
	}
	return "no node with capacity for " + formatRate(j.Cost) + " px/s"
}

// formatRate writes 1.2e+08 as "1.2e8": short, and exact enough for
// capacity messages.
func formatRate(v float64) string {
	s := strconv.FormatFloat(v, 'g', 3, 64)
	s = strings.Replace(s, "e+0", "e", 1)
	return strings.Replace(s, "e+", "e", 1)
}

// putNode writes this node's heartbeat.
func (s *Store) putNode(ctx context.Context, info *NodeInfo) error {
	data, err := encodeBeat(info)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	_, err = s.nodes.Put(ctx, info.ID, data)
	return err
}

// deleteNode removes the heartbeat of a node that stops cleanly, so others
// need not wait for it to expire.
func (s *Store) deleteNode(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	return s.nodes.Delete(ctx, id)
}

// Nodes returns the nodes whose heartbeat has not expired, sorted by id.
// It is one listing of the bucket (a watcher's initial values), not a Get
// per node: Submit asks for it, and a cluster has up to a hundred nodes.
func (s *Store) Nodes(ctx context.Context) ([]NodeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	w, err := s.nodes.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer stopWatcher(w)
	var out []NodeInfo
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list nodes: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list nodes: %w", errWatchEnded)
			}
			if e == nil { // the end of the initial values
				slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
				return out, nil
			}
			var n NodeInfo
			if err := json.Unmarshal(e.Value(), &n); err != nil {
				return nil, fmt.Errorf("node %s: %w", e.Key(), err)
			}
			out = append(out, n)
		}
	}
}

// nodesCache keeps the last listing of the nodes for pendingReason, so
// that a burst of submissions lists them once per heartbeat, not once
// each: heartbeats change no faster, and the reason is a hint that the
// cluster's maintenance keeps true.
type nodesCache struct {
	mu    sync.Mutex
	at    time.Time
	nodes []NodeInfo
}

// cachedNodes returns a listing of the nodes at most maxAge old.
func (s *Store) cachedNodes(ctx context.Context, maxAge time.Duration) ([]NodeInfo, error) {
	c := s.nodesCache
	c.mu.Lock()
	defer c.mu.Unlock() // concurrent submissions wait for one listing
	if !c.at.IsZero() && time.Since(c.at) < maxAge {
		return c.nodes, nil
	}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	c.at, c.nodes = time.Now(), nodes
	return nodes, nil
}
