package ladder

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

var (
	ladderNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	rungNamePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
)

// Accepted values of the string settings, in the order messages list them.
var (
	codecs       = []string{"h264"}
	profiles     = []string{"baseline", "main", "high"}
	x264Presets  = []string{"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}
	nvencPresets = []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	tunes        = []string{"zerolatency", "film", "animation", "grain", "stillimage", "fastdecode", "psnr", "ssim", "none"}
	encoders     = []string{"auto", "x264", "nvenc", "qsv", "vaapi"}
	scalings     = []string{"auto", "cpu", "cuda"}
	fallbacks    = []string{"none", "software"}
)

// Limits enforced by Validate.
const (
	minGOP          = Duration(100 * time.Millisecond)
	maxGOP          = Duration(10 * time.Second)
	maxDimension    = 8192 // H.264 level 6.2 tops out at 8192 pixels per side
	maxFPS          = 240
	maxBFrames      = 4
	maxThreads      = 64
	minAudioBitrate = Bitrate(16_000)
	maxAudioBitrate = Bitrate(512_000)
)

// Validate checks the ladder's semantics and returns an ErrorList with every
// problem found, or nil. A ladder from Parse/Load reports source lines; one
// built in code reports field paths only.
func (l *Ladder) Validate() error {
	v := &validator{lines: l.lines}
	v.ladder(l)
	return yamlfile.Locate[invalidLadder](l.File, l.lines, &v.errs).Err()
}

type validator struct {
	lines yamlfile.Lines // to tell a missing key from a zero value
	errs  yamlfile.FieldErrors
}

func (v *validator) add(path, format string, args ...any) {
	v.errs.Addf(path, format, args...)
}

// missing reports whether a loaded ladder had no key at path, to say
// "is required" rather than complain about the zero value.
func (v *validator) missing(path string) bool {
	_, ok := v.lines[path]
	return v.lines != nil && !ok
}

func (v *validator) ladder(l *Ladder) {
	switch {
	case l.Name == "":
		v.add("name", "is required")
	case !ladderNamePattern.MatchString(l.Name):
		v.add("name", "invalid name %q: use 1-%d lowercase letters, digits, '_' or '-', starting with a letter or digit", clip(l.Name), maxLadderNameLength)
	}
	if l.GOP < minGOP || l.GOP > maxGOP {
		v.add("gop", "must be between %s and %s, got %s", minGOP, maxGOP, l.GOP)
	}
	if l.KeyframeMinInterval < 0 || l.KeyframeMinInterval > l.GOP {
		// Longer than the GOP would never force one: every request would
		// wait for the next GOP boundary anyway.
		v.add("keyframe_min_interval", "must be between 0s and the gop (%s), got %s", l.GOP, l.KeyframeMinInterval)
	}
	v.oneOf(l.Scaling, "scaling", "scaling", scalings)
	switch {
	case len(l.Rungs) == 0:
		v.add("rungs", "at least one rung is required")
	case len(l.Rungs) > maxRungs:
		v.add("rungs", "at most %d rungs are allowed, got %d", maxRungs, len(l.Rungs))
	}
	firstUse := map[string]int{}
	for i := range l.Rungs {
		path := yamlfile.Index("rungs", i)
		r := &l.Rungs[i]
		v.rung(r, path)
		if r.Name == "" {
			continue
		}
		if first, dup := firstUse[r.Name]; dup {
			v.add(path+".name", "duplicate rung name %q (already used by rungs[%d])", clip(r.Name), first)
		} else {
			firstUse[r.Name] = i
		}
	}
	v.audio(&l.Audio)
}

func (v *validator) rung(r *Rung, path string) {
	switch {
	case r.Name == "":
		v.add(path+".name", "is required")
	case !rungNamePattern.MatchString(r.Name):
		v.add(path+".name", "invalid name %q: use 1-%d lowercase letters, digits, '_' or '-', starting with a letter or digit", clip(r.Name), maxRungNameLength)
	}
	v.dimension(r.Width, path+".width")
	v.dimension(r.Height, path+".height")
	if r.Width == KeepAspect && r.Height == KeepAspect {
		v.add(path+".height", "width and height cannot both be -2")
	}
	v.rates(r, path)
	if r.FPS != 0 && !(r.FPS >= 1 && r.FPS <= maxFPS) {
		v.add(path+".fps", "must be 0 (source rate) or between 1 and %d, got %v", maxFPS, r.FPS)
	}
	v.oneOf(r.Codec, path+".codec", "codec", codecs)
	v.oneOf(r.Profile, path+".profile", "profile", profiles)
	v.preset(r, path+".preset")
	v.oneOf(r.Tune, path+".tune", "tune", tunes)
	v.oneOf(r.Encoder, path+".encoder", "encoder", encoders)
	v.oneOf(r.Fallback, path+".fallback", "fallback", fallbacks)
	switch {
	case r.BFrames < 0 || r.BFrames > maxBFrames:
		v.add(path+".bframes", "must be between 0 and %d, got %d", maxBFrames, r.BFrames)
	case r.BFrames > 0 && r.Profile == "baseline":
		v.add(path+".bframes", "the baseline profile has no B-frames; use 0 or profile main/high")
	}
	if r.Threads < 0 || r.Threads > maxThreads {
		v.add(path+".threads", "must be between 0 (automatic) and %d, got %d", maxThreads, r.Threads)
	}
}

func (v *validator) dimension(size int, path string) {
	switch {
	case size == KeepAspect:
	case size <= 0 || size%2 != 0:
		v.add(path, "must be -2 (keep the source aspect) or a positive even number, got %d", size)
	case size > maxDimension:
		v.add(path, "must be at most %d, got %d", maxDimension, size)
	}
}

func (v *validator) rates(r *Rung, path string) {
	if r.Bitrate <= 0 {
		if v.missing(path + ".bitrate") {
			v.add(path+".bitrate", "is required")
		} else {
			v.add(path+".bitrate", "must be greater than 0")
		}
		return // maxrate and bufsize are relative to it, so their checks would be noise
	}
	if r.Maxrate < r.Bitrate {
		v.add(path+".maxrate", "must be at least the bitrate (%s), got %s", r.Bitrate, r.Maxrate)
	}
	if r.Bufsize <= 0 {
		v.add(path+".bufsize", "must be greater than 0")
	}
}

// IsX264Preset reports whether p is one of x264's presets (not NVENC's).
func IsX264Preset(p string) bool { return slices.Contains(x264Presets, p) }

func (v *validator) preset(r *Rung, path string) {
	isX264 := slices.Contains(x264Presets, r.Preset)
	isNVENC := slices.Contains(nvencPresets, r.Preset)
	switch {
	case !isX264 && !isNVENC:
		v.add(path, "unknown preset %q (x264: %s; NVENC: %s)", clip(r.Preset), strings.Join(x264Presets, " "), strings.Join(nvencPresets, " "))
	case isNVENC && r.Encoder == "x264":
		v.add(path, "%s is an NVENC preset; encoder x264 needs one of %s", r.Preset, strings.Join(x264Presets, " "))
	}
}

func (v *validator) oneOf(value, path, what string, valid []string) {
	if slices.Contains(valid, value) {
		return
	}
	v.add(path, "unsupported %s %q (supported: %s)", what, clip(value), strings.Join(valid, ", "))
}

func (v *validator) audio(a *Audio) {
	if a.Channels != 1 && a.Channels != 2 {
		v.add("audio.channels", "must be 1 or 2, got %d", a.Channels)
	}
	for _, c := range []struct {
		path    string
		bitrate Bitrate
	}{{"audio.aac.bitrate", a.AAC.Bitrate}, {"audio.opus.bitrate", a.Opus.Bitrate}} {
		if c.bitrate < minAudioBitrate || c.bitrate > maxAudioBitrate {
			v.add(c.path, "must be between %s and %s, got %s", minAudioBitrate, maxAudioBitrate, c.bitrate)
		}
	}
}
