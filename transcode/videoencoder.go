package transcode

import (
	"fmt"
	"math"
	"strings"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/gpu"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// videoBackend is one H.264 encoder implementation. Adding NVENC, QSV or
// VAAPI support means adding a backend: the rest of the pipeline only sees
// frames in and packets out.
type videoBackend interface {
	// Name is the ladder's name for it: "x264", "nvenc", ...
	Name() string
	// Codec is the FFmpeg encoder.
	Codec() string
	// Device is where it encodes: "cpu", "cuda:0".
	Device() string
	// Configure sets up cc and the open options for one rung.
	Configure(cc *astiav.CodecContext, opts *astiav.Dictionary, r ladder.PlannedRung, gopFrames, threads int) error
}

var videoBackends = map[string]videoBackend{
	"x264":  x264Backend{},
	"nvenc": nvencBackend{},
}

// autoOrder is the order "encoder: auto" tries: hardware first, when it opens.
var autoOrder = []string{"nvenc", "x264"}

// x264Backend encodes with libx264 in software.
type x264Backend struct{}

func (x264Backend) Name() string   { return "x264" }
func (x264Backend) Codec() string  { return "libx264" }
func (x264Backend) Device() string { return "cpu" }

func (x264Backend) Configure(cc *astiav.CodecContext, opts *astiav.Dictionary, r ladder.PlannedRung, gopFrames, threads int) error {
	set := func(k, v string) { _ = opts.Set(k, v, astiav.NewDictionaryFlags()) }
	set("preset", r.Preset)
	if r.Tune != "" && r.Tune != "none" {
		set("tune", r.Tune)
	}
	set("profile", r.Profile)
	// Keyframes come only from the keyframe clock, identically on every rung:
	// no scene-cut or interval keyframes, closed GOPs, forced frames are IDRs.
	set("forced-idr", "1")
	set("x264-params", "scenecut=0:open-gop=0:keyint=infinite")
	cc.SetThreadCount(threads)
	return nil
}

// nvencBackend encodes on NVIDIA GPUs from system-memory frames.
type nvencBackend struct{}

func (nvencBackend) Name() string  { return "nvenc" }
func (nvencBackend) Codec() string { return "h264_nvenc" }

// Device is NVENC's default GPU: the encoder opens on CUDA device 0.
func (nvencBackend) Device() string { return "cuda:0" }

func (nvencBackend) Configure(cc *astiav.CodecContext, opts *astiav.Dictionary, r ladder.PlannedRung, gopFrames, threads int) error {
	set := func(k, v string) { _ = opts.Set(k, v, astiav.NewDictionaryFlags()) }
	set("preset", nvencPreset(r.Preset))
	if r.Tune == "zerolatency" {
		set("tune", "ll")
		set("zerolatency", "1")
		set("delay", "0")
	}
	set("profile", r.Profile)
	set("rc", "cbr")
	set("forced-idr", "1")
	set("no-scenecut", "1")
	set("strict_gop", "1")
	// Keyframes come from the keyframe clock; keep NVENC's own far away.
	cc.SetGopSize(gopFrames * 100)
	return nil
}

func nvencPreset(p string) string {
	if strings.HasPrefix(p, "p") && len(p) == 2 {
		return p
	}
	switch p {
	case "ultrafast", "superfast":
		return "p1"
	case "veryfast":
		return "p2"
	case "faster", "fast":
		return "p3"
	case "medium":
		return "p4"
	case "slow":
		return "p5"
	case "slower":
		return "p6"
	}
	return "p7"
}

// probeBackend reports whether a backend can open on this machine: a codec
// compiled into FFmpeg may still lack its driver or device.
func probeBackend(b videoBackend) error {
	if b.Name() == "x264" {
		if astiav.FindEncoderByName(b.Codec()) == nil {
			return fmt.Errorf("%s is not compiled into this FFmpeg", b.Codec())
		}
		return nil
	}
	return gpu.EncoderAvailable(b.Codec())
}

// openVideoEncoder opens the encoder of one rung and says why that one:
// "encoder: auto" takes the first of autoOrder that opens, a named hardware
// encoder that does not open fails the rung with the probe's reason unless
// the rung has "fallback: software". The encoder takes yuv420p frames with
// 90 kHz timestamps.
func openVideoEncoder(r ladder.PlannedRung, gopFrames, threads int) (*astiav.CodecContext, videoBackend, string, error) {
	switch r.Encoder {
	case "", "auto":
		var skipped []string
		for _, name := range autoOrder {
			b := videoBackends[name]
			err := probeBackend(b)
			var cc *astiav.CodecContext
			if err == nil {
				cc, err = openBackend(b, r, gopFrames, threads)
			}
			if err == nil {
				why := "encoder auto: " + b.Codec() + " opens here"
				if len(skipped) > 0 {
					why += "; " + strings.Join(skipped, "; ")
				}
				return cc, b, why, nil
			}
			skipped = append(skipped, name+" unavailable: "+err.Error())
		}
		return nil, nil, "", fmt.Errorf("%w: rung %s: no encoder opens: %s", ErrEncoder, r.Name, strings.Join(skipped, "; "))
	case "qsv", "vaapi":
		err := hardwareFramesOnly(r.Encoder)
		if r.Fallback != "software" {
			return nil, nil, "", fmt.Errorf("%w: rung %s: %w (fallback: software would encode it with x264)", ErrEncoder, r.Name, err)
		}
		return openFallback(r, gopFrames, threads, err)
	}
	b, ok := videoBackends[r.Encoder]
	if !ok {
		return nil, nil, "", fmt.Errorf("%w: rung %s: unknown encoder %q", ErrEncoder, r.Name, r.Encoder)
	}
	err := probeBackend(b)
	var cc *astiav.CodecContext
	if err == nil {
		cc, err = openBackend(b, r, gopFrames, threads)
	}
	switch {
	case err == nil:
		return cc, b, "encoder " + r.Encoder + " as the ladder asks: " + b.Codec() + " opens here", nil
	case b.Name() == "x264" || r.Fallback != "software":
		hint := ""
		if b.Name() != "x264" {
			hint = " (fallback: software would encode it with x264)"
		}
		return nil, nil, "", fmt.Errorf("%w: rung %s: %w%s", ErrEncoder, r.Name, err, hint)
	}
	return openFallback(r, gopFrames, threads, err)
}

// openFallback opens x264 for a rung whose hardware encoder failed with
// cause, as "fallback: software" allows.
func openFallback(r ladder.PlannedRung, gopFrames, threads int, cause error) (*astiav.CodecContext, videoBackend, string, error) {
	b := videoBackends["x264"]
	fr := r
	if !ladder.IsX264Preset(fr.Preset) {
		fr.Preset = ladder.DefaultPreset // an NVENC preset means nothing to x264
	}
	cc, err := openBackend(b, fr, gopFrames, threads)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: rung %s: %s unavailable (%w), and the software fallback failed: %w", ErrEncoder, r.Name, r.Encoder, cause, err)
	}
	return cc, b, "fallback software: " + r.Encoder + " unavailable: " + cause.Error(), nil
}

