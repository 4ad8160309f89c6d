package hls

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/outputs/hls/hlscheck"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
)

// eventJob is a real job that also carries timed events, as a followed
// stream does. The fan-out is a named field: its Subscribe would hide the
// job's.
type eventJob struct {
	*transcode.Transcoder
	fan *pipeline.EventFanout
}

func (j *eventJob) SubscribeEvents() *pipeline.EventReader { return j.fan.Subscribe() }
func (j *eventJob) ActiveEvents() []pipeline.Event         { return j.fan.ActiveEvents() }

// frameLog keeps the video frames of one rung as the source emitted them.
type frameLog struct {
	mu     sync.Mutex
	frames []*pipeline.Packet
}

func (l *frameLog) run(ctx context.Context, r *pipeline.Reader) {
	for {
		p, err := r.Read(ctx)
		if err != nil {
			return
		}
		l.mu.Lock()
		l.frames = append(l.frames, p)
		l.mu.Unlock()
	}
}

// latest is a frame from the last second that is not an IDR (an event on
// a frame inside a segment tests the mapping more than one on its start).
func (l *frameLog) latest(t *testing.T) *pipeline.Packet {
	t.Helper()
	var p *pipeline.Packet
	testutil.Eventually(t, 10*time.Second, "a video frame", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i := len(l.frames) - 1; i >= 0 && i >= len(l.frames)-10; i-- {
			if !l.frames[i].Keyframe {
				p = l.frames[i]
				return true
			}
		}
		return false
	})
	return p
}

// framePDT is the PROGRAM-DATE-TIME of the frame at pts by the playlist:
// that of the segment containing it plus (pts - the segment's start). The
// segment's first frame is the IDR whose Ingest is nearest its PDT (PDT
// follows Ingest within milliseconds; IDRs are a GOP apart).
func (l *frameLog) framePDT(pl *playlist.Media, pts int64) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range pl.Segments {
		if s.DateTime == nil || s.Gap {
			continue
		}
		var key *pipeline.Packet
		for _, p := range l.frames {
			if p.Keyframe && (key == nil || p.Ingest.Sub(*s.DateTime).Abs() < key.Ingest.Sub(*s.DateTime).Abs()) {
				key = p
			}
		}
		if key == nil || key.Ingest.Sub(*s.DateTime).Abs() > 300*time.Millisecond {
			continue
		}
		if key.PTS <= pts && pts < key.PTS+durationTicks(s.Duration) {
			return s.DateTime.Add(ticksDuration(pts - key.PTS)), true
		}
	}
	return time.Time{}, false
}

