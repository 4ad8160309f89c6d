package node

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// relayMetrics measure what following streams costs the node: the media
// bytes it received from NATS, per stream (bounded by the running jobs: a
// stream's series goes when its job ends), and how many it follows. They
// are read at scrape time, as the stream statistics are.
type relayMetrics struct {
	mu       sync.Mutex
	received map[string]*atomic.Uint64
	followed atomic.Int64

	receivedDesc, followedDesc *prometheus.Desc
}

func newRelayMetrics() *relayMetrics {
	return &relayMetrics{
		received: map[string]*atomic.Uint64{},
		receivedDesc: prometheus.NewDesc("prism_relay_received_bytes_total",
			"Media bytes this node received from NATS for the streams it follows (messages, headers included).", []string{"stream"}, nil),
		followedDesc: prometheus.NewDesc("prism_relay_followed_streams",
			"Streams whose media this node follows now (node.follow).", nil, nil),
	}
}

// counter returns what adds to a stream's received bytes; it is called on
// the stream's receiving goroutine for every message.
func (m *relayMetrics) counter(stream string) func(int) {
	m.mu.Lock()
	c := m.received[stream]
	if c == nil {
		c = &atomic.Uint64{}
		m.received[stream] = c
	}
	m.mu.Unlock()
	return func(n int) { c.Add(uint64(n)) }
}

func (m *relayMetrics) forget(stream string) {
	m.mu.Lock()
	delete(m.received, stream)
	m.mu.Unlock()
}

func (m *relayMetrics) bytes(stream string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.received[stream]; c != nil {
		return c.Load()
	}
	return 0
}

func (m *relayMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.receivedDesc
	ch <- m.followedDesc
}

func (m *relayMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	for stream, c := range m.received {
		ch <- prometheus.MustNewConstMetric(m.receivedDesc, prometheus.CounterValue, float64(c.Load()), stream)
	}
	m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.followedDesc, prometheus.GaugeValue, float64(m.followed.Load()))
}

// RelayCollector is the relay metrics, for the node's /metrics registry.
// Before Start it is an empty one.
func (n *Node) RelayCollector() prometheus.Collector {
	if n.relay == nil {
		return newRelayMetrics()
	}
	return n.relay
}

// RelayReceived returns the media bytes this node received from NATS for
// stream since its job started (0 when it was never followed here).
func (n *Node) RelayReceived(stream string) uint64 {
	if n.relay == nil {
		return 0
	}
	return n.relay.bytes(stream)
}
