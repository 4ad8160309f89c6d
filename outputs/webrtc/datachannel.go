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
//
// Server to viewer:
//
//	{"type":"rungs","rungs":[{"name":"720p","width":1280,"height":720,"bitrate":2800000},...],"pinned":false}
//	{"type":"rung","rung":"480p","width":854,"height":480,"reason":"congestion"}   a switch took effect
//	{"type":"error","error":"..."}
const pinAuto = "auto"

type clientMessage struct {
	Type string `json:"type"`
	Rung string `json:"rung"`
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
	})
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		var msg clientMessage
		if err := json.Unmarshal(m.Data, &msg); err != nil || msg.Type != "pin" || msg.Rung == "" {
			s.send(errorMessage{Type: "error", Error: `expected {"type":"pin","rung":"<name>|auto"}`})
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
