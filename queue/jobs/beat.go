package jobs

import (
	"bytes"
	"encoding/json"
	"hash/fnv"
	"strconv"
	"strings"
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
	if data, err := encodeBeat(n.info()); err == nil {
		// Buffered by the client; fails only on a closed connection.
		_ = n.nc.Publish(beatPrefix+n.ID, data)
	}
}

// subscribeBeats starts receiving every node's core heartbeat; the
// subscription's goroutine belongs to the client and ends with
// Unsubscribe, in Close.
func (n *Node) subscribeBeats() (*nats.Subscription, error) {
	return n.nc.Subscribe(BeatSubjects, func(m *nats.Msg) {
		id := strings.TrimPrefix(m.Subject, beatPrefix)
		now := time.Now()
		if !n.view.heardSame(id, beatGen(m.Data), now) {
			var info NodeInfo
			if err := json.Unmarshal(m.Data, &info); err != nil || info.ID == "" || info.ID != id {
				return // not a heartbeat, or one naming another node
			}
			n.view.coreBeat(info, now)
		}
		if id == n.ID {
			n.coreEchoed(now)
		}
	})
}

// Heartbeat generations. Every node hears every node's heartbeat twice
// per Heartbeat (the KV copy and the core copy), so decoding them all
// costs nodes² per beat: at 100 nodes, a quarter of a simulator's CPU.
// Yet a heartbeat rarely says anything new; only its wall time changes
// from beat to beat. So the sender names the content (every field but
// Heartbeat, which nothing decides on) with Gen, the first field of the
// encoded record, and a receiver that already holds that Gen for the node
// records the receipt alone: liveness is the receipt time on the
// receiver's clock, whichever copy and whatever it says, exactly as when
// the record is decoded.

// genPrefix opens an encoded heartbeat that carries its Gen.
const genPrefix = `{"gen":"`

// encodeBeat sets info.Gen, a hash of the heartbeat's content, and
// encodes the record with it.
func encodeBeat(info *NodeInfo) ([]byte, error) {
	c := *info
	c.Gen, c.Heartbeat = "", time.Time{}
	content, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	_, _ = h.Write(content)
	info.Gen = strconv.FormatUint(h.Sum64(), 16)
	return json.Marshal(info)
}

// beatGen returns the Gen an encoded heartbeat opens with, without
// decoding it; "" if it has none (a record of an older version, or not a
// heartbeat at all).
func beatGen(data []byte) string {
	rest, ok := bytes.CutPrefix(data, []byte(genPrefix))
	if !ok {
		return ""
	}
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || end > 16 {
		return ""
	}
	return string(rest[:end])
}

// decodeBeat decodes an encoded heartbeat, or returns held, the
// receiver's copy, when the record carries held's Gen.
func decodeBeat(data []byte, held NodeInfo) (NodeInfo, error) {
	if g := beatGen(data); g != "" && g == held.Gen {
		return held, nil
	}
	var info NodeInfo
	err := json.Unmarshal(data, &info)
	return info, err
}

// heardSame records a heartbeat of node id received now, when the view
// holds one of the same Gen already, and reports whether it did; the
// caller decodes it otherwise.
func (v *view) heardSame(id, gen string, now time.Time) bool {
	if gen == "" {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, ok := v.nodes[id]
	if !ok || cur.info.Gen != gen {
		return false
	}
	cur.seen = now
	v.nodes[id] = cur
	return true
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
