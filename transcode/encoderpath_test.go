package transcode

import (
	"errors"
	"strings"
	"testing"

	"github.com/prism-streaming/prism/gpu"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// TestEncoderChoice: each rung's encoder is chosen the way the ladder asks,
// with the reason the job's status shows, and a hardware encoder that does
// not open is never replaced silently. Run where NVENC does not open (no
// NVIDIA GPU), as CI does; on a GPU node the auto case takes NVENC.
func TestEncoderChoice(t *testing.T) {
	if gpu.EncoderAvailable("h264_nvenc") == nil {
		t.Skip("h264_nvenc opens here: this test covers nodes without NVENC")
	}
	rung := func(encoder, fallback, preset string) ladder.PlannedRung {
		r := planned("r", 320, 180, 30)
		r.Encoder, r.Fallback, r.Preset, r.Profile, r.Tune = encoder, fallback, preset, "high", "zerolatency"
		r.Bitrate, r.Maxrate, r.Bufsize = 300_000, 300_000, 300_000
		return r
	}
	for _, c := range []struct {
		name      string
		rung      ladder.PlannedRung
		codec     string // "" = refused
		why, fail string
		sentinel  error
	}{
		{"auto falls to x264, saying why", rung("auto", "none", "veryfast"), "libx264", "nvenc unavailable: h264_nvenc", "", nil},
		{"x264 as asked", rung("x264", "none", "veryfast"), "libx264", "encoder x264 as the ladder asks", "", nil},
		{"nvenc without fallback is refused", rung("nvenc", "none", "p4"), "", "", "fallback: software would", ErrEncoder},
		{"nvenc with fallback software", rung("nvenc", "software", "p4"), "libx264", "fallback software: nvenc unavailable", "", nil},
		{"vaapi is refused precisely", rung("vaapi", "none", "veryfast"), "", "", "takes only vaapi hardware frames", ErrHardwareUnsupported},
		{"qsv with fallback software", rung("qsv", "software", "veryfast"), "libx264", "fallback software: qsv unavailable", "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cc, b, why, err := openVideoEncoder(c.rung, 30, 1)
			if c.codec == "" {
				if err == nil {
					cc.Free()
					t.Fatalf("opened %s (%s); want a refusal", b.Codec(), why)
				}
				if !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), c.fail) {
					t.Fatalf("error %q: want %v containing %q", err, c.sentinel, c.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Free()
			if b.Codec() != c.codec || !strings.Contains(why, c.why) {
				t.Fatalf("got %s (%q); want %s with a reason containing %q", b.Codec(), why, c.codec, c.why)
			}
		})
	}
}

// TestScalingPlan: "scaling: cuda" where no CUDA device opens is refused
// with the reason, auto stays on the CPU and says why, cpu is taken as is.
func TestScalingPlan(t *testing.T) {
	if cudaScalingAvailable(0) == nil {
		t.Skip("CUDA scaling works here: this test covers nodes without it")
	}
	if _, err := planScaling("cuda"); !errors.Is(err, ErrHardwareUnsupported) || !strings.Contains(err.Error(), "scaling cuda: ") {
		t.Fatalf("scaling cuda without a device: %v", err)
	}
	p, err := planScaling("auto")
	if err != nil || p.cuda || !strings.Contains(p.why, "scaling auto: cpu (scale_cuda unavailable: ") {
		t.Fatalf("auto: %+v, %v", p, err)
	}
	if p, err := planScaling("cpu"); err != nil || p.cuda || p.scaler() != "cpu" {
		t.Fatalf("cpu: %+v, %v", p, err)
	}
}
