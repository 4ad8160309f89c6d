package hls

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Timed events become EXT-X-DATERANGE tags (RFC 8216bis 4.4.5.1) in every
// media playlist. START-DATE is the PROGRAM-DATE-TIME of the event's frame
// on the very mapping the segments' EXT-X-PROGRAM-DATE-TIME use: the PDT of
// the segment start at or before the frame plus the media time since (the
// feeder's pdt moves its anchor only at segment starts). A player comparing
// a frame's PDT with START-DATE thus sees the event on its frame.

const (
	// maxDateRanges bounds the events kept for the playlists.
	maxDateRanges = 256
	// maxPDTMarks bounds the segment starts kept for the mapping: minutes of
	// segments, more than any playlist window.
	maxPDTMarks = 1024
)

// pdtMark is a segment start: its source PTS and its PROGRAM-DATE-TIME.
type pdtMark struct {
	src int64
	pdt time.Time
}

// eventLog holds a stream's events and the PTS → PDT mapping of its
// segments. Feeders write marks; the stream's goroutine adds events;
// playlist requests read.
type eventLog struct {
	mu     sync.Mutex
	events []pipeline.Event
	// start is each event's START-DATE once known: fixed then, so that a
	// tag never changes between reloads (the spec forbids it).
	start map[string]time.Time
	marks []pdtMark
	// last is the source PTS of the last frame each rung wrote: an event
	// gets its START-DATE once a rung wrote its frame (every segment start
	// before it is then marked).
	last map[*rung]int64
}

// follow adds the source's events until ctx ends; it runs on the stream's
// goroutine, which owns (and here closes) the reader.
func (l *eventLog) follow(ctx context.Context, src pipeline.EventSource, rd *pipeline.EventReader) {
	defer rd.Close()
	for _, e := range src.ActiveEvents() {
		l.add(e)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-rd.C:
			if !ok {
				<-ctx.Done() // the source ended its events; its media may go on
				return
			}
			l.add(*e)
		}
	}
}

func (l *eventLog) add(e pipeline.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = slices.DeleteFunc(l.events, func(o pipeline.Event) bool { return o.ID == e.ID })
	delete(l.start, e.ID) // a new version of the event: a new binding
	l.events = append(l.events, e)
	if n := len(l.events) - maxDateRanges; n > 0 {
		for _, o := range l.events[:n] {
			delete(l.start, o.ID)
		}
		l.events = slices.Delete(l.events, 0, n)
	}
}

// wrote records that rung r wrote the frame at source PTS src with
// PROGRAM-DATE-TIME pdt; segStart says it opened a segment.
func (l *eventLog) wrote(r *rung, src int64, pdt time.Time, segStart bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[*rung]int64{}
	}
	l.last[r] = src
	if !segStart {
		return
	}
	// Every rung opens the same segments with the same PDT: the first
	// rung there marks it.
	for i := len(l.marks) - 1; i >= 0 && i >= len(l.marks)-8; i-- {
		if l.marks[i].src == src {
			return
		}
	}
	l.marks = append(l.marks, pdtMark{src, pdt})
	if n := len(l.marks) - maxPDTMarks; n > 0 {
		l.marks = slices.Delete(l.marks, 0, n)
	}
}

// startOf is the PROGRAM-DATE-TIME of the frame at source PTS pts; false
// while no rung has written it yet (a later segment start could still
// come before it).
func (l *eventLog) startOf(pts int64) (time.Time, bool) {
	written := false
	for _, s := range l.last {
		written = written || s >= pts
	}
	if !written || len(l.marks) == 0 {
		return time.Time{}, false
	}
	// The newest mark at or before pts: after a jump back in the source
	// the newest span's marks come first.
	for i := len(l.marks) - 1; i >= 0; i-- {
		if m := l.marks[i]; m.src <= pts {
			return m.pdt.Add(ticksDuration(pts - m.src)), true
		}
	}
	// Before the first segment (an event a late start was seeded with):
	// the same media-time mapping, backwards.
	m := l.marks[0]
	return m.pdt.Add(-ticksDuration(m.src - pts)), true
}

// dateRange is an event with its START-DATE.
type dateRange struct {
	e     *pipeline.Event
	start time.Time
}

