package pipeline

import "time"

// Source is a running ladder as every output reads it: encoded packets
// and statistics come out, and it can be stopped. It is the one boundary
// between the FFmpeg stages and everything that delivers them, so the same
// interface is served by an in-process transcoder and by a stream followed
// over NATS from a worker process on any node.
type Source interface {
	// Tracks lists the encoded outputs. It is fixed once the source started.
	Tracks() []Track
	// Subscribe returns a reader of the source's packets from now on.
	Subscribe(opts ...ReaderOption) *Reader
	// RequestKeyframe asks for an IDR on every rung at the same source frame,
	// saying why (one of the Keyframe* reasons; others count as
	// KeyframeOther). A transcoder spends one keyframe budget per job on
	// them: a request is answered by a forced IDR no sooner than its minimum
	// interval after the last IDR, or by the next GOP boundary when that
	// comes first. Other sources pass requests on to the one that decides.
	RequestKeyframe(reason string)
	// Stats returns a snapshot of the source's counters.
	Stats() SourceStats
	// Done is closed when the source ended, by Close, end of input or error.
	Done() <-chan struct{}
	// Err returns why the source ended: nil for a clean end of input or Close.
	Err() error
	// Close stops the source and waits until all its goroutines have returned.
	Close() error
}

// TrackStats are the output figures of one track.
type TrackStats struct {
	Track      string  `json:"track"`
	Frames     uint64  `json:"frames"`
	Bytes      uint64  `json:"bytes"`
	Keyframes  uint64  `json:"keyframes"`   // IDRs (video), on the GOP grid or forced
	FPS        float64 `json:"fps"`         // over the last few seconds
	Bitrate    float64 `json:"bitrate"`     // bits per second, over the last few seconds
	AvgFPS     float64 `json:"avg_fps"`     // since the start
	AvgBitrate float64 `json:"avg_bitrate"` // by media time since the start
}

// SourceStats is a snapshot of a source.
type SourceStats struct {
	Uptime    time.Duration   `json:"uptime_ns"`
	MediaTime time.Duration   `json:"media_time_ns"` // newest video PTS encoded
	Speed     float64         `json:"speed"`         // media time / uptime
	Stages    []StageSnapshot `json:"stages"`
	Tracks    []TrackStats    `json:"tracks"`
	Dropped   uint64          `json:"dropped"` // frames dropped inside the pipeline
	// Keyframes are the job's keyframe budget counters (a transcoder's; a
	// followed stream reports its publisher's).
	Keyframes KeyframeStats `json:"keyframes"`
	// Events counts timed events: the publisher's stamping, and on a
	// followed stream what reached this node.
	Events *EventStats `json:"events,omitempty"`
}

// EventStats count a stream's timed events.
type EventStats struct {
	Stamped  uint64 `json:"stamped"`  // bound to a frame by the publisher
	Refused  uint64 `json:"refused"`  // malformed, oversized or before any frame
	Limited  uint64 `json:"limited"`  // over the stream's rate
	Received uint64 `json:"received"` // reached this node's outputs
	Dropped  uint64 `json:"dropped"`  // lost by readers that were behind (this node)
}
