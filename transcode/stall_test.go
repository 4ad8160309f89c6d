package transcode

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
)

const stallLadder = `name: stall
gop: 1s
rungs:
  - {name: a, height: 180, bitrate: 200k, preset: ultrafast}
  - {name: b, height: 90, bitrate: 100k, preset: ultrafast}
audio:
  aac: {bitrate: 96k}
  opus: {bitrate: 64k}
`

// adtsFrames splits an ADTS stream into raw AAC frames and returns the
// AudioSpecificConfig its first header describes.
func adtsFrames(t *testing.T, b []byte) (frames [][]byte, asc []byte) {
	t.Helper()
	for len(b) >= 7 {
		if b[0] != 0xff || b[1]&0xf0 != 0xf0 {
			t.Fatal("not an ADTS header")
		}
		hdr := 7
		if b[1]&1 == 0 {
			hdr = 9 // with a CRC
		}
		n := int(b[3]&3)<<11 | int(b[4])<<3 | int(b[5])>>5
		if asc == nil {
			obj, freq, ch := int(b[2]>>6)+1, int(b[2]>>2)&0xf, int(b[2]&1)<<2|int(b[3]>>6)
			v := obj<<11 | freq<<7 | ch<<3
			asc = []byte{byte(v >> 8), byte(v)}
		}
		frames = append(frames, b[hdr:n])
		b = b[n:]
	}
	return frames, asc
}

// isIDR reports whether an Annex-B access unit holds an IDR slice.
func isIDR(au []byte) bool {
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 && au[i+3]&0x1f == 5 {
			return true
		}
	}
	return false
}

// stallSource is a pushed publisher's media: 25 fps H.264 that turns from
// black to white, and AAC that turns from silence to a tone, at event
// seconds of its own clock.
type stallSource struct {
	video, audio [][]byte
	asc          []byte
	idr          []bool
}

func newStallSource(t *testing.T, dir string, event, resume float64) *stallSource {
	es, adts := filepath.Join(dir, "v.h264"), filepath.Join(dir, "a.aac")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", fmt.Sprintf("color=c=white:s=320x180:r=25,tpad=start_duration=%g:color=black", event),
		"-t", "9", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "0", "-force_key_frames", fmt.Sprint(resume),
		"-bsf:v", "h264_metadata=aud=insert", "-f", "h264", es)
	testutil.FFmpeg(t, "-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=440:sample_rate=48000:samples_per_frame=480,volume=volume='if(gte(t,%g),4,0)':eval=frame", event),
		"-t", "9", "-c:a", "aac", "-b:a", "96k", "-f", "adts", adts)
	v, err := os.ReadFile(es)
	if err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(adts)
	if err != nil {
		t.Fatal(err)
	}
	s := &stallSource{video: splitAnnexB(v)}
	s.audio, s.asc = adtsFrames(t, a)
	for _, au := range s.video {
		s.idr = append(s.idr, isIDR(au))
	}
	return s
}

type stallRun struct {
	job                *Transcoder
	out                map[int][]*pipeline.Packet
	lastBefore, resume time.Time // publish times of the last frame before the stall, the first after
}

