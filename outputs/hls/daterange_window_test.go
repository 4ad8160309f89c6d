package hls

import (
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// TestDateRangeWindow: the tag list keeps events in effect at the window's
// start or after, drops those that ended before it (by duration, or
// replaced by a later one of the class), waits for an event's frame to be
// written, keeps START-DATE fixed once given, and stays bounded.
func TestDateRangeWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	var l eventLog
	r := &rung{}
	for i := range 10 { // 10 one-second segments, source PTS 0..
		l.wrote(r, int64(i)*90000, t0.Add(time.Duration(i)*time.Second), true)
	}
	l.wrote(r, 9*90000+3000*29, t0.Add(9*time.Second+29*time.Second/30), false)
	l.add(pipeline.Event{ID: "short", Duration: 1, PTS: 90000})    // 1 s .. 2 s
	l.add(pipeline.Event{ID: "old", Class: "bid", PTS: 2 * 90000}) // replaced at 3 s
	l.add(pipeline.Event{ID: "new", Class: "bid", PTS: 3*90000 + 4500})
	l.add(pipeline.Event{ID: "ahead", PTS: 11 * 90000}) // not written yet
	tags := string(l.tags(t0.Add(4 * time.Second)))
	if strings.Contains(tags, `"short"`) || strings.Contains(tags, `"old"`) || strings.Contains(tags, `"ahead"`) {
		t.Errorf("ended or unwritten events listed:\n%s", tags)
	}
	if want := `#EXT-X-DATERANGE:ID="new",CLASS="bid",START-DATE="2026-12-03T10:00:03.050Z",X-PTS=274500` + "\n"; tags != want {
		t.Errorf("got\n%swant\n%s", tags, want)
	}
	if tags := string(l.tags(t0.Add(time.Second))); !strings.Contains(tags, `"short"`) || !strings.Contains(tags, `"old"`) {
		t.Errorf("events in effect at the window's start missing:\n%s", tags)
	}
	// A later segment start does not move a START-DATE already given.
	l.wrote(r, 11*90000, t0.Add(11*time.Second+50*time.Millisecond), true)
	if tags := string(l.tags(t0)); !strings.Contains(tags, `ID="new",CLASS="bid",START-DATE="2026-12-03T10:00:03.050Z"`) ||
		!strings.Contains(tags, `ID="ahead",START-DATE="2026-12-03T10:00:11.050Z"`) {
		t.Errorf("after a later segment:\n%s", tags)
	}
	for i := range 2 * maxDateRanges {
		l.add(pipeline.Event{ID: "e" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Duration: 100, PTS: 90000})
	}
	if len(l.events) != maxDateRanges || len(l.start) > maxDateRanges {
		t.Errorf("%d events, %d start dates kept, want at most %d", len(l.events), len(l.start), maxDateRanges)
	}
}
