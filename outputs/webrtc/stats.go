package webrtc

import (
	"maps"
	"sort"
	"sync"
)

// Stats is a snapshot of the WebRTC output, for the API and metrics.
type Stats struct {
	Sessions int `json:"sessions"` // current WHEP sessions, connected or connecting
	// Reading counts WHEP requests whose body is still arriving; they hold
	// no session slot (see Config.OfferTimeout).
	Reading int `json:"reading"`
	// Accepted counts offers answered with 201; Rejected counts refused
	// ones by reason ("max_sessions", "max_sessions_per_ip",
	// "max_sessions_per_stream", "offer_timeout", "bad_offer",
	// "too_many_candidates", "unsupported_offer", "unknown_stream",
	// "unknown_rung", "too_large", "content_type", "closed").
	Accepted uint64            `json:"accepted"`
	Rejected map[string]uint64 `json:"rejected"`
	Ended    map[string]uint64 `json:"ended"` // ended sessions by reason
	Switches SwitchStats       `json:"switches"`
	Streams  []StreamStats     `json:"streams"`
	Viewers  []ViewerStats     `json:"viewers"`
}

// SwitchStats counts completed rung switches (the IDR of the new rung went
// out), up and down and by reason (ReasonCongestion, ReasonLoss, ...), and
// the bandwidth probes that found no room for the next rung.
type SwitchStats struct {
	Up           uint64            `json:"up"`
	Down         uint64            `json:"down"`
	Reasons      map[string]uint64 `json:"reasons"`
	ProbesFailed uint64            `json:"probes_failed"`
}

// KeyframeStats counts a stream's keyframe requests by reason ("join",
// "pli", "switch", "pin", "drop") and the IDRs actually forced; Coalesced
// requests rode on an IDR forced for another.
type KeyframeStats struct {
	Requests  map[string]uint64 `json:"requests"`
	Forced    uint64            `json:"forced"`
	Coalesced uint64            `json:"coalesced"`
}

// StreamStats describes one stream served over WebRTC.
type StreamStats struct {
	Name      string        `json:"name"`
	Rungs     []string      `json:"rungs"`   // best first
	Viewers   int           `json:"viewers"` // sessions of this stream
	Dropped   uint64        `json:"dropped"` // packets the stream's job reader dropped
	Keyframes KeyframeStats `json:"keyframes"`
}

// ViewerStats describes one WHEP session.
type ViewerStats struct {
	ID        string  `json:"id"`
	Stream    string  `json:"stream"`
	Connected bool    `json:"connected"`
	Rung      string  `json:"rung"`   // being sent ("" before the first IDR)
	Target    string  `json:"target"` // asked for; differs from Rung until its next IDR
	Pinned    bool    `json:"pinned"`
	Estimate  int     `json:"estimate_bps"` // bandwidth estimate
	Loss      float64 `json:"loss"`
	Packets   uint64  `json:"packets"` // RTP packets sent (media)
	Bytes     uint64  `json:"bytes"`   // payload bytes sent
	Frames    uint64  `json:"frames"`  // video frames sent
	Padding   uint64  `json:"padding_packets"`
	Dropped   uint64  `json:"dropped"` // units dropped by this viewer's queue
	Switches  uint64  `json:"switches"`
	// WriteErrors counts packets pion refused (e.g. before SRTP was ready).
	WriteErrors uint64 `json:"write_errors"`
}

// counters are the server-wide event counts.
type counters struct {
	mu       sync.Mutex
	accepted uint64
	rejected map[string]uint64
	ended    map[string]uint64
	switches SwitchStats
}

func newCounters() *counters {
	return &counters{rejected: map[string]uint64{}, ended: map[string]uint64{},
		switches: SwitchStats{Reasons: map[string]uint64{}}}
}

func (c *counters) accept() { c.mu.Lock(); c.accepted++; c.mu.Unlock() }

func (c *counters) reject(reason string) { c.mu.Lock(); c.rejected[reason]++; c.mu.Unlock() }

func (c *counters) end(reason string) { c.mu.Lock(); c.ended[reason]++; c.mu.Unlock() }

func (c *counters) switched(up bool, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if up {
		c.switches.Up++
	} else {
		c.switches.Down++
	}
	c.switches.Reasons[reason]++
}

func (c *counters) probeFailed() { c.mu.Lock(); c.switches.ProbesFailed++; c.mu.Unlock() }

func (c *counters) fill(st *Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Accepted = c.accepted
	st.Rejected = maps.Clone(c.rejected)
	st.Ended = maps.Clone(c.ended)
	st.Switches = c.switches
	st.Switches.Reasons = maps.Clone(c.switches.Reasons)
}

// Stats returns a snapshot of sessions, switches and keyframe requests.
func (s *Server) Stats() Stats {
	var st Stats
	s.counters.fill(&st)
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, str := range s.streams {
		streams = append(streams, str)
	}
	sessions := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	st.Sessions = len(sessions)
	st.Reading = int(s.reading.Load())
	for _, str := range streams {
		st.Streams = append(st.Streams, str.stats())
	}
	for _, sess := range sessions {
		st.Viewers = append(st.Viewers, sess.stats())
	}
	sort.Slice(st.Streams, func(i, j int) bool { return st.Streams[i].Name < st.Streams[j].Name })
	sort.Slice(st.Viewers, func(i, j int) bool { return st.Viewers[i].ID < st.Viewers[j].ID })
	return st
}
