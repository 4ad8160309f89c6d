package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/pipeline"
)

// streamCollector exposes every running stream's statistics at scrape time, so
// the pipeline keeps plain counters and nothing polls in the background.
type streamCollector struct {
	streams *pipeline.Registry
	// hlsLatency reports ingest-to-part-downloadable for a stream, when the
	// HLS output serves it.
	hlsLatency func(stream string) (p50, p95 time.Duration, ok bool)
	hlsPart    *prometheus.Desc
	// rtcLatency reports ingest to a frame's last RTP packet handed to a
	// viewer, when the WebRTC output serves the stream.
	rtcLatency func(stream string) (p50, p95 time.Duration, ok bool)
	rtcSent    *prometheus.Desc

	speed, mediaTime          *prometheus.Desc
	trackFrames, trackBytes   *prometheus.Desc
	trackFPS, trackBitrate    *prometheus.Desc
	stageFrames, stageDropped *prometheus.Desc
	stageBusy, stageLatency   *prometheus.Desc
	trackKeyframes            *prometheus.Desc
	keyRequests, keyForced    *prometheus.Desc
	keyCoalesced              *prometheus.Desc
	eventsIn, eventsReceived  *prometheus.Desc
	eventsDropped             *prometheus.Desc
}

func newStreamCollector(streams *pipeline.Registry, hlsLatency, rtcLatency func(string) (time.Duration, time.Duration, bool)) *streamCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("prism_"+name, help, labels, nil)
	}
	return &streamCollector{
		streams:        streams,
		hlsLatency:     hlsLatency,
		rtcLatency:     rtcLatency,
		rtcSent:        d("webrtc_send_latency_seconds", "Time from ingest to a video frame's last RTP packet handed to a viewer's track.", "stream", "quantile"),
		hlsPart:        d("hls_part_latency_seconds", "Time from ingest to the LL-HLS part being downloadable.", "stream", "quantile"),
		speed:          d("stream_speed", "Media time encoded per wall-clock second (1 = real time).", "stream"),
		mediaTime:      d("stream_media_seconds", "Newest video timestamp encoded.", "stream"),
		trackFrames:    d("track_frames_total", "Encoded frames (packets) per output track.", "stream", "track"),
		trackBytes:     d("track_bytes_total", "Encoded bytes per output track.", "stream", "track"),
		trackFPS:       d("track_fps", "Output frame rate over the last seconds.", "stream", "track"),
		trackBitrate:   d("track_bitrate_bps", "Output bitrate over the last seconds.", "stream", "track"),
		stageFrames:    d("stage_frames_total", "Frames out of a pipeline stage.", "stream", "stage"),
		stageDropped:   d("stage_dropped_total", "Frames a pipeline stage discarded.", "stream", "stage"),
		stageBusy:      d("stage_busy_seconds_total", "Time a pipeline stage spent working.", "stream", "stage"),
		stageLatency:   d("stage_latency_seconds", "Time from ingest to a stage's output.", "stream", "stage", "quantile"),
		trackKeyframes: d("track_keyframes_total", "IDRs per video track (rung): GOP boundaries and forced ones.", "stream", "track"),
		keyRequests:    d("keyframe_requests_total", "Keyframe requests to the stream's job, per reason.", "stream", "reason"),
		keyForced:      d("keyframes_forced_total", "IDRs the job's keyframe budget forced on every rung for requests.", "stream"),
		keyCoalesced:   d("keyframe_requests_coalesced_total", "Keyframe requests answered by an IDR already due (forced or GOP).", "stream"),
		eventsIn:       d("events_in_total", "Timed events sent to the stream, by what its publisher did with them (stamped, refused, limited).", "stream", "result"),
		eventsReceived: d("events_received_total", "Stamped timed events that reached this node's outputs.", "stream"),
		eventsDropped:  d("events_dropped_total", "Timed events lost on this node by outputs that were behind.", "stream"),
	}
}

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.speed, c.mediaTime, c.trackFrames, c.trackBytes, c.trackFPS,
		c.trackBitrate, c.stageFrames, c.stageDropped, c.stageBusy, c.stageLatency, c.hlsPart, c.rtcSent,
		c.trackKeyframes, c.keyRequests, c.keyForced, c.keyCoalesced, c.eventsIn, c.eventsReceived, c.eventsDropped} {
		ch <- d
	}
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	for _, name := range c.streams.Names() {
		src, ok := c.streams.Get(name)
		if !ok {
			continue
		}
		s := src.Stats()
		if c.hlsLatency != nil {
			if p50, p95, ok := c.hlsLatency(name); ok {
				m(c.hlsPart, prometheus.GaugeValue, p50.Seconds(), name, "0.5")
				m(c.hlsPart, prometheus.GaugeValue, p95.Seconds(), name, "0.95")
			}
		}
		if c.rtcLatency != nil {
			if p50, p95, ok := c.rtcLatency(name); ok {
				m(c.rtcSent, prometheus.GaugeValue, p50.Seconds(), name, "0.5")
				m(c.rtcSent, prometheus.GaugeValue, p95.Seconds(), name, "0.95")
			}
		}
		m(c.speed, prometheus.GaugeValue, s.Speed, name)
		m(c.mediaTime, prometheus.GaugeValue, s.MediaTime.Seconds(), name)
		for _, t := range s.Tracks {
			m(c.trackFrames, prometheus.CounterValue, float64(t.Frames), name, t.Track)
			m(c.trackBytes, prometheus.CounterValue, float64(t.Bytes), name, t.Track)
			m(c.trackFPS, prometheus.GaugeValue, t.FPS, name, t.Track)
			m(c.trackBitrate, prometheus.GaugeValue, t.Bitrate, name, t.Track)
			if t.Keyframes > 0 {
				m(c.trackKeyframes, prometheus.CounterValue, float64(t.Keyframes), name, t.Track)
			}
		}
		// The reasons come from the publisher's report: fold them into the
		// known set again, so the labels stay bounded whoever sent it.
		requests := map[string]uint64{}
		for reason, n := range s.Keyframes.Requests {
			requests[pipeline.KeyframeReason(reason)] += n
		}
		for reason, n := range requests {
			m(c.keyRequests, prometheus.CounterValue, float64(n), name, reason)
		}
		m(c.keyForced, prometheus.CounterValue, float64(s.Keyframes.Forced), name)
		m(c.keyCoalesced, prometheus.CounterValue, float64(s.Keyframes.Coalesced), name)
		if ev := s.Events; ev != nil {
			m(c.eventsIn, prometheus.CounterValue, float64(ev.Stamped), name, "stamped")
			m(c.eventsIn, prometheus.CounterValue, float64(ev.Refused), name, "refused")
			m(c.eventsIn, prometheus.CounterValue, float64(ev.Limited), name, "limited")
			m(c.eventsReceived, prometheus.CounterValue, float64(ev.Received), name)
			m(c.eventsDropped, prometheus.CounterValue, float64(ev.Dropped), name)
		}
		for _, st := range s.Stages {
			m(c.stageFrames, prometheus.CounterValue, float64(st.Frames), name, st.Name)
			m(c.stageDropped, prometheus.CounterValue, float64(st.Dropped), name, st.Name)
			m(c.stageBusy, prometheus.CounterValue, st.Busy.Seconds(), name, st.Name)
			m(c.stageLatency, prometheus.GaugeValue, st.LatencyP50.Seconds(), name, st.Name, "0.5")
			m(c.stageLatency, prometheus.GaugeValue, st.LatencyP95.Seconds(), name, st.Name, "0.95")
		}
	}
}

// authCollector counts refused credentials per action (never the
// credentials themselves).
type authCollector struct {
	auth    *auth.Authorizer
	refused *prometheus.Desc
}

func newAuthCollector(a *auth.Authorizer) *authCollector {
	return &authCollector{auth: a, refused: prometheus.NewDesc("prism_auth_refused_total",
		"Requests refused for a missing, invalid or insufficient credential, per action.", []string{"action"}, nil)}
}

func (c *authCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.refused }

func (c *authCollector) Collect(ch chan<- prometheus.Metric) {
	for action, n := range c.auth.Failures() {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n), string(action))
	}
}
