package transcode

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

const syncLadder = `name: sync
gop: 1s
rungs:
  - {name: a, height: 180, bitrate: 200k, preset: ultrafast}
audio:
  aac: {bitrate: 96k}
  opus: {bitrate: 64k}
`

// eventPiece writes an MPEG-TS piece of dur seconds whose picture turns
// from black to white, and whose audio from silence to a tone, at event
// seconds of its own clock: the audio's event skew seconds after the
// video's (negative: before). Every piece restarts its timestamps.
func eventPiece(t *testing.T, path string, event, skew, dur float64) {
	t.Helper()
	// (This FFmpeg has neither geq nor aevalsrc: black frames padded in
	// front of a white source, a tone muted until the event, 10 ms frames.)
	video := []string{"-f", "lavfi", "-i", fmt.Sprintf("color=c=white:s=320x180:r=30,tpad=start_duration=%g:color=black", event)}
	audio := []string{"-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=440:sample_rate=48000:samples_per_frame=480,volume=volume='if(gte(t,%g),4,0)':eval=frame", event)}
	// -itsoffset delays the next input: it moves one stream's event later.
	if skew > 0 {
		audio = append([]string{"-itsoffset", fmt.Sprint(skew)}, audio...)
	} else if skew < 0 {
		video = append([]string{"-itsoffset", fmt.Sprint(-skew)}, video...)
	}
	args := append(append(video, audio...), "-t", fmt.Sprint(dur), "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-bf", "0",
		"-c:a", "aac", "-b:a", "96k", "-f", "mpegts", path)
	testutil.FFmpeg(t, args...)
}

// decodePackets decodes one output track's packets (test-side, with the
// same FFmpeg) and hands each frame to fn.
func decodePackets(t *testing.T, tr pipeline.Track, pkts []*pipeline.Packet, fn func(f *astiav.Frame)) {
	t.Helper()
	id := codecIDs[tr.Codec]
	cc := astiav.AllocCodecContext(astiav.FindDecoder(id))
	defer cc.Free()
	tb := astiav.NewRational(1, tr.ClockRate)
	cc.SetTimeBase(tb)
	if tr.Kind == pipeline.KindAudio {
		cc.SetSampleRate(tr.SampleRate)
		cc.SetChannelLayout(astiav.ChannelLayoutStereo)
		if len(tr.Extradata) > 0 {
			if err := cc.SetExtraData(tr.Extradata); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cc.Open(astiav.FindDecoder(id), nil); err != nil {
		t.Fatal(err)
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	f := astiav.AllocFrame()
	defer f.Free()
	receive := func() {
		for cc.ReceiveFrame(f) == nil {
			fn(f)
			f.Unref()
		}
	}
	for _, p := range pkts {
		buf := make([]byte, len(p.Data)+inputPadding)
		copy(buf, p.Data)
		if err := pkt.FromData(buf); err != nil {
			t.Fatal(err)
		}
		pkt.SetSize(len(p.Data))
		pkt.SetPts(p.PTS)
		pkt.SetDts(p.DTS)
		_ = cc.SendPacket(pkt)
		pkt.Unref()
		receive()
	}
	_ = cc.SendPacket(nil)
	receive()
}

// videoEvents returns the output times (s) where the picture turns white.
func videoEvents(t *testing.T, tr pipeline.Track, pkts []*pipeline.Packet) []float64 {
	var events []float64
	bright := false
	decodePackets(t, tr, pkts, func(f *astiav.Frame) {
		b, err := f.Data().Bytes(1)
		if err != nil {
			t.Fatal(err)
		}
		n := f.Width() * f.Height()
		sum := 0
		for _, y := range b[:n] {
			sum += int(y)
		}
		now := sum/n > 128
		if now && !bright {
			events = append(events, float64(f.Pts())/float64(tr.ClockRate))
		}
		bright = now
	})
	return events
}

// audioEvents returns the output times (s) where the tone starts: the
// first sample above half its amplitude after 100 ms of silence.
func audioEvents(t *testing.T, tr pipeline.Track, pkts []*pipeline.Packet) []float64 {
	var events []float64
	quiet := 0 // samples since the last loud one
	decodePackets(t, tr, pkts, func(f *astiav.Frame) {
		if f.SampleFormat() != astiav.SampleFormatFltp {
			t.Fatalf("decoded audio is %s", f.SampleFormat().Name())
		}
		size, err := f.SamplesBufferSize(1)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, size)
		if _, err := f.SamplesCopyToBuffer(buf, 1); err != nil {
			t.Fatal(err)
		}
		for i := range f.NbSamples() { // the first plane: the left channel
			v := math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
			if math.Abs(float64(v)) < 0.25 {
				quiet++
				continue
			}
			if quiet > 4800 {
				events = append(events, float64(f.Pts()+int64(i))/float64(tr.ClockRate))
			}
			quiet = 0
		}
	})
	return events
}

// TestAVOffsetAcrossSourceResets is acceptance item 2's A/V part: an
// input whose timestamps restart five times (six MPEG-TS pieces, each from
// its own zero, the audio skewed differently each time, so the streams
// meet each reset at different moments) keeps every piece's A/V offset
// within one audio frame of the source's.
func TestAVOffsetAcrossSourceResets(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	defer testutil.CheckGoroutines(t)()
	dir := t.TempDir()
	// Video skews are whole frames: FFmpeg puts a 30 fps stream on a 1/30 grid.
	skews := []float64{0, 0.1, -0.1, 0.2, -0.2, 0.05}
	const event, dur = 0.6, 2.0
	var all []byte
	for i, skew := range skews {
		p := filepath.Join(dir, fmt.Sprintf("p%d.ts", i))
		eventPiece(t, p, event, skew, dur)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	src := filepath.Join(dir, "resets.ts")
	if err := os.WriteFile(src, all, 0o644); err != nil {
		t.Fatal(err)
	}
	job, err := Start(context.Background(), Options{Input: src, Ladder: mustLadder(t, syncLadder), CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]*pipeline.Packet{}
	r := job.Subscribe(pipeline.Lossless())
	for {
		p, err := r.Read(context.Background())
		if err != nil {
			break
		}
		out[p.Track] = append(out[p.Track], p)
	}
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	var video, aac pipeline.Track
	for _, tr := range job.Tracks() {
		switch tr.Codec {
		case pipeline.CodecH264:
			video = tr
		case pipeline.CodecAAC:
			aac = tr
		}
	}
	vs, as := videoEvents(t, video, out[video.ID]), audioEvents(t, aac, out[aac.ID])
	if len(vs) != len(skews) || len(as) != len(skews) {
		t.Fatalf("found %d video and %d audio events (%v, %v), want %d of each", len(vs), len(as), vs, as, len(skews))
	}
	frame := 1024.0 / AudioSampleRate
	for i, skew := range skews {
		got := as[i] - vs[i]
		t.Logf("piece %d: video event at %.3f s, audio at %.3f s: offset %+.4f s, source %+.3f s", i, vs[i], as[i], got, skew)
		if math.Abs(got-skew) > frame {
			t.Errorf("piece %d: A/V offset %+.4f s, the source's %+.3f s: more than one audio frame apart", i, got, skew)
		}
		if i > 0 {
			if step := vs[i] - vs[i-1]; step < dur-0.5 || step > dur+0.5 {
				t.Errorf("piece %d starts %.3f s after the one before, want about %.1f s (continuous)", i, step, dur)
			}
		}
	}
}
