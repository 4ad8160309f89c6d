package rtmp

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"

	"github.com/prism-streaming/prism/pipeline"
)

// Timed events inside an RTMP stream: AMF0 data messages named onCuePoint
// (cue points: {name, time, type, parameters}) and onTextData ({type:
// "Text", text: …}: what FFmpeg's FLV muxer writes for a text subtitle
// track, and what captioning encoders send). Each becomes a
// pipeline.EventRequest of that class, its data the message's object as
// JSON, bound to the frame live at ingest when it arrived (At): gortmplib
// hands data messages without their timestamp, and a publisher interleaves
// them with the frames of their time, so their arrival is those frames'.
// The stream's publisher stamps them like events from NATS or the API.

// dataEventClasses are the data messages that are events.
var dataEventClasses = map[string]bool{"onCuePoint": true, "onTextData": true}

// A publisher's events are limited apart from its media: a flood of data
// messages is dropped (counted) rather than sent on.
const (
	dataEventRate  = 50 // a second
	dataEventBurst = 50
	// maxAMFDepth bounds nesting: objects inside objects, as sent.
	maxAMFDepth = 16
)

// dataEvent is the event of a data message: ok is false for a message
// that is no event (onMetaData, unknown names); err says why an event
// message was refused.
func dataEvent(payload amf0.Data, at time.Time) (req pipeline.EventRequest, ok bool, err error) {
	if len(payload) == 0 {
		return req, false, nil
	}
	name, _ := payload[0].(string)
	if !dataEventClasses[name] {
		return req, false, nil
	}
	var body any = map[string]any{}
	switch args := payload[1:]; len(args) {
	case 0:
	case 1:
		if body, err = amfJSON(args[0], 0); err != nil {
			return req, true, fmt.Errorf("%w: %s: %w", pipeline.ErrEvent, name, err)
		}
	default: // more than one argument: all of them, in order
		list := make([]any, len(args))
		for i, a := range args {
			if list[i], err = amfJSON(a, 0); err != nil {
				return req, true, fmt.Errorf("%w: %s: %w", pipeline.ErrEvent, name, err)
			}
		}
		body = list
	}
	data, err := json.Marshal(body)
	if err != nil {
		return req, true, fmt.Errorf("%w: %s: %w", pipeline.ErrEvent, name, err)
	}
	// The request around the data must fit the events' size limit too.
	if len(data) > pipeline.MaxEventBytes-256 {
		return req, true, fmt.Errorf("%w: %s: %d bytes of data, at most %d", pipeline.ErrEvent, name, len(data), pipeline.MaxEventBytes-256)
	}
	at = at.UTC()
	req = pipeline.EventRequest{Class: name, Data: data, At: &at}
	return req, true, req.Validate()
}

// amfJSON turns an AMF0 value into one encoding/json writes.
func amfJSON(v any, depth int) (any, error) {
	if depth > maxAMFDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxAMFDepth)
	}
	switch x := v.(type) {
	case nil, amf0.Undefined:
		return nil, nil
	case bool, string:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, nil // JSON has no such numbers
		}
		return x, nil
	case amf0.Object:
		return amfObject(x, depth)
	case amf0.ECMAArray:
		return amfObject(amf0.Object(x), depth)
	case amf0.StrictArray:
		list := make([]any, len(x))
		for i, e := range x {
			var err error
			if list[i], err = amfJSON(e, depth+1); err != nil {
				return nil, err
			}
		}
		return list, nil
	default:
		return nil, fmt.Errorf("unsupported AMF0 value %T", v)
	}
}

func amfObject(o amf0.Object, depth int) (map[string]any, error) {
	m := make(map[string]any, len(o))
	for _, e := range o {
		v, err := amfJSON(e.Value, depth+1)
		if err != nil {
			return nil, err
		}
		m[e.Key] = v
	}
	return m, nil
}
