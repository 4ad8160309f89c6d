package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/relay"
)

// TestEventsInRTMPStream: an RTMP publisher (gortmplib's client, pushing
// x264 frames of a lavfi source in real time) sends onCuePoint data
// messages right after given frames. Each comes out stamped on
// events.<stream>.timed with origin rtmp, its object as data, bound to the
// output frame of the source frame it followed (±1 frame), as a data
// pipeline client following the stream's media over NATS sees that frame.
func TestEventsInRTMPStream(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the transcoder and NATS")
	}
	const token = "pipeline-token-0123456789"
	natsAddr := freePort(t)
	clients := fmt.Sprintf(`nats:
  listen: %s
  clients:
    - {name: pipeline, token: %s, publish: ["media.>", "events.*"], subscribe: ["media.>", "events.>"]}
`, natsAddr, token)
	n, rtmpAddr, _ := ingestNode(t, "a", "", clients)

	// Real frames: x264, no B-frames, an access unit delimiter before each.
	const fps, seconds = 30, 20
	dir := t.TempDir()
	es := filepath.Join(dir, "src.h264")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=320x180:rate=%d", fps), "-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-bf", "0", "-bsf:v", "h264_metadata=aud=insert", "-f", "h264", es)
	raw, err := os.ReadFile(es)
	if err != nil {
		t.Fatal(err)
	}
	nalus := splitAnnexB(raw)
	var aus [][][]byte
	var sps, pps []byte
	for _, nalu := range nalus {
		switch h264.NALUType(nalu[0] & 0x1f) {
		case h264.NALUTypeAccessUnitDelimiter:
			aus = append(aus, nil)
			continue
		case h264.NALUTypeSPS:
			sps = nalu
		case h264.NALUTypePPS:
			pps = nalu
		}
		if len(aus) > 0 {
			aus[len(aus)-1] = append(aus[len(aus)-1], nalu)
		}
	}
	if len(aus) != fps*seconds || sps == nil || pps == nil {
		t.Fatalf("%d access units (want %d), SPS %v, PPS %v", len(aus), fps*seconds, sps != nil, pps != nil)
	}

	nc, err := nats.Connect("nats://"+natsAddr, nats.Token(token), nats.CustomInboxPrefix(bus.ClientInboxPrefix("pipeline")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	timed, err := nc.SubscribeSync(relay.TimedSubject("cam"))
	if err != nil || nc.Flush() != nil {
		t.Fatal(err)
	}

	u, err := url.Parse("rtmp://" + rtmpAddr + "/live#cam?key=" + publishKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &gortmplib.Client{URL: u, Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = c.Initialize(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	track := &gortmplib.Track{Codec: &codecs.H264{SPS: sps, PPS: pps}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{track}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}

	// Cue points after these source frames, counted from the frame
	// during which the follower below first saw the stream's output (the
	// job's worker starts on the publisher's tracks; an event before its
	// first frame is refused).
	cueAfter := map[int]string{30: "lot-1", 61: "lot-2", 100: "lot-3", 151: "lot-4"}
	cues := map[int]string{}
	sentAt := map[string]time.Time{} // when each cue's frame went out

	// The stream's frames as a follower sees them: PTS and ingest time.
	type seen struct {
		pts    int64
		ingest time.Time
	}
	var mu sync.Mutex
	var frames []seen
	followCtx, stopFollow := context.WithCancel(context.Background())
	defer stopFollow()
	var followers sync.WaitGroup
	defer followers.Wait()
	followers.Go(func() { // until followCtx ends
		var st *relay.Stream
		for st == nil {
			select {
			case <-followCtx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			st, _ = relay.Follow(followCtx, nc, "cam")
		}
		defer func() { _ = st.Close() }()
		video := -1
		for _, tr := range st.Tracks() {
			if tr.Kind == pipeline.KindVideo {
				video = tr.ID
				break
			}
		}
		r := st.Subscribe(pipeline.WithTracks(video), pipeline.WithBufferSize(4096))
		defer r.Close()
		for {
			p, err := r.Read(followCtx)
			if err != nil {
				return
			}
			mu.Lock()
			frames = append(frames, seen{p.PTS, p.Ingest})
			mu.Unlock()
		}
	})

	start := time.Now()
	last := -1 // the last cue's frame, once known
	for i, au := range aus {
		if last >= 0 && i > last+fps {
			break // a second after the last cue: its frame is out
		}
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / fps)))
		ts := time.Duration(i) * time.Second / fps
		sent := time.Now()
		if err := w.WriteH264(track, ts, ts, au); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		mu.Lock()
		if len(cues) == 0 && len(frames) > 0 {
			for k, id := range cueAfter {
				cues[i+k] = id
				last = max(last, i+k)
			}
		}
		mu.Unlock()
		if id, ok := cues[i]; ok {
			sentAt[id] = sent
			if err := c.Write(&message.DataAMF0{ChunkStreamID: 4, MessageStreamID: 0x1000000, Payload: []any{"onCuePoint", amf0.Object{
				{Key: "name", Value: id}, {Key: "type", Value: "event"}, {Key: "parameters", Value: amf0.Object{{Key: "frame", Value: float64(i)}}},
			}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(sentAt) != len(cueAfter) {
		t.Fatalf("the follower saw the stream's output too late: %d of %d cue points sent in %d s of media; node log:\n%s",
			len(sentAt), len(cueAfter), seconds, n.logExcerpt())
	}

	got := map[string]pipeline.Event{}
	for len(got) < len(cues) {
		m, err := timed.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("%d of %d cue points on %s: %v; node log:\n%s", len(got), len(cues), relay.TimedSubject("cam"), err, n.logExcerpt())
		}
		var e pipeline.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("timed event %s: %v", m.Data, err)
		}
		var d struct {
			Name string `json:"name"`
		}
		if e.Class == "onCuePoint" && json.Unmarshal(e.Data, &d) == nil {
			got[d.Name] = e
		}
	}
	time.Sleep(500 * time.Millisecond) // the follower reads the last frames
	stopFollow()
	followers.Wait()

	// Each cue's frame is the output frame whose ingest time is that of
	// the source frame it followed (the ingest node stamps both).
	mu.Lock()
	defer mu.Unlock()
	if len(frames) < fps*3 {
		t.Fatalf("the follower saw %d frames", len(frames))
	}
	var errs []string
	for i, id := range []string{"lot-1", "lot-2", "lot-3", "lot-4"} {
		e := got[id]
		if e.Origin != "rtmp" {
			t.Errorf("%s: origin %q, want rtmp", id, e.Origin)
		}
		var d struct {
			Parameters struct {
				Frame float64 `json:"frame"`
			} `json:"parameters"`
		}
		if json.Unmarshal(e.Data, &d) != nil || d.Parameters.Frame == 0 {
			t.Errorf("%s: data %s", id, e.Data)
		}
		at := sentAt[id]
		best := frames[0]
		for _, f := range frames {
			if f.ingest.Sub(at).Abs() < best.ingest.Sub(at).Abs() {
				best = f
			}
		}
		if best.ingest.Sub(at).Abs() > time.Second/fps/2 {
			t.Errorf("%s: no output frame ingested with its source frame (nearest %s away)", id, best.ingest.Sub(at))
			continue
		}
		const frameTicks = pipeline.EventClock / fps
		off := float64(e.PTS-best.pts) / frameTicks
		errs = append(errs, fmt.Sprintf("%+.2f", off))
		if off < -1 || off > 1 {
			t.Errorf("%s (cue %d): bound to PTS %d, its frame's is %d: %.2f frames apart", id, i, e.PTS, best.pts, off)
		}
	}
	testutil.Report(t, "RTMP onCuePoint (gortmplib publisher, x264 320x180@30, tiny ladder): %d cue points on %s with origin rtmp; bound frame minus the frame they followed, in frames: %v",
		len(got), relay.TimedSubject("cam"), errs)
}

// splitAnnexB splits an H.264 elementary stream at its start codes.
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] != 0 || b[i+1] != 0 || b[i+2] != 1 {
			continue
		}
		if start >= 0 {
			end := i
			if end > start && b[end-1] == 0 { // a 4-byte start code
				end--
			}
			out = append(out, b[start:end])
		}
		start = i + 3
		i += 2
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}
