package webrtc

import (
	"encoding/json"

	"github.com/pion/webrtc/v4"
)

// The data channel carries JSON messages, one per message, with a "type".
// A WHEP answerer cannot open a channel itself, so the viewer's offer must
// include one (any label); without it pins go through ?rung= on the POST.
//
// Viewer to server:
//
//	{"type":"pin","rung":"360p"}   stay on 360p (ABR off for this viewer)
//	{"type":"pin","rung":"auto"}   back to automatic
//	{"type":"action","data":<JSON>,"rtp":<rtpTimestamp>}   a viewer action (actions.go)
//
// Server to viewer:
//
//	{"type":"rungs","rungs":[{"name":"720p","width":1280,"height":720,"bitrate":2800000},...],"pinned":false}
//	{"type":"rung","rung":"480p","width":854,"height":480,"reason":"congestion"}   a switch took effect
//	{"type":"event",...}   a timed event, with the rtp of its frame (events.go)
//	{"type":"ack","pts":..,"media_time":..,"pdt":..}   an action was accepted
//	{"type":"error","error":"..."}
const pinAuto = "auto"

// unknownMessage answers a message that is neither a pin nor an action.
const unknownMessage = `expected {"type":"pin","rung":"<name>|auto"} or {"type":"action","data":<JSON>,"rtp":<rtpTimestamp>}`

type clientMessage struct {
	Type string          `json:"type"`
	Rung string          `json:"rung"`
	Data json.RawMessage `json:"data"` // action
	RTP  *uint32         `json:"rtp"`  // action: the frame on screen
}

type rungInfo struct {
	Name    string `json:"name"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
	Bitrate int64  `json:"bitrate"`
}

type rungsMessage struct {
	Type   string     `json:"type"`
	Rungs  []rungInfo `json:"rungs"`
	Pinned bool       `json:"pinned"`
}

type rungMessage struct {
	Type   string `json:"type"`
	Rung   string `json:"rung"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Reason string `json:"reason,omitempty"`
}

type errorMessage struct {
	Type  string `json:"type"`
	Error string `json:"error"`
}

func (s *session) onDataChannel(dc *webrtc.DataChannel) {
	s.dc.Store(dc)
	dc.OnOpen(func() {
		msg := rungsMessage{Type: "rungs", Pinned: s.stats().Pinned}
		for _, r := range s.st.rungs {
			msg.Rungs = append(msg.Rungs, rungInfo{Name: r.track.Name, Width: r.track.Width,
				Height: r.track.Height, Bitrate: r.track.Bitrate})
		}
		s.send(msg)
		// run subscribes to the events and sends those in effect: after
		// the rungs, and in the same goroutine as the events that follow.
		if s.dcOpened != nil {
			select {
			case s.dcOpened <- struct{}{}:
			default:
			}
		}
	})
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		var msg clientMessage
		err := json.Unmarshal(m.Data, &msg)
		if isAction(m.Data, &msg, err) {
			if err != nil {
				s.onAction(m.Data, nil) // an action, but not one that parses: say so
			} else {
				s.onAction(m.Data, &msg)
			}
			return
		}
		if err != nil || msg.Type != "pin" || msg.Rung == "" {
			s.send(errorMessage{Type: "error", Error: unknownMessage})
			return
		}
		// The latest pin wins; run applies it.
		for {
			select {
			case s.pins <- msg.Rung:
				return
			default:
				select {
				case <-s.pins:
				default:
				}
			}
		}
	})
}

// isAction reports whether a message is an action, also when a field of
// it did not parse (a negative rtp), so that the viewer learns what is
// wrong with its action.
func isAction(raw []byte, msg *clientMessage, err error) bool {
	if err == nil {
		return msg.Type == "action"
	}
	var t struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(raw, &t) == nil && t.Type == "action"
}

// send writes a message on the data channel if it is open. The channel is
// not blocking (pion buffers), so the caller's goroutine never waits.
func (s *session) send(v any) {
	dc := s.dc.Load()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	_ = dc.SendText(string(b))
}
