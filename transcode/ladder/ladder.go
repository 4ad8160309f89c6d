// Package ladder loads, validates and plans adaptive-bitrate ladders: the
// YAML files that tell Prism which renditions ("rungs") to encode from a
// live source.
//
// Loading is strict so that typos fail at startup instead of silently
// producing a different stream: unknown keys, duplicate keys and wrongly
// typed values are errors, and every error names the file, line and field
// ("ladder.yaml:14: rungs[2].bitrate: must be greater than 0").
package ladder

import (
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// Ladder is one adaptive-bitrate ladder.
type Ladder struct {
	Name string   `yaml:"name"` // required, [a-z0-9][a-z0-9_-]{0,63}
	GOP  Duration `yaml:"gop"`  // keyframe interval, 100ms..10s; default 1s
	// KeyframeMinInterval is the job's keyframe budget: the shortest time
	// from one IDR (GOP boundary or forced) to the next IDR forced by a
	// request (viewer join, PLI, HLS, followers, failover), on every rung.
	// 0..gop; default half the gop. In a file, 0 leaves forced IDRs
	// unspaced (ApplyDefaults takes 0 for unset).
	KeyframeMinInterval Duration `yaml:"keyframe_min_interval"`
	Rungs               []Rung   `yaml:"rungs"` // 1..16 renditions
	// Scaling is where the rungs are scaled: cpu (libswscale), cuda
	// (hwupload_cuda, scale_cuda per rung, one hwdownload per rung: the
	// mixed path for GPUs without NVENC) or auto (default: cpu until
	// scale_cuda is shown faster on the node; the job says why).
	Scaling string `yaml:"scaling"`
	Audio   Audio  `yaml:"audio"`
	File    string `yaml:"-"` // path it was loaded from ("" for bytes)

	// lines maps field paths ("rungs[2].bitrate") to the 1-based line they
	// were read from, so that Validate can point at the source. It is nil
	// for ladders built in code.
	lines yamlfile.Lines
}

// Rung is one rendition of the ladder.
type Rung struct {
	Name    string  `yaml:"name"`    // required, unique, [a-z0-9][a-z0-9_-]{0,31}
	Width   int     `yaml:"width"`   // KeepAspect or a positive even number; default KeepAspect
	Height  int     `yaml:"height"`  // same rules; not both KeepAspect
	Bitrate Bitrate `yaml:"bitrate"` // required, > 0
	Maxrate Bitrate `yaml:"maxrate"` // >= bitrate; default bitrate
	Bufsize Bitrate `yaml:"bufsize"` // VBV size, > 0; default maxrate (1 s of VBV: low latency)
	FPS     float64 `yaml:"fps"`     // cap; 0 = source rate, else 1..240
	Codec   string  `yaml:"codec"`   // h264 (default and only value for now)
	Profile string  `yaml:"profile"` // baseline|main|high; default high
	Preset  string  `yaml:"preset"`  // x264 preset or NVENC p1..p7; default veryfast
	Tune    string  `yaml:"tune"`    // default zerolatency
	Encoder string  `yaml:"encoder"` // auto|x264|nvenc|qsv|vaapi; default auto
	// Fallback is what a rung asking for a hardware encoder does where it
	// does not open: none (default: the job fails, saying why) or software
	// (x264, and the job's status says so). auto always falls back.
	Fallback string `yaml:"fallback"`
	BFrames  int    `yaml:"bframes"` // 0..4; default 0 because browsers' WebRTC decoders want none
	Upscale  bool   `yaml:"upscale"` // encode even when larger than the source
	Threads  int    `yaml:"threads"` // 0 = planned automatically; 0..64
}

// Audio configures the audio renditions; the sample rate is always 48000.
type Audio struct {
	Channels int        `yaml:"channels"` // 1 or 2; default 2
	AAC      AudioCodec `yaml:"aac"`      // default 128k
	Opus     AudioCodec `yaml:"opus"`     // default 96k
}

// AudioCodec holds the settings of one audio encoder.
type AudioCodec struct {
	Bitrate Bitrate `yaml:"bitrate"` // 16k..512k
}

// KeepAspect as a width or height means "derive it from the other dimension
// and the source aspect ratio, rounded to an even number" (FFmpeg's -2).
const KeepAspect = -2

// Defaults applied to keys that are absent.
const (
	DefaultGOP          = Duration(time.Second)
	DefaultCodec        = "h264"
	DefaultProfile      = "high"
	DefaultPreset       = "veryfast"
	DefaultTune         = "zerolatency"
	DefaultEncoder      = "auto"
	DefaultScaling      = "auto"
	DefaultFallback     = "none"
	DefaultChannels     = 2
	DefaultAACBitrate   = Bitrate(128_000)
	DefaultOpusBitrate  = Bitrate(96_000)
	AudioSampleRate     = 48000
	maxRungs            = 16
	maxLadderNameLength = 64
	maxRungNameLength   = 32
)

// defaultRung is a rung with every static default filled in. Maxrate and
// Bufsize default to other fields, so they are resolved after decoding.
func defaultRung() Rung {
	return Rung{
		Width:    KeepAspect,
		Height:   KeepAspect,
		Codec:    DefaultCodec,
		Profile:  DefaultProfile,
		Preset:   DefaultPreset,
		Tune:     DefaultTune,
		Encoder:  DefaultEncoder,
		Fallback: DefaultFallback,
	}
}

func defaultAudio() Audio {
	return Audio{
		Channels: DefaultChannels,
		AAC:      AudioCodec{Bitrate: DefaultAACBitrate},
		Opus:     AudioCodec{Bitrate: DefaultOpusBitrate},
	}
}

// ApplyDefaults fills zero-valued fields with their defaults, for ladders
// built in code (Parse applies defaults itself, and there an explicit zero
// such as "width: 0" is an error rather than a request for the default).
func (l *Ladder) ApplyDefaults() {
	if l.GOP == 0 {
		l.GOP = DefaultGOP
	}
	if l.KeyframeMinInterval == 0 {
		l.KeyframeMinInterval = l.GOP / 2
	}
	def := defaultRung()
	for i := range l.Rungs {
		r := &l.Rungs[i]
		setZero(&r.Width, def.Width)
		setZero(&r.Height, def.Height)
		setZero(&r.Maxrate, r.Bitrate)
		setZero(&r.Bufsize, r.Maxrate)
		setZero(&r.Codec, def.Codec)
		setZero(&r.Profile, def.Profile)
		setZero(&r.Preset, def.Preset)
		setZero(&r.Tune, def.Tune)
		setZero(&r.Encoder, def.Encoder)
		setZero(&r.Fallback, def.Fallback)
	}
	setZero(&l.Scaling, DefaultScaling)
	da := defaultAudio()
	setZero(&l.Audio.Channels, da.Channels)
	setZero(&l.Audio.AAC.Bitrate, da.AAC.Bitrate)
	setZero(&l.Audio.Opus.Bitrate, da.Opus.Bitrate)
}

func setZero[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
