package api

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prism-streaming/prism/outputs/webrtc"
)

// webrtcCollector exposes the WebRTC output's viewers at scrape time. Labels
// stay bounded: stream, rung and reason, never a viewer; per-viewer figures
// are the median over the viewers of a rung (each viewer is in the API).
type webrtcCollector struct {
	srv                             *webrtc.Server
	viewers, estimate, loss, rtt    *prometheus.Desc
	queueDelay                      *prometheus.Desc
	switches, probesFailed, freezes *prometheus.Desc
	keyframeRequests                *prometheus.Desc
	eventsSent, eventsDropped       *prometheus.Desc
	actionsAccepted, actionsRefused *prometheus.Desc
}

func newWebRTCCollector(srv *webrtc.Server) *webrtcCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("prism_webrtc_"+name, help, labels, nil)
	}
	return &webrtcCollector{
		srv:              srv,
		viewers:          d("viewers", "Connected WebRTC viewers per rung being sent.", "stream", "rung"),
		estimate:         d("estimate_bps", "Median bandwidth estimate of a rung's viewers.", "stream", "rung"),
		loss:             d("loss_ratio", "Median loss fraction (transport-cc) of a rung's viewers.", "stream", "rung"),
		rtt:              d("rtt_seconds", "Median round-trip time of a rung's viewers.", "stream", "rung"),
		queueDelay:       d("queue_delay_seconds", "Median bottleneck queueing delay of a rung's viewers.", "stream", "rung"),
		switches:         d("switches_total", "Completed rung switches of the stream's viewers by reason.", "stream", "reason"),
		probesFailed:     d("probes_failed_total", "Bandwidth probes that found no room for the next rung.", "stream"),
		freezes:          d("freezes_total", "Gaps over 500 ms between two video frames sent to a connected viewer.", "stream"),
		eventsSent:       d("events_sent_total", "Timed events sent on the stream's viewers' data channels.", "stream"),
		eventsDropped:    d("events_dropped_total", "Timed events not sent to a viewer (behind, or its data channel backed up or closed).", "stream"),
		actionsAccepted:  d("actions_accepted_total", "Viewers' actions published to NATS actions.<stream>.", "stream"),
		actionsRefused:   d("actions_refused_total", "Viewers' actions refused, by reason.", "stream", "reason"),
		keyframeRequests: d("keyframe_requests_total", "Keyframe requests of the stream's viewers by reason (the job's budget decides which force an IDR: prism_keyframes_forced_total).", "stream", "reason"),
	}
}

func (c *webrtcCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.viewers, c.estimate, c.loss, c.rtt, c.queueDelay, c.switches,
		c.probesFailed, c.freezes, c.keyframeRequests, c.eventsSent, c.eventsDropped, c.actionsAccepted, c.actionsRefused} {
		ch <- d
	}
}

func (c *webrtcCollector) Collect(ch chan<- prometheus.Metric) {
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	st := c.srv.Stats()
	type key struct{ stream, rung string }
	byRung := map[key][]webrtc.ViewerStats{}
	for _, v := range st.Viewers {
		if v.Connected && v.Rung != "" {
			k := key{v.Stream, v.Rung}
			byRung[k] = append(byRung[k], v)
		}
	}
	for k, vs := range byRung {
		m(c.viewers, prometheus.GaugeValue, float64(len(vs)), k.stream, k.rung)
		m(c.estimate, prometheus.GaugeValue, median(vs, func(v webrtc.ViewerStats) float64 { return float64(v.Estimate) }), k.stream, k.rung)
		m(c.loss, prometheus.GaugeValue, median(vs, func(v webrtc.ViewerStats) float64 { return v.Loss }), k.stream, k.rung)
		m(c.rtt, prometheus.GaugeValue, median(vs, func(v webrtc.ViewerStats) float64 { return v.RTTMS / 1000 }), k.stream, k.rung)
		m(c.queueDelay, prometheus.GaugeValue, median(vs, func(v webrtc.ViewerStats) float64 { return v.QueueDelayMS / 1000 }), k.stream, k.rung)
	}
	for _, s := range st.Streams {
		for reason, n := range s.Switches.Reasons {
			m(c.switches, prometheus.CounterValue, float64(n), s.Name, reason)
		}
		m(c.probesFailed, prometheus.CounterValue, float64(s.Switches.ProbesFailed), s.Name)
		m(c.freezes, prometheus.CounterValue, float64(s.Freezes), s.Name)
		for reason, n := range s.Keyframes.Requests {
			m(c.keyframeRequests, prometheus.CounterValue, float64(n), s.Name, reason)
		}
		m(c.eventsSent, prometheus.CounterValue, float64(s.Events.Sent), s.Name)
		m(c.eventsDropped, prometheus.CounterValue, float64(s.Events.Dropped), s.Name)
		m(c.actionsAccepted, prometheus.CounterValue, float64(s.Actions.Accepted), s.Name)
		for reason, n := range s.Actions.Refused {
			m(c.actionsRefused, prometheus.CounterValue, float64(n), s.Name, reason)
		}
	}
}

func median(vs []webrtc.ViewerStats, f func(webrtc.ViewerStats) float64) float64 {
	x := make([]float64, len(vs))
	for i, v := range vs {
		x[i] = f(v)
	}
	sort.Float64s(x)
	return x[len(x)/2]
}