// run publishes the source in real time, stopping at stallAt seconds of
// media. ownClock: the source's clock goes on (what it sends resumes at
// resumeAt, the media in between is lost); else it stood still (it
// resumes at stallAt, resumeAt-stallAt seconds later).
func (s *stallSource) run(t *testing.T, stallAt, resumeAt float64, ownClock bool) stallRun {
	t.Helper()
	src := fake.NewSource(
		pipeline.Track{Name: "video", Kind: pipeline.KindVideo, Codec: pipeline.CodecH264, ClockRate: pipeline.VideoClockRate,
			Width: 320, Height: 180, FPS: 25},
		pipeline.Track{ID: 1, Name: "audio", Kind: pipeline.KindAudio, Codec: pipeline.CodecAAC, ClockRate: 48000,
			SampleRate: 48000, Channels: 1, Extradata: s.asc})
	type item struct {
		p     *pipeline.Packet
		media float64
	}
	var items []item
	for i, au := range s.video {
		ts := int64(i) * 3600
		items = append(items, item{&pipeline.Packet{Track: 0, Data: au, PTS: ts, DTS: ts, Keyframe: s.idr[i]}, float64(i) / 25})
	}
	for j, fr := range s.audio {
		ts := int64(j-1) * 1024 // the first frame is the encoder's priming
		items = append(items, item{&pipeline.Packet{Track: 1, Data: fr, PTS: ts, DTS: ts, Duration: 1024}, float64(ts) / 48000})
	}
	slices.SortStableFunc(items, func(a, b item) int {
		switch {
		case a.media < b.media:
			return -1
		case a.media > b.media:
			return 1
		}
		return 0
	})
	var r stallRun
	fed := make(chan struct{})
	go func() { // owned here: waited for below
		defer close(fed)
		defer src.Close()
		for src.Readers() == 0 { // the transcoder subscribes while it starts
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		for _, it := range items {
			wall := it.media
			switch {
			case it.media < stallAt:
			case ownClock && it.media < resumeAt:
				continue // lost while the source was away
			case !ownClock:
				wall += resumeAt - stallAt
			}
			if d := time.Until(start.Add(time.Duration(wall * float64(time.Second)))); d > 0 {
				time.Sleep(d) // a live publisher's pace
			}
			if it.p.Track == 0 {
				if it.media < stallAt {
					r.lastBefore = time.Now()
				} else if r.resume.IsZero() {
					r.resume = time.Now()
				}
			}
			it.p.Ingest = time.Now() // as an ingest session stamps it
			src.Publish(it.p)
		}
	}()
	job, err := Start(context.Background(), Options{Input: "ingest://stall", Source: src, Ladder: mustLadder(t, stallLadder), CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.job, r.out = job, map[int][]*pipeline.Packet{}
	rd := job.Subscribe(pipeline.Lossless())
	for {
		p, err := rd.Read(context.Background())
		if err != nil {
			break
		}
		r.out[p.Track] = append(r.out[p.Track], p)
	}
	<-fed
	if err := job.Wait(); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkStall checks what every stall must give: video at the source's
// frame interval throughout, audio without a hole, an IDR on every rung at
// the first resumed frame (near wantResume s), the picture and tone events
// together (A/V locked) near wantEvent s of output time.
func checkStall(t *testing.T, r stallRun, wantResume, wantEvent, tol float64) {
	t.Helper()
	var video []pipeline.Track
	var aac pipeline.Track
	for _, tr := range r.job.Tracks() {
		switch tr.Codec {
		case pipeline.CodecH264:
			video = append(video, tr)
		case pipeline.CodecAAC:
			aac = tr
		}
	}
	for _, tr := range append(video, aac) {
		pkts := r.out[tr.ID]
		step := int64(3600)
		if tr.Kind == pipeline.KindAudio {
			step = 1024
		}
		if len(pkts) < 100 {
			t.Fatalf("%s: %d packets", tr.Name, len(pkts))
		}
		for i := 1; i < len(pkts); i++ {
			if d := pkts[i].PTS - pkts[i-1].PTS; d*2 < step || d*2 > 3*step {
				t.Errorf("%s: PTS %d after %d: a step of %d, the source's is %d", tr.Name, pkts[i].PTS, pkts[i-1].PTS, d, step)
				break
			}
		}
	}
	// The first resumed frame is a forced point of the keyframe clock
	// (nothing else forces IDRs here); every rung has its IDR there.
	var resume int64 = -1
	for _, f := range r.job.clock.forced {
		if f != 0 {
			resume = f
		}
	}
	if resume < 0 {
		t.Fatal("no IDR was forced at the resumed frame")
	}
	t.Logf("resumed at output %.3f s", float64(resume)/90000)
	if got := float64(resume) / 90000; math.Abs(got-wantResume) > tol {
		t.Errorf("resumed at output %.3f s, want %.3f ± %.2f s (the real gap)", got, wantResume, tol)
	}
	for _, tr := range video {
		i := slices.IndexFunc(r.out[tr.ID], func(p *pipeline.Packet) bool { return p.PTS >= resume })
		if i < 0 || r.out[tr.ID][i].PTS != resume || !r.out[tr.ID][i].Keyframe {
			t.Errorf("%s: no IDR at the resumed frame %d", tr.Name, resume)
		}
	}
	vs, as := videoEvents(t, video[0], r.out[video[0].ID]), audioEvents(t, aac, r.out[aac.ID])
	if len(vs) != 1 || len(as) != 1 {
		t.Fatalf("events: video %v, audio %v; want one each", vs, as)
	}
	t.Logf("events at output %.3f s (video), %.3f s (audio)", vs[0], as[0])
	if math.Abs(as[0]-vs[0]) > 1024.0/48000 {
		t.Errorf("A/V offset %+.4f s after the stall, want 0 within an audio frame", as[0]-vs[0])
	}
	if math.Abs(vs[0]-wantEvent) > tol {
		t.Errorf("event at output %.3f s, want %.3f ± %.2f s", vs[0], wantEvent, tol)
	}
	st := r.job.Stats()
	for _, s := range st.Stages {
		if s.Name == "video-fill" || s.Name == "audio-fill" {
			t.Logf("%s: %d frames filled", s.Name, s.Frames)
		}
	}
}

// TestLiveStallOwnClock: a pushed source stalls 3.4 s and comes back on
// its own clock (what a publisher that lost its link sends, and what the
// relay hands over after a publisher change): the outputs were filled
// through the stall and the source continues where real time is.
func TestLiveStallOwnClock(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	defer testutil.CheckGoroutines(t)()
	const stallAt, resumeAt, event = 3.0, 6.4, 7.0
	s := newStallSource(t, t.TempDir(), event, resumeAt)
	r := s.run(t, stallAt, resumeAt, true)
	// The feed's own gap, for the log: the output follows the source's
	// clock here, which the feed paces by the wall clock.
	t.Logf("the feed was away %.3f s (its clock: %.3f s)", r.resume.Sub(r.lastBefore).Seconds(), resumeAt-stallAt+0.04)
	checkStall(t, r, resumeAt, event, 0.045)
}

// TestLiveStallPausedClock: a source whose clock stood still for 3 s (a
// paused pipe, an encoder that froze) is re-anchored after the filler: the
// output advances by the real gap, one shift for video and audio.
func TestLiveStallPausedClock(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	defer testutil.CheckGoroutines(t)()
	const stallAt, pause, event = 3.0, 3.0, 5.0
	s := newStallSource(t, t.TempDir(), event, stallAt)
	r := s.run(t, stallAt, stallAt+pause, false)
	// The first frames back were covered by the filler (a backlog would be
	// too); after stallCatchUp of them the input moves to real time.
	resume := stallAt + pause + stallCatchUp.Seconds()
	checkStall(t, r, resume, event+pause, 0.12)
}
