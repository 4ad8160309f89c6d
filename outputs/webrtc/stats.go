package webrtc

import (
	"maps"
	"sort"
	"sync"

	"github.com/prism-streaming/prism/pipeline"
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
// "pli", "switch", "pin", "drop"), those passed on to the job (Forwarded)
// and those that rode on one passed on (Coalesced). Which became IDRs is
// in the job's stats (pipeline.SourceStats.Keyframes).
type KeyframeStats = pipeline.KeyframeThrottleStats

// StreamStats describes one stream served over WebRTC.
type StreamStats struct {
	Name      string        `json:"name"`
	Rungs     []string      `json:"rungs"`   // best first
	Viewers   int           `json:"viewers"` // sessions of this stream
	Dropped   uint64        `json:"dropped"` // packets the stream's job reader dropped
	Keyframes KeyframeStats `json:"keyframes"`
	// Switches, Freezes: the stream's viewers' rung switches (by reason,
	// up and down, failed probes) and freezes (no video frame sent to a
	// connected viewer for over 500 ms), since the server started.
	Switches SwitchStats `json:"switches"`
	Freezes  uint64      `json:"freezes"`
	// Events and Actions: timed events sent to the stream's viewers on
	// their data channels, and the viewers' actions, since the server
	// started.
	Events  EventStats  `json:"events"`
	Actions ActionStats `json:"actions"`
}

// EventStats counts timed events sent to viewers, and those dropped: the
// viewer's subscription was behind, its data channel closed or backed up.
type EventStats struct {
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
}

// ActionStats counts viewers' actions handed to Server.OnAction, and those
// refused by reason ("disabled", "too_large", "malformed", "rate",
// "no_frame", "sink").
type ActionStats struct {
	Accepted uint64            `json:"accepted"`
	Refused  map[string]uint64 `json:"refused"`
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
	// SwitchReasons counts this viewer's completed switches by reason.
	SwitchReasons map[string]uint64 `json:"switch_reasons,omitempty"`
	// WriteErrors counts packets pion refused (e.g. before SRTP was ready).
	WriteErrors uint64 `json:"write_errors"`
	// What the bandwidth estimator measured (bwe.go): the bottleneck's
	// capacity from packet-train dispersion (0 = not measured yet), the
	// queueing delay, the round-trip time from receiver reports, and how
	// often a growing queue or loss cut the estimate.
	Capacity     int     `json:"capacity_bps"`
	QueueDelayMS float64 `json:"queue_delay_ms"`
	RTTMS        float64 `json:"rtt_ms"`
	Overuses     uint64  `json:"estimate_cuts"`
	ProbesFailed uint64  `json:"probes_failed"`
	// Freezes counts gaps over 500 ms between two video frames sent.
	Freezes uint64 `json:"freezes"`
	// KeyframeRequests counts the viewer's PLI and FIR.
	KeyframeRequests uint64 `json:"keyframe_requests"`
	// Viewer is the session's name in its actions (pipeline.Action.Viewer):
	// not the session ID, which is the capability to end the session.
	Viewer string `json:"viewer"`
	// Timed events sent and dropped, actions accepted and refused.
	EventsSent      uint64 `json:"events_sent"`
	EventsDropped   uint64 `json:"events_dropped"`
	ActionsAccepted uint64 `json:"actions_accepted"`
	ActionsRefused  uint64 `json:"actions_refused"`
}

// counters are the server-wide event counts.
type counters struct {
	mu       sync.Mutex
	accepted uint64
	rejected map[string]uint64
	ended    map[string]uint64
	switches SwitchStats
	// per stream: switches and freezes of its viewers
	streamSwitches map[string]*SwitchStats
	freezes        map[string]uint64
	events         map[string]*EventStats
	actions        map[string]*ActionStats
}

func newCounters() *counters {
	return &counters{rejected: map[string]uint64{}, ended: map[string]uint64{},
		switches: SwitchStats{Reasons: map[string]uint64{}}, streamSwitches: map[string]*SwitchStats{},
		freezes: map[string]uint64{}, events: map[string]*EventStats{}, actions: map[string]*ActionStats{}}
}

func (c *counters) eventsLocked(stream string) *EventStats {
	e := c.events[stream]
	if e == nil {
		e = &EventStats{}
		c.events[stream] = e
	}
	return e
}

func (c *counters) actionsLocked(stream string) *ActionStats {
	a := c.actions[stream]
	if a == nil {
		a = &ActionStats{Refused: map[string]uint64{}}
		c.actions[stream] = a
	}
	return a
}

func (c *counters) eventsSent(stream string, n uint64) {
	c.mu.Lock()
	c.eventsLocked(stream).Sent += n
	c.mu.Unlock()
}

func (c *counters) eventsDropped(stream string, n uint64) {
	c.mu.Lock()
	c.eventsLocked(stream).Dropped += n
	c.mu.Unlock()
}

func (c *counters) actionAccepted(stream string) {
	c.mu.Lock()
	c.actionsLocked(stream).Accepted++
	c.mu.Unlock()
}

func (c *counters) actionRefused(stream, reason string) {
	c.mu.Lock()
	c.actionsLocked(stream).Refused[reason]++
	c.mu.Unlock()
}

func (c *counters) streamLocked(name string) *SwitchStats {
	s := c.streamSwitches[name]
	if s == nil {
		s = &SwitchStats{Reasons: map[string]uint64{}}
		c.streamSwitches[name] = s
	}
	return s
}

func (c *counters) froze(stream string) { c.mu.Lock(); c.freezes[stream]++; c.mu.Unlock() }

// forStream fills the per-stream counters of st.
func (c *counters) forStream(st *StreamStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Freezes = c.freezes[st.Name]
	st.Switches = SwitchStats{Reasons: map[string]uint64{}}
	if s := c.streamSwitches[st.Name]; s != nil {
		st.Switches = *s
		st.Switches.Reasons = maps.Clone(s.Reasons)
	}
	st.Events = EventStats{}
	if e := c.events[st.Name]; e != nil {
		st.Events = *e
	}
	st.Actions = ActionStats{Refused: map[string]uint64{}}
	if a := c.actions[st.Name]; a != nil {
		st.Actions = ActionStats{Accepted: a.Accepted, Refused: maps.Clone(a.Refused)}
	}
}

func (c *counters) accept() { c.mu.Lock(); c.accepted++; c.mu.Unlock() }

func (c *counters) reject(reason string) { c.mu.Lock(); c.rejected[reason]++; c.mu.Unlock() }

func (c *counters) end(reason string) { c.mu.Lock(); c.ended[reason]++; c.mu.Unlock() }

func (c *counters) switched(stream string, up bool, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range []*SwitchStats{&c.switches, c.streamLocked(stream)} {
		if up {
			s.Up++
		} else {
			s.Down++
		}
		s.Reasons[reason]++
	}
}

func (c *counters) probeFailed(stream string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.switches.ProbesFailed++
	c.streamLocked(stream).ProbesFailed++
}

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
		ss := str.stats()
		s.counters.forStream(&ss)
		st.Streams = append(st.Streams, ss)
	}
	for _, sess := range sessions {
		st.Viewers = append(st.Viewers, sess.stats())
	}
	sort.Slice(st.Streams, func(i, j int) bool { return st.Streams[i].Name < st.Streams[j].Name })
	sort.Slice(st.Viewers, func(i, j int) bool { return st.Viewers[i].ID < st.Viewers[j].ID })
	return st
}

// StreamView is one stream's WebRTC side: the stream's counters and its
// viewers, for /api/v1/streams/<name>.
type StreamView struct {
	StreamStats
	ViewerList []ViewerStats `json:"viewer_list"`
}

// Stream returns the WebRTC view of one stream; false when the server does
// not serve it.
func (s *Server) Stream(name string) (StreamView, bool) {
	st := s.Stats()
	for _, ss := range st.Streams {
		if ss.Name != name {
			continue
		}
		v := StreamView{StreamStats: ss, ViewerList: []ViewerStats{}}
		for _, vs := range st.Viewers {
			if vs.Stream == name {
				v.ViewerList = append(v.ViewerList, vs)
			}
		}
		return v, true
	}
	return StreamView{}, false
}