// tags returns the EXT-X-DATERANGE lines for a playlist whose first
// segment starts at first: events still in effect there or later.
func (l *eventLog) tags(first time.Time) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == 0 {
		return nil
	}
	if l.start == nil {
		l.start = map[string]time.Time{}
	}
	drs := make([]dateRange, 0, len(l.events))
	for i := range l.events {
		e := &l.events[i]
		s, ok := l.start[e.ID]
		if !ok {
			if s, ok = l.startOf(e.PTS); !ok {
				continue // its frame is not in any playlist yet
			}
			l.start[e.ID] = s
		}
		drs = append(drs, dateRange{e, s})
	}
	// Sorted by start, then ID: every node lists the same tags alike.
	slices.SortFunc(drs, func(a, b dateRange) int {
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		return strings.Compare(a.e.ID, b.e.ID)
	})
	var out bytes.Buffer
	for i, d := range drs {
		if ended(drs, i, first) {
			continue
		}
		writeDateRange(&out, d)
	}
	return out.Bytes()
}

// ended tells whether drs[i] ended before first: its duration ran out, or,
// without one, a later event of its class replaced it.
func ended(drs []dateRange, i int, first time.Time) bool {
	d := drs[i]
	if d.e.Duration > 0 {
		return d.start.Add(time.Duration(d.e.Duration * float64(time.Second))).Before(first)
	}
	for _, n := range drs[i+1:] {
		if n.e.Class == d.e.Class && n.e.Duration <= 0 {
			return !n.start.After(first)
		}
	}
	return false
}

func writeDateRange(w *bytes.Buffer, d dateRange) {
	e := d.e
	fmt.Fprintf(w, `#EXT-X-DATERANGE:ID=%s`, quoted(e.ID))
	if e.Class != "" {
		fmt.Fprintf(w, `,CLASS=%s`, quoted(e.Class))
	}
	fmt.Fprintf(w, `,START-DATE="%s"`, d.start.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	if e.Duration > 0 {
		w.WriteString(",DURATION=" + strconv.FormatFloat(e.Duration, 'f', 3, 64))
	}
	data := []byte(e.Data)
	if len(e.Binary) > 0 {
		data = e.Binary
	}
	if len(data) > 0 {
		// Base64 has no character a quoted string forbids.
		w.WriteString(`,X-DATA="` + base64.StdEncoding.EncodeToString(data) + `"`)
	}
	if e.ContentType != "" {
		w.WriteString(",X-CONTENT-TYPE=" + quoted(e.ContentType))
	}
	w.WriteString(",X-PTS=" + strconv.FormatInt(e.PTS, 10))
	if s := e.SCTE35; s != nil {
		for _, a := range []struct{ name, v string }{{"SCTE35-CMD", s.Cmd}, {"SCTE35-OUT", s.Out}, {"SCTE35-IN", s.In}} {
			if hexBytes(a.v) {
				w.WriteString("," + a.name + "=0x" + a.v[2:])
			}
		}
	}
	w.WriteByte('\n')
}

// quoted is s as a quoted-string: pipeline validates IDs and classes, but
// a quote, a comma-confused parser or a line break must never get through
// to split the tag or the playlist, so anything outside printable ASCII
// and '"' becomes '_'.
func quoted(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' {
			b[i] = '_'
		}
	}
	return `"` + string(b) + `"`
}

// hexBytes tells whether v is a hexadecimal-sequence (0x...), the only
// form the SCTE35 attributes take.
func hexBytes(v string) bool {
	if len(v) < 4 || len(v)%2 != 0 || (v[:2] != "0x" && v[:2] != "0X") {
		return false
	}
	for _, c := range v[2:] {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// withDateRanges inserts tags before the playlist's first segment (the
// first media segment tag), where media playlist tags belong.
func withDateRanges(body, tags []byte) []byte {
	if len(tags) == 0 {
		return body
	}
	at := -1
	for _, p := range []string{"\n#EXT-X-SKIP", "\n#EXT-X-PROGRAM-DATE-TIME", "\n#EXTINF", "\n#EXT-X-DISCONTINUITY\n", "\n#EXT-X-GAP", "\n#EXT-X-PART:", "\n#EXT-X-BITRATE"} {
		if i := bytes.Index(body, []byte(p)); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at < 0 {
		return body
	}
	at++ // after the newline
	out := make([]byte, 0, len(body)+len(tags))
	out = append(out, body[:at]...)
	out = append(out, tags...)
	return append(out, body[at:]...)
}