// hardwareFramesOnly explains why a QSV or VAAPI rung cannot run here: those
// encoders take only hardware frames, which this pipeline does not route
// to them (it scales on the CPU or with CUDA), and the probe says whether
// the device would even open.
func hardwareFramesOnly(encoder string) error {
	dev := "no " + encoder + " device was probed"
	for _, d := range gpu.Probe().Devices {
		if d.Type == encoder {
			if d.Available {
				dev = encoder + " device " + d.Device + " opens"
			} else {
				dev = encoder + " device " + d.Device + ": " + d.Error
			}
		}
	}
	return fmt.Errorf("%w: h264_%s takes only %s hardware frames, which Prism does not route yet (%s)", ErrHardwareUnsupported, encoder, encoder, dev)
}

func openBackend(b videoBackend, r ladder.PlannedRung, gopFrames, threads int) (*astiav.CodecContext, error) {
	codec := astiav.FindEncoderByName(b.Codec())
	cc := astiav.AllocCodecContext(codec)
	cc.SetWidth(r.OutWidth)
	cc.SetHeight(r.OutHeight)
	cc.SetPixelFormat(astiav.PixelFormatYuv420P)
	cc.SetSampleAspectRatio(astiav.NewRational(1, 1))
	cc.SetTimeBase(clock90k)
	cc.SetFramerate(rationalFPS(r.OutFPS))
	cc.SetBitRate(int64(r.Bitrate))
	cc.SetRateControlMaxRate(int64(r.Maxrate))
	cc.SetRateControlBufferSize(int(r.Bufsize))
	cc.SetMaxBFrames(r.BFrames)
	opts := astiav.NewDictionary()
	defer opts.Free()
	if err := b.Configure(cc, opts, r, gopFrames, threads); err != nil {
		cc.Free()
		return nil, err
	}
	if err := cc.Open(codec, opts); err != nil {
		cc.Free()
		return nil, fmt.Errorf("opening %s for rung %s (%dx%d, preset %s, profile %s): %w",
			b.Codec(), r.Name, r.OutWidth, r.OutHeight, r.Preset, r.Profile, err)
	}
	return cc, nil
}

func rationalFPS(f float64) astiav.Rational {
	if r := math.Round(f); math.Abs(f-r) < 1e-3 {
		return astiav.NewRational(int(r), 1)
	}
	return astiav.NewRational(int(math.Round(f*1001)), 1001)
}
