package node

import "github.com/prometheus/client_golang/prometheus"

// ingestMetrics are push ingest's Prometheus series. Labels are bounded:
// protocol (rtmp, rtmps, srt, whip) and a refusal reason from a fixed set;
// never a stream name, a remote address or a session.
type ingestMetrics struct {
	sessions   *prometheus.GaugeVec
	bytes      *prometheus.CounterVec
	rejects    *prometheus.CounterVec
	reconnects *prometheus.CounterVec
	events     *prometheus.CounterVec
}

func newIngestMetrics() *ingestMetrics {
	return &ingestMetrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "prism_ingest_sessions",
			Help: "Publishers connected to this node."}, []string{"protocol"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prism_ingest_bytes_total",
			Help: "Media bytes received from publishers."}, []string{"protocol"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prism_ingest_rejects_total",
			Help: "Publishers refused, by reason (unauthorized, rate_limited, not_found, conflict)."}, []string{"protocol", "reason"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prism_ingest_reconnects_total",
			Help: "Publishers that resumed their stream's running job (within the grace period)."}, []string{"protocol"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prism_ingest_events_total",
			Help: "Timed events found inside publishers' streams (RTMP onCuePoint, onTextData) and sent to events.<stream>."}, []string{"protocol"}),
	}
}

// Collectors are the ingest metrics, for the node's /metrics registry.
func (in *Ingest) Collectors() []prometheus.Collector {
	m := in.metrics
	return []prometheus.Collector{m.sessions, m.bytes, m.rejects, m.reconnects, m.events}
}
