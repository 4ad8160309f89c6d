package stamp

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// frames runs the FFmpeg CLI on graph (through the lavfi device, as Prism
// opens it) with the extra output arguments, and returns n grey frames of
// w×h.
func frames(t *testing.T, graph string, w, h, n int, args ...string) [][]byte {
	t.Helper()
	cmd := exec.Command("ffmpeg", append(append([]string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", graph}, args...),
		"-frames:v", fmt.Sprint(n), "-f", "rawvideo", "-pix_fmt", "gray", "-s", fmt.Sprintf("%dx%d", w, h), "-")...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, errOut.String())
	}
	size := w * h
	if out.Len() != n*size {
		t.Fatalf("ffmpeg gave %d bytes, want %d frames of %d", out.Len(), n, size)
	}
	got := make([][]byte, n)
	for i := range got {
		got[i] = out.Bytes()[i*size : (i+1)*size]
	}
	return got
}

// TestDecodeKnownEpoch: frames rendered by the real FFmpeg from the graph
// decode to the epoch plus their presentation time, at the source size,
// scaled to 640x360, and through x264 at a low bitrate (the lowest rung).
func TestDecodeKnownEpoch(t *testing.T) {
	epoch := time.UnixMilli(1_796_000_123_456)
	graph, err := Video(1280, 720, 30, Options{Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	want := func(n int) uint16 { return uint16((epoch.UnixMilli() + (int64(n)*1000+15)/30) % modulo) }
	const n = 60
	for _, c := range []struct {
		name string
		w, h int
		args []string
	}{
		{"1280x720", 1280, 720, nil},
		{"640x360", 640, 360, nil},
		// x264 at 450 kbit/s then decoded, as the 360p rung is.
		{"640x360 x264 450k", 640, 360, []string{"-vf", "scale=640:360", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
			"-b:v", "450k", "-maxrate", "450k", "-bufsize", "450k", "-f", "h264", "-"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got [][]byte
			if len(c.args) > 0 && c.args[len(c.args)-1] == "-" {
				got = encodeDecode(t, graph, c.w, c.h, n, c.args)
			} else {
				got = frames(t, graph, c.w, c.h, n)
			}
			for i, f := range got {
				ms, ok := Decode(f, c.w, c.h, c.w)
				if !ok || ms != want(i) {
					t.Errorf("frame %d: %d, %v; want %d", i, ms, ok, want(i))
				}
			}
		})
	}
}

// encodeDecode encodes the graph's frames with the given arguments (ending
// in an H.264 stream on stdout), then decodes that stream to grey frames.
func encodeDecode(t *testing.T, graph string, w, h, n int, args []string) [][]byte {
	t.Helper()
	es := filepath.Join(t.TempDir(), "stamp.h264") // this FFmpeg reads no pipes
	args = append(args[:len(args)-1], es)
	enc := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", graph, "-frames:v", fmt.Sprint(n)}, args...)...)
	var errOut bytes.Buffer
	enc.Stderr = &errOut
	if err := enc.Run(); err != nil {
		t.Fatalf("encoding: %v\n%s", err, errOut.String())
	}
	dec := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", es, "-f", "rawvideo", "-pix_fmt", "gray", "-")
	var out bytes.Buffer
	dec.Stdout, dec.Stderr = &out, &errOut
	if err := dec.Run(); err != nil {
		t.Fatalf("decoding: %v\n%s", err, errOut.String())
	}
	size := w * h
	if out.Len() != n*size {
		t.Fatalf("decoded %d bytes, want %d frames of %dx%d", out.Len(), n, w, h)
	}
	got := make([][]byte, n)
	for i := range got {
		got[i] = out.Bytes()[i*size : (i+1)*size]
	}
	return got
}

// TestDecodeLiveClock: without an epoch the first frames carry no stamp,
// then every frame carries the wall clock latched at the earliest reading
// of latchFrames frames, advancing with the frames after that. (The CLI
// reads faster than real time, so later readings are earlier against the
// frames; paced, as Prism reads it, they are not.)
func TestDecodeLiveClock(t *testing.T) {
	graph, err := Video(640, 360, 30, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := frames(t, graph, 640, 360, latchAt+latchFrames+20)
	end := time.Now()
	var last uint16
	for i, f := range got {
		ms, ok := Decode(f, 640, 360, 640)
		switch {
		case i < latchAt:
			if ok {
				t.Errorf("frame %d decodes (%d) before the clock is latched", i, ms)
			}
		case !ok:
			t.Errorf("frame %d: no stamp", i)
		case i == latchAt:
			// Latched between start and end, plus the one frame of lead.
			if d := Since(ms, start); d > 0 || d < -(end.Sub(start)+100*time.Millisecond) {
				t.Errorf("frame %d stamped %d, %v from the start of the run (which took %v)", i, ms, d, end.Sub(start))
			}
		case i <= latchAt+latchFrames:
			// The offset only moves down: a stamp is at most a frame after
			// the one before it.
			if d := int16(ms - last); d > 34 {
				t.Errorf("frame %d: %d, %d ms after frame %d's %d", i, ms, d, i-1, last)
			}
		default:
			// Frame i's PTS in ms (settb=1/1000 rounds), so the stamps
			// advance exactly with it.
			pts := func(n int) uint16 { return uint16((n*1000 + 15) / 30) }
			if wantMS := last + pts(i) - pts(i-1); ms != wantMS {
				t.Errorf("frame %d: %d, want %d", i, ms, wantMS)
			}
		}
		last = ms
	}
}

// TestNoStampOnOtherSources: a plain test picture, and a blank one, read as
// no stamp.
func TestNoStampOnOtherSources(t *testing.T) {
	for _, g := range []string{"testsrc2=size=640x360:rate=30", "color=c=black:size=640x360:rate=30", "color=c=white:size=640x360:rate=30"} {
		for i, f := range frames(t, g, 640, 360, 10) {
			if ms, ok := Decode(f, 640, 360, 640); ok {
				t.Errorf("%s frame %d: decoded %d", g, i, ms)
			}
		}
	}
}

func TestVideoRefusesOddSizes(t *testing.T) {
	for _, s := range [][3]int{{1000, 720, 30}, {1280, 721, 30}, {1280, 720, 0}} {
		if _, err := Video(s[0], s[1], s[2], Options{}); err == nil || !strings.Contains(err.Error(), "stamp:") {
			t.Errorf("%v: %v", s, err)
		}
	}
}

func TestSince(t *testing.T) {
	at := time.UnixMilli(1_796_000_000_000)
	for _, c := range []struct {
		back time.Duration
	}{{0}, {850 * time.Millisecond}, {-20 * time.Millisecond}, {30 * time.Second}, {-30 * time.Second}} {
		ms := uint16(at.Add(-c.back).UnixMilli() % modulo)
		if got := Since(ms, at); got != c.back {
			t.Errorf("%v back: Since %v", c.back, got)
		}
	}
}
