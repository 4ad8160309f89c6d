// Package stamp puts a frame's capture time into the picture of a lavfi test
// source and reads it back, so that latency is measured from the moment the
// frame was made to the moment it is on screen (glass to glass), not from
// when Prism received it.
//
// Prism's FFmpeg has no drawing or overlay filter, so the stamp is built
// from pad and hflip alone: layer k pads the picture with a black band on the
// left and a white one on the right, then mirrors it all when bit k is set.
// A last mirror (on the parity of the bits) puts the picture back the right
// way round. The left band of layer k ends up white exactly when the parity
// of bits 1..k-1 is odd, and its right band is always the opposite colour:
// bit k is the XOR of the left bands of layers k and k+1, and every
// left/right pair that is not opposite rejects a misread. The bands run the
// full height of the frame, so a reader averages hundreds of rows and they
// survive scaling and low bitrates.
package stamp

import (
	"fmt"
	"strings"
	"time"
)

// Bits is how many bits of the capture time a stamp carries: milliseconds
// modulo 2^16, so delays within ±32 s read unambiguously.
const Bits = 16

const (
	payload = Bits + 1    // the time and a "valid" bit
	layers  = payload + 1 // the outermost layer only carries the last parity
	bands   = 2 * layers  // one band per layer on each side
	units   = 160         // a band is 1/units of the frame width
	modulo  = 1 << Bits   // the stamp's range in milliseconds
	latchAt = 15          // frames before the live clock is latched
	// latchFrames is how many frames after latchAt the latched clock may
	// still move down to an earlier reading.
	latchFrames = 30
	lead        = 1 // frames a paced lavfi frame is made before Prism reads it
)

// Options says where the stamped time comes from.
type Options struct {
	// Epoch is the time of the first frame; frame n then carries Epoch +
	// n/fps. Zero: the wall clock, latched after latchAt frames at the
	// earliest reading of the latchFrames after (when the source reads at
	// its own pace), so every frame carries the time it entered the
	// pipeline.
	Epoch time.Time
}

// Video returns a lavfi filter chain (no labels) producing a w×h testsrc2
// picture at fps frames per second with the stamp drawn on both sides.
// w must be a multiple of 320 (the bands are w/160 pixels wide, an even
// number for 4:2:0 chroma).
func Video(w, h, fps int, o Options) (string, error) {
	if w <= 0 || w%(2*units) != 0 || h <= 0 || h%2 != 0 || fps <= 0 {
		return "", fmt.Errorf("stamp: %dx%d at %d fps: the width must be a multiple of %d, the height even", w, h, fps, 2*units)
	}
	bw := w / units
	var b strings.Builder
	fmt.Fprintf(&b, "testsrc2=size=%dx%d:rate=%d,settb=1/1000,", w-bands*bw, h, fps)
	// One expression sets the time every band is drawn from: a single
	// clock reading, so all bits agree. PTS are in ms from here on.
	valid := "1"
	if o.Epoch.IsZero() {
		// RTCTIME less PTS when frame latchAt is made, plus the frame it is
		// made ahead of being read; modulo the stamp's range keeps PTS
		// small. Over the next latchFrames frames the offset moves down to
		// the earliest reading: a frame is only ever made late (a loaded
		// machine), and one late reading would put every stamp after the
		// frame's real capture (CI saw WebRTC display 6 ms "before" it).
		// Each reading is unwrapped against the kept one (mod 2^16 ms).
		v := fmt.Sprintf("(mod(round(RTCTIME/1000),%d)+%d-PTS)", modulo, lead*1000/fps)
		fmt.Fprintf(&b, "setpts='PTS+if(lt(N,%d),0,if(eq(N,%d),st(0,%s),if(lte(N,%d),st(0,min(ld(0),%s-%d*round((%s-ld(0))/%d))),ld(0))))',",
			latchAt, latchAt, v, latchAt+latchFrames, v, modulo, v, modulo)
		valid = fmt.Sprintf("gte(n,%d)", latchAt)
	} else {
		fmt.Fprintf(&b, "setpts='PTS+%d',", o.Epoch.UnixMilli()%modulo)
	}
	bit := func(k int) string { // bit k of the payload, from t (seconds)
		if k == Bits {
			return valid
		}
		return fmt.Sprintf("mod(floor(round(t*1000)/%d),2)", 1<<k)
	}
	parity := make([]string, payload)
	for k := range payload {
		parity[k] = bit(k)
		fmt.Fprintf(&b, "pad=w=iw+%d:h=ih:x=0:y=0:color=white,pad=w=iw+%d:h=ih:x=%d:y=0:color=black,hflip=enable='%s',", bw, bw, bw, bit(k))
	}
	fmt.Fprintf(&b, "pad=w=iw+%d:h=ih:x=0:y=0:color=white,pad=w=iw+%d:h=ih:x=%d:y=0:color=black,", bw, bw, bw)
	fmt.Fprintf(&b, "hflip=enable='mod(%s,2)',", strings.Join(parity, "+"))
	// Back to the source's own timestamps: frame n at n/fps.
	fmt.Fprintf(&b, "settb=1/%d,setpts=N", fps)
	return b.String(), nil
}

