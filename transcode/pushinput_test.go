package transcode

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
)

// pushed runs the tiny ladder over src, which a goroutine fills with
// packets (feed), and returns the output packets per track.
func pushed(t *testing.T, src *fake.Source, feed func()) (*Transcoder, map[int][]*pipeline.Packet) {
	t.Helper()
	fed := make(chan struct{})
	go func() { // owned here: waited for below
		defer close(fed)
		for src.Readers() == 0 { // the transcoder subscribes while it starts
			time.Sleep(time.Millisecond)
		}
		feed()
	}()
	job, err := Start(context.Background(), Options{Input: "ingest://test", Source: src, Ladder: mustLadder(t, tinyLadder)})
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
	<-fed
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	return job, out
}

// splitAnnexB cuts an Annex-B stream with access unit delimiters into
// access units.
func splitAnnexB(b []byte) [][]byte {
	aud := []byte{0, 0, 0, 1, 9}
	var aus [][]byte
	for len(b) > 0 {
		next := bytes.Index(b[len(aud):], aud)
		if next < 0 {
			aus = append(aus, b)
			break
		}
		aus = append(aus, b[:next+len(aud)])
		b = b[next+len(aud):]
	}
	return aus
}

// TestPushedElementaryH264: access units with codec parameters, as an RTMP
// or WHIP listener relays them, are decoded without probing: the ladder
// comes out at its sizes, from the first keyframe on, with the frame rate
// measured from the timestamps.
func TestPushedElementaryH264(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	defer testutil.CheckGoroutines(t)()
	dir := t.TempDir()
	es := filepath.Join(dir, "src.h264")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "3", "-c:v", "libx264",
		"-preset", "ultrafast", "-g", "25", "-bf", "0", "-bsf:v", "h264_metadata=aud=insert", "-f", "h264", es)
	data, err := os.ReadFile(es)
	if err != nil {
		t.Fatal(err)
	}
	aus := splitAnnexB(data)
	src := fake.NewSource(pipeline.Track{Name: "video", Kind: pipeline.KindVideo, Codec: pipeline.CodecH264,
		ClockRate: pipeline.VideoClockRate, Width: 640, Height: 360})
	_, out := pushed(t, src, func() {
		// A publisher joined mid-GOP: the input waits for the keyframe.
		for i, au := range aus[5:] {
			ts := int64(1_000_000 + i*3600)
			src.Publish(&pipeline.Packet{Track: 0, Data: au, PTS: ts, DTS: ts, Keyframe: (i+5)%25 == 0})
			time.Sleep(2 * time.Millisecond) // a live publisher's pace, compressed
		}
		src.Close()
	})
	want := len(aus) - 25 // from the second keyframe of the source
	for id, pkts := range out {
		if len(pkts) < want-2 {
			t.Errorf("track %d: %d packets, want about %d", id, len(pkts), want)
		}
		if !pkts[0].Keyframe {
			t.Errorf("track %d starts without a keyframe", id)
		}
		if pkts[0].PTS > 9000 {
			t.Errorf("track %d starts at PTS %d, want near 0 (rebased)", id, pkts[0].PTS)
		}
	}
	if len(out) == 0 {
		t.Fatal("no output")
	}
}

// TestPushedMPEGTS: an SRT publisher's MPEG-TS bytes go through FFmpeg's
// mpegts demuxer over a custom AVIOContext.
func TestPushedMPEGTS(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	defer testutil.CheckGoroutines(t)()
	dir := t.TempDir()
	ts := filepath.Join(dir, "src.ts")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", "-f", "mpegts", ts)
	data, err := os.ReadFile(ts)
	if err != nil {
		t.Fatal(err)
	}
	src := fake.NewSource(pipeline.Track{Name: "mpegts", Kind: pipeline.KindContainer, Codec: pipeline.CodecMPEGTS})
	job, out := pushed(t, src, func() {
		for len(data) > 0 {
			n := min(len(data), 7*188)
			src.Publish(&pipeline.Packet{Track: 0, Data: data[:n]})
			data = data[n:]
			time.Sleep(200 * time.Microsecond)
		}
		src.Close()
	})
	var audio bool
	for _, tr := range job.Tracks() {
		if tr.Kind == pipeline.KindAudio {
			audio = true
		}
		if n := len(out[tr.ID]); n < 30 {
			t.Errorf("track %s: %d packets", tr.Name, n)
		}
	}
	if !audio {
		t.Error("no audio track: the TS's AAC was not found")
	}
}
