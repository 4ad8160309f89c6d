package pipeline

import "time"

// Kind is the media kind of a track.
type Kind int

// Track kinds.
const (
	KindVideo Kind = iota + 1
	KindAudio
	// KindContainer is a track of multiplexed bytes (an ingest's MPEG-TS),
	// demuxed by the worker.
	KindContainer
)

func (k Kind) String() string {
	switch k {
	case KindVideo:
		return "video"
	case KindAudio:
		return "audio"
	case KindContainer:
		return "container"
	}
	return "unknown"
}

// Codec names used on tracks.
const (
	CodecH264 = "h264"
	CodecAAC  = "aac"
	CodecOpus = "opus"
	// Source codecs a publisher may push (pipeline/ingest).
	CodecH265   = "h265"
	CodecAV1    = "av1"
	CodecVP8    = "vp8"
	CodecVP9    = "vp9"
	CodecMP3    = "mp3"
	CodecMPEGTS = "mpegts" // KindContainer: MPEG-TS bytes
)

// Video tracks carry timestamps in 90 kHz units, audio tracks in samples at
// their sample rate, so every rung of a ladder has the same PTS for the same
// source frame.
const VideoClockRate = 90000

// Track describes one encoded output of a job: a rung or an audio encoding.
type Track struct {
	ID        int    // index in Source.Tracks()
	Name      string // rung name ("720p"), or "aac" / "opus"
	Kind      Kind
	Codec     string
	ClockRate int // PTS units per second

	// Video.
	Width, Height int
	FPS           float64
	Profile       string
	Encoder       string // encoder implementation, e.g. "libx264"
	EncoderDevice string // where it encodes: "cpu", "cuda:0"
	Scaler        string // where the rung is scaled: "cpu", "cuda:0"
	// EncoderWhy says why this encoder and scaler, for the job's status
	// ("encoder auto: libx264 opens here; nvenc unavailable: ...").
	EncoderWhy string
	// GOP is the ladder's keyframe interval: IDRs fall on this grid on
	// every rung (forced keyframes may add more in between).
	GOP time.Duration

	// Audio.
	SampleRate int
	Channels   int
	// Extradata is the codec configuration: AudioSpecificConfig for AAC, the
	// OpusHead for Opus. H.264 tracks carry SPS/PPS in-band before every IDR.
	Extradata []byte

	// Bitrate is the configured target in bits per second.
	Bitrate int64
}

// Packet is one encoded access unit of a track. Data is never modified after
// the packet is published, so readers may share it.
type Packet struct {
	Track    int
	Data     []byte // H.264: Annex-B; AAC: raw AU; Opus: one packet
	PTS, DTS int64  // in the track's ClockRate
	Duration int64
	Keyframe bool
	// Discontinuity marks the first packet of a track after its source
	// changed (a failover to another node, a restarted input): timestamps
	// continue, the picture and sound jump.
	Discontinuity bool
	// Ingest is the wall-clock time when the source data of this packet
	// entered the pipeline: the base for latency measurements and for
	// EXT-X-PROGRAM-DATE-TIME.
	Ingest time.Time
}

// Time returns the packet's presentation time in seconds.
func (p *Packet) Time(clockRate int) float64 {
	return float64(p.PTS) / float64(clockRate)
}