// MustVideo is Video with the live clock, for sizes known to be valid.
func MustVideo(w, h, fps int) string {
	s, err := Video(w, h, fps, Options{})
	if err != nil {
		panic(err)
	}
	return s
}

// Decode reads the stamp from a frame's luma (or any grey) plane of w×h
// pixels, stride bytes a row: the capture time in milliseconds modulo
// 2^Bits. ok is false when the frame carries no stamp, the stamp is not
// latched yet, or any band pair reads ambiguously.
func Decode(y []byte, w, h, stride int) (ms uint16, ok bool) {
	if w < units || h < 8 || stride < w || len(y) < (h-1)*stride+w {
		return 0, false
	}
	// Mean of the middle half of the band whose left edge is x (in 1/units
	// of the width), over the middle three quarters of the rows.
	band := func(x int) int {
		x0, x1 := x*w/units, (x+1)*w/units
		x0, x1 = x0+(x1-x0)/4, x1-(x1-x0)/4
		if x1 <= x0 {
			x1 = x0 + 1
		}
		sum, n := 0, 0
		for r := h / 8; r < h-h/8; r += 2 {
			for _, p := range y[r*stride+x0 : r*stride+x1] {
				sum += int(p)
			}
			n += x1 - x0
		}
		return sum / n
	}
	// Layer k = 1 (innermost) .. layers (outermost).
	left := func(k int) int { return band(layers - k) }
	right := func(k int) int { return band(units - 1 - (layers - k)) }
	black, white := left(1), right(1)
	if white-black < 64 {
		return 0, false // no stamp: not a stamped source, or no contrast
	}
	mid, margin := (black+white)/2, (white-black)/4
	var l [layers + 1]bool // l[k]: the left band of layer k is white
	for k := 1; k <= layers; k++ {
		a, b := left(k)-mid, right(k)-mid
		if a > -margin && a < margin || b > -margin && b < margin || (a > 0) == (b > 0) {
			return 0, false
		}
		l[k] = a > 0
	}
	var v uint32
	for k := 1; k <= payload; k++ {
		if l[k] != l[k+1] {
			v |= 1 << (k - 1)
		}
	}
	if v>>Bits&1 == 0 {
		return 0, false // before the clock was latched
	}
	return uint16(v), true
}

// Since is how long before at a stamp's time was, taking the nearest
// reading of the wrapped millisecond count (within ±2^(Bits-1) ms).
func Since(ms uint16, at time.Time) time.Duration {
	d := uint16(at.UnixMilli()%modulo) - ms
	return time.Duration(int16(d)) * time.Millisecond
}
