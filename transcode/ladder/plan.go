package ladder

import (
	"fmt"
	"math"
)

// PlannedRung is a rung resolved against a concrete source.
type PlannedRung struct {
	Rung
	OutWidth, OutHeight int
	OutFPS              float64 // 0 only when both the rung and the source rate are unknown
	Index               int     // position in Ladder.Rungs
}

// SkippedRung is a rung Plan left out, with the reason for logs and APIs.
type SkippedRung struct {
	Rung
	Reason string
}

// maxSourceDimension keeps the aspect arithmetic far from int overflow.
const maxSourceDimension = 1 << 16

// Plan resolves the ladder against a source of srcWidth x srcHeight at
// srcFPS (0 if not known yet). KeepAspect sizes are derived from the source
// aspect, rungs larger than the source are skipped unless Upscale is set,
// and each rung's frame rate is capped at the source rate. It returns an
// error wrapping ErrNoRungs when every rung is skipped.
func (l *Ladder) Plan(srcWidth, srcHeight int, srcFPS float64) ([]PlannedRung, []SkippedRung, error) {
	if err := l.Validate(); err != nil {
		return nil, nil, err
	}
	if srcWidth <= 0 || srcHeight <= 0 || srcWidth > maxSourceDimension || srcHeight > maxSourceDimension {
		return nil, nil, fmt.Errorf("ladder %q: invalid source size %dx%d", l.Name, srcWidth, srcHeight)
	}
	if math.IsNaN(srcFPS) || math.IsInf(srcFPS, 0) || srcFPS < 0 {
		return nil, nil, fmt.Errorf("ladder %q: invalid source frame rate %v", l.Name, srcFPS)
	}
	var planned []PlannedRung
	var skipped []SkippedRung
	for i, r := range l.Rungs {
		w, h := outputSize(r.Width, r.Height, srcWidth, srcHeight)
		if !r.Upscale && (w > evenCeil(srcWidth) || h > evenCeil(srcHeight)) {
			skipped = append(skipped, SkippedRung{Rung: r, Reason: fmt.Sprintf(
				"larger than the %dx%d source (set upscale: true to encode it)", srcWidth, srcHeight)})
			continue
		}
		planned = append(planned, PlannedRung{Rung: r, OutWidth: w, OutHeight: h, OutFPS: outputFPS(r.FPS, srcFPS), Index: i})
	}
	if len(planned) == 0 {
		return nil, skipped, fmt.Errorf("ladder %q: %w: every rung is larger than the %dx%d source", l.Name, ErrNoRungs, srcWidth, srcHeight)
	}
	return planned, skipped, nil
}

// outputSize resolves KeepAspect like FFmpeg's scale=-2: the other side is
// scaled by the source aspect and rounded to the nearest even number.
func outputSize(width, height, srcWidth, srcHeight int) (int, int) {
	switch {
	case width == KeepAspect:
		width = scaleEven(height, srcWidth, srcHeight)
	case height == KeepAspect:
		height = scaleEven(width, srcHeight, srcWidth)
	}
	return width, height
}

// scaleEven returns known*num/den rounded to the nearest multiple of 2
// (halves away from zero, as av_rescale does), and at least 2.
func scaleEven(known, num, den int) int {
	n := int64(known) * int64(num)
	d := int64(den) * 2
	return max(int((n+d/2)/d)*2, 2)
}

// evenCeil rounds an odd source size up: a KeepAspect rung of an 853x480
// source comes out 854 wide, which is the same picture, not an upscale.
func evenCeil(n int) int { return n + n%2 }

func outputFPS(rungFPS, srcFPS float64) float64 {
	switch {
	case rungFPS == 0:
		return srcFPS
	case srcFPS == 0:
		return rungFPS
	}
	return min(rungFPS, srcFPS)
}
