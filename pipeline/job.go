package pipeline

import "time"

// Job is a running transcode seen from outside: media goes in (configured at
// start), encoded packets and statistics come out, and it can be stopped.
// This is the one boundary between the FFmpeg work and everything that
// delivers or coordinates it, so the same interface can be served by an
// in-process transcoder or by a worker process whose packets arrive over NATS.
type Job interface {
	// Tracks lists the encoded outputs. It is fixed once the job started.
	Tracks() []Track
	// Subscribe returns a reader of the job's packets from now on.
	Subscribe(opts ...ReaderOption) *Reader
	// RequestKeyframe asks for an IDR on every rung at the same source frame.
	// Requests are coalesced.
	RequestKeyframe()
	// Stats returns a snapshot of the job's counters.
	Stats() JobStats
	// Done is closed when the job ended, by Close, end of input or error.
	Done() <-chan struct{}
	// Err returns why the job ended: nil for a clean end of input or Close.
	Err() error
	// Close stops the job and waits until all its goroutines have returned.
	Close() error
}

// TrackStats are the output figures of one track.
type TrackStats struct {
	Track      string  `json:"track"`
	Frames     uint64  `json:"frames"`
	Bytes      uint64  `json:"bytes"`
	FPS        float64 `json:"fps"`         // over the last few seconds
	Bitrate    float64 `json:"bitrate"`     // bits per second, over the last few seconds
	AvgFPS     float64 `json:"avg_fps"`     // since the start
	AvgBitrate float64 `json:"avg_bitrate"` // by media time since the start
}

// JobStats is a snapshot of a job.
type JobStats struct {
	Uptime    time.Duration   `json:"uptime_ns"`
	MediaTime time.Duration   `json:"media_time_ns"` // newest video PTS encoded
	Speed     float64         `json:"speed"`         // media time / uptime
	Stages    []StageSnapshot `json:"stages"`
	Tracks    []TrackStats    `json:"tracks"`
	Dropped   uint64          `json:"dropped"` // frames dropped inside the pipeline
}