// TestDateRangeOnFramePDT: events bound to real frames of a real job appear
// as EXT-X-DATERANGE on every rung's playlist and the audio's, START-DATE
// the PROGRAM-DATE-TIME of their frame by the segments' own PDT; an event
// published before the HLS stream started is listed from ActiveEvents;
// SCTE35 attributes come out as hexadecimal; hostile characters do not
// break the tag.
func TestDateRangeOnFramePDT(t *testing.T) {
	job := startJob(t, "")
	src := &eventJob{Transcoder: job, fan: &pipeline.EventFanout{}}
	defer src.fan.Close()
	var video pipeline.Track
	for _, tr := range job.Tracks() {
		if tr.Kind == pipeline.KindVideo && tr.Name == "360p" {
			video = tr
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	frames := &frameLog{}
	reader := job.Subscribe(pipeline.WithTracks(video.ID), pipeline.WithName("test frames"))
	defer reader.Close()
	go frames.run(ctx, reader)

	// Before the HLS stream exists: only ActiveEvents can tell it.
	early := frames.latest(t)
	src.fan.Publish(&pipeline.Event{ID: "early", Class: "score", Data: json.RawMessage(`{"home":1}`), PTS: early.PTS})

	f := &fixture{t: t, job: job, reg: &pipeline.Registry{}}
	f.srv = &Server{Streams: f.reg, Config: Config{}}
	if err := f.srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Add(testStream, src); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hls/", f.srv)
	f.http = httptest.NewServer(mux)
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	f.base = f.http.URL + "/hls/" + testStream + "/"
	defer f.close()

	mv := f.index()
	var uris []string
	var rung360 string
	for _, v := range mv.Variants {
		uris = append(uris, v.URI)
		if strings.Contains(v.URI, "360p/") {
			rung360 = v.URI
		}
	}
	for _, r := range mv.Renditions {
		if r.URI != nil {
			uris = append(uris, *r.URI)
		}
	}
	f.waitSegments(uris, 2, 30*time.Second)

	bid := frames.latest(t)
	src.fan.Publish(&pipeline.Event{ID: "bid-1", Class: "bid", Data: json.RawMessage(`{"lot":7,"price":120}`), PTS: bid.PTS})
	src.fan.Publish(&pipeline.Event{ID: "ad:1", Duration: 30, PTS: bid.PTS + 3000, SCTE35: &pipeline.SCTE35{Out: "0xFC302000", Cmd: "0xfc30"}})
	// Not what pipeline lets through; the playlist must survive it anyway.
	src.fan.Publish(&pipeline.Event{ID: "odd\"\n#EXTINF:1,", ContentType: "text/\"plain\"\r\nX", Binary: []byte{0, 0xff, '"', '\n'}, PTS: bid.PTS})

	// Wait for the segment holding the bid's frame on the 360p playlist.
	var want time.Time
	testutil.Eventually(t, 20*time.Second, "the bid's frame in a complete segment", func() bool {
		var ok bool
		want, ok = frames.framePDT(f.media(rung360), bid.PTS)
		return ok
	})

	check := hlscheck.New(f.client)
	for _, u := range uris {
		body := string(f.mustGet(u))
		if err := check.Media(ctx, f.base+u, false); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"early", "bid-1", "ad:1"} {
			if !strings.Contains(body, `#EXT-X-DATERANGE:ID="`+id+`"`) {
				t.Errorf("%s: no EXT-X-DATERANGE for %s:\n%s", u, id, body)
			}
		}
		if !strings.Contains(body, "\n"+`#EXT-X-DATERANGE:ID="odd__#EXTINF:1,",START-DATE=`) ||
			!strings.Contains(body, `X-CONTENT-TYPE="text/_plain___X"`) {
			t.Errorf("%s: the hostile event is not quoted safely:\n%s", u, body)
		}
		// Tags before the first segment, as the spec has them.
		if strings.Index(body, "#EXT-X-DATERANGE") > strings.Index(body, "#EXTINF") {
			t.Errorf("%s: EXT-X-DATERANGE after a segment:\n%s", u, body)
		}
	}
	if p := check.Problems(); len(p) > 0 {
		t.Errorf("hlscheck: %v", p)
	}
	drs := check.DateRanges()
	got := drs["bid-1"]
	off := got.Start.Sub(want)
	t.Logf("bid-1 START-DATE %v, its frame's PDT by the 360p playlist %v: %v off (%.2f frames)", got.Start, want, off, float64(off)/float64(time.Second/30))
	if off.Abs() > time.Second/30 {
		t.Errorf("bid-1 START-DATE %v is %v off its frame's PDT %v, want within a frame", got.Start, off, want)
	}
	if a := got.Attrs; a["CLASS"] != "bid" || a["X-PTS"] != strconv.FormatInt(bid.PTS, 10) ||
		a["X-DATA"] != base64.StdEncoding.EncodeToString([]byte(`{"lot":7,"price":120}`)) {
		t.Errorf("bid-1 attributes %v", a)
	}
	ad := drs["ad:1"]
	if a := ad.Attrs; a["SCTE35-OUT"] != "0xFC302000" || a["SCTE35-CMD"] != "0xfc30" || a["DURATION"] != "30.000" {
		t.Errorf("ad:1 attributes %v", a)
	}
	if d := ad.Start.Sub(got.Start); (d - time.Second/30).Abs() > time.Millisecond {
		t.Errorf("ad:1 a frame after bid-1 starts %v after it", d)
	}
	if e, ok := drs["early"]; !ok || e.Start.After(got.Start) {
		t.Errorf("early (seeded from ActiveEvents): %+v", e)
	} else {
		t.Logf("early START-DATE %v, %v before bid-1 (PTS %d ticks before)", e.Start, got.Start.Sub(e.Start), bid.PTS-early.PTS)
	}
}
