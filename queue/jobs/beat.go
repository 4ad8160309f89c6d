package jobs

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
)

// Core heartbeats. Besides its heartbeat in prism_nodes, every node
// publishes the same NodeInfo each Heartbeat on prism.beat.<node id>, a
// plain NATS subject, and every node subscribes to all of them. Core
// subjects need no JetStream leader: while the nodes bucket elects one
// (4–9 s, after its leader's server died, as it does with a node of an
// embedded cluster), or while a KV watcher waits for the meta leader to
// recreate its consumer, nodes still hear each other, judge who died and
// see which jobs each one runs.

const (
	// BeatSubjects are the core heartbeat subjects, prism.beat.<node id>.
	BeatSubjects = "prism.beat.*"
	beatPrefix   = "prism.beat."
)

// beatLoop publishes this node's core heartbeat every Heartbeat. It has
// its own goroutine so that a tick loop blocked on a slow KV write does
// not silence the node.
func (n *Node) beatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.Heartbeat)
	defer t.Stop()
	for {
		n.publishBeat()
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishBeat sends this node's core heartbeat now.
func (n *Node) publishBeat() {
	if data, err := json.Marshal(n.info()); err == nil {
		// Buffered by the client; fails only on a closed connection.
		_ = n.nc.Publish(beatPrefix+n.ID, data)
	}
}

// subscribeBeats starts receiving every node's core heartbeat; the
// subscription's goroutine belongs to the client and ends with
// Unsubscribe, in Close.
func (n *Node) subscribeBeats() (*nats.Subscription, error) {
	return n.nc.Subscribe(BeatSubjects, func(m *nats.Msg) {
		var info NodeInfo
		if err := json.Unmarshal(m.Data, &info); err != nil || info.ID == "" || m.Subject != beatPrefix+info.ID {
			return // not a heartbeat, or one naming another node
		}
		now := time.Now()
		n.view.coreBeat(info, now)
		if info.ID == n.ID {
			n.coreEchoed(now)
		}
	})
}

// coreEchoed notes that this node's own core heartbeat came back.
func (n *Node) coreEchoed(now time.Time) {
	n.mu.Lock()
	n.health.lastCoreEcho = now
	n.mu.Unlock()
}

// coreBeat records a core heartbeat: a sign of life received now, and the
// node's current jobs. The KV revision stays, so the watcher's next entry
// still counts.
func (v *view) coreBeat(info NodeInfo, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nodes == nil {
		v.nodes = map[string]seenNode{}
	}
	cur := v.nodes[info.ID]
	cur.info, cur.seen = info, now
	v.nodes[info.ID] = cur
}
