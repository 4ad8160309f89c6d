package rtmp

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestEventsInStream: a gortmplib publisher sends onCuePoint and
// onTextData data messages between its frames. Each reaches the session as
// an event of that class, its object as JSON data, bound to its arrival;
// onMetaData and unknown data messages are no events; one nested too deep
// is refused and a flood is cut to the publisher's event rate, while the
// media goes on untouched.
func TestEventsInStream(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	h := newRecorder(t)
	s := startServer(t, h, nil)
	c, err := publishClient(t, s, "cues?key=secret")
	if err != nil {
		t.Fatal(err)
	}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{{Codec: &codecs.H264{SPS: testSPS, PPS: testPPS}}, {Codec: &codecs.MPEG4Audio{Config: testAAC}}}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	data := func(payload ...any) {
		t.Helper()
		if err := c.Write(&message.DataAMF0{ChunkStreamID: 4, MessageStreamID: 0x1000000, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeSynthetic(w, 3); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	data("onCuePoint", amf0.Object{
		{Key: "name", Value: "lot-42"}, {Key: "time", Value: 1.5}, {Key: "type", Value: "event"},
		{Key: "parameters", Value: amf0.Object{{Key: "lot", Value: "42"}, {Key: "reserve", Value: 1200.0}, {Key: "open", Value: true}}},
	})
	data("onTextData", amf0.ECMAArray{{Key: "type", Value: "Text"}, {Key: "text", Value: "Lot 42: opening bid"}})
	data("onFoo", amf0.Object{{Key: "x", Value: 1.0}}) // not an event
	deep := any("leaf")
	for range 20 {
		deep = amf0.Object{{Key: "k", Value: deep}}
	}
	data("onCuePoint", deep) // nested too deep: refused
	after := time.Now()
	if err := writeSynthetic(w, 1); err != nil {
		t.Fatal(err)
	}
	const flood = 200
	for range flood {
		data("onTextData", amf0.Object{{Key: "type", Value: "Text"}, {Key: "text", Value: "spam"}})
	}
	if err := writeSynthetic(w, 1); err != nil {
		t.Fatal(err)
	}
	_ = c.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "deleteStream", CommandID: 4, Arguments: []any{nil, float64(1)}})
	p := h.session(0)
	pkts := p.wait(t)
	if err := p.sess.Err(); err != nil {
		t.Fatalf("session ended with %v", err)
	}
	video := 0
	for _, pk := range pkts {
		if pk.Track == 0 {
			video++
		}
	}
	if video != 150 {
		t.Errorf("%d video frames, want 150: the events disturbed the media", video)
	}

	evs := p.events()
	if len(evs) < 2 {
		t.Fatalf("%d events, want the cue point and the text first: %+v", len(evs), evs)
	}
	want := []struct {
		class string
		data  any
	}{
		{"onCuePoint", map[string]any{"name": "lot-42", "time": 1.5, "type": "event", "parameters": map[string]any{"lot": "42", "reserve": 1200.0, "open": true}}},
		{"onTextData", map[string]any{"type": "Text", "text": "Lot 42: opening bid"}},
	}
	for i, w := range want {
		ev := evs[i]
		var got any
		if err := json.Unmarshal(ev.Data, &got); err != nil {
			t.Fatalf("event %d data %s: %v", i, ev.Data, err)
		}
		if ev.Class != w.class || !reflect.DeepEqual(got, w.data) {
			t.Errorf("event %d: class %q data %s, want %q %v", i, ev.Class, ev.Data, w.class, w.data)
		}
		if ev.At == nil || ev.At.Before(before) || ev.At.After(after.Add(time.Second)) {
			t.Errorf("event %d bound to %v, want its arrival (sent between %v and %v)", i, ev.At, before, after)
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
	}
	spam := len(evs) - 2
	for _, ev := range evs[2:] {
		if ev.Class != "onTextData" {
			t.Errorf("after the first two: a %s event (the deep one or onFoo got through)", ev.Class)
		}
	}
	if spam < dataEventBurst-5 || spam > dataEventBurst+dataEventRate {
		t.Errorf("flood of %d: %d passed, want about the burst of %d", flood, spam, dataEventBurst)
	}
	if n := p.sess.Counters().Events; n != uint64(len(evs)) {
		t.Errorf("session counted %d events, %d handed on", n, len(evs))
	}
	t.Logf("events in the stream: cue point and text in, as sent; the deep one refused; flood of %d: %d passed (burst %d, %d/s)",
		flood, spam, dataEventBurst, dataEventRate)
}
