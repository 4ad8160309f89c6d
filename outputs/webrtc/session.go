package webrtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
)

// Why sessions end; they label Stats.Ended.
const (
	endDeleted          = "deleted"           // the viewer sent DELETE
	endClosed           = "closed"            // the PeerConnection closed
	endICEFailed        = "ice_failed"        // connectivity lost for good
	endHandshakeTimeout = "handshake_timeout" // never connected
	endStreamEnded      = "stream_ended"      // the job ended or was removed
	endServerClosed     = "server_closed"
	endWriteError       = "write_error"
)

const (
	// abrTick is how often a viewer's estimate is read and its rung decided.
	abrTick = 100 * time.Millisecond
	// maxPadBurst bounds the padding packets sent after one unit: with
	// about 80 units a second it allows probes up to ~2 Mbit/s above the
	// current rung.
	maxPadBurst = 12
	// gatherTimeout bounds the wait for the server's own ICE candidates.
	// Host candidates on the shared port are immediate; TURN allocations
	// are what may take this long (the answer then lists what was ready).
	gatherTimeout = 3 * time.Second
)

// session is one WHEP viewer: a PeerConnection with one video and one audio
// track, a bounded queue filled by the stream, and a goroutine (run) that
// owns the forwarder and the ABR controller. The Server owns run; run owns
// the RTCP readers and waits for them after closing the PeerConnection, and
// the event subscription (events.go), which it closes when it returns.
type session struct {
	id   string
	srv  *Server
	st   *stream
	log  *slog.Logger
	etag string
	ice  string // the viewer's ICE ufrag: a PATCH with another one is a restart
	slot slot   // set before admit; given back when the session ends (Server.removeSession)
	// release ends the session's hold on its stream in the registry (set
	// before admit, called when the session ends).
	release func()

	candMu     sync.Mutex
	candidates int // remote candidates received, offer and PATCHes, ignored ones too

	pc                       *webrtc.PeerConnection
	videoTrack, audioTrack   *webrtc.TrackLocalStaticRTP
	videoSender, audioSender *webrtc.RTPSender
	bwe                      *bwe // set while the PeerConnection is built

	queue    *unitQueue
	interest atomic.Uint64 // rungs the stream should queue for this viewer
	active   atomic.Bool   // connected: the stream queues media
	pins     chan string   // rung names from the data channel; "auto" unpins
	dc       atomic.Pointer[webrtc.DataChannel]
	remb     atomic.Int64  // latest REMB from the viewer, bits/s
	plis     atomic.Uint64 // PLI/FIR received
	snap     atomic.Pointer[ViewerStats]

	// Timed events and viewer actions (events.go, actions.go).
	viewer          string        // the session's name in actions (viewerID)
	dcOpened        chan struct{} // the data channel opened: run sends the active events
	frames          frameRing     // video frames sent last, to bind actions to
	bucket          tokenBucket   // action rate
	eventsSent      atomic.Uint64
	eventsDropped   atomic.Uint64
	actionsAccepted atomic.Uint64
	actionsRefused  atomic.Uint64

	ctx      context.Context
	cancel   context.CancelFunc
	endOnce  sync.Once
	reason   string
	done     chan struct{}
	rtcpDone sync.WaitGroup

	// Owned by run.
	fwd       *forwarder
	abr       *abrController
	pinned    bool
	reasonFor string // why the pending switch was asked for
	switches  uint64
	probeBPS  int
	padCredit float64 // bytes of padding owed to the probe
	lastPad   time.Time
	writeErrs uint64
	lastFrame time.Time         // when the last video frame went out
	freezes   uint64            // gaps over freezeGap between two video frames sent
	reasons   map[string]uint64 // switches by reason; replaced, never changed, so publish can share it
	lastREMB  int               // REMB at the previous tick, for viewers without transport-cc
	rembFell  time.Time
	last      bweSnapshot
	// The event subscription, from the data channel's opening to the end.
	events      *pipeline.EventReader
	evC         <-chan *pipeline.Event // events.C; nil when none
	batch       []*pipeline.Event      // events read, waiting for their frame (run)
	batchBuf    []byte                 // their message (run)
	evFlush     *time.Timer            // sends batch when no video frame comes (flushEventsAfter)
	evFlushC    <-chan time.Time       // evFlush.C while armed, else nil
	videoPTS    int64                  // of the last video unit sent (sentVideo)
	sentVideo   bool
	seen        map[eventKey]struct{} // active events sent on open
	readerDrops uint64                // events.Dropped() already counted
}

// newSession builds the PeerConnection for an offer and returns the session
// with its answer applied. Nothing runs until start.
func (srv *Server) newSession(ctx context.Context, st *stream, offer string, info offerInfo, pin int) (*session, error) {
	s := &session{
		id:    randomID(),
		srv:   srv,
		st:    st,
		etag:  `"` + randomID()[:16] + `"`,
		ice:   info.iceUfrag,
		queue: newUnitQueue(srv.Config.ViewerQueue),
		pins:  make(chan string, 1),
		done:  make(chan struct{}),

		dcOpened: make(chan struct{}, 1),
	}
	s.viewer = viewerID(s.id)
	s.log = srv.Log.With("stream", st.name, "session", s.id[:8])
	s.ctx, s.cancel = context.WithCancel(srv.ctx)

	needs := st.needs()
	initial := initialRung(needs, srv.Config.ABR.InitialBitrate)
	if pin >= 0 {
		initial, s.pinned = pin, true
	}
	s.abr = newABRController(srv.Config.ABR, needs, initial)

	plid, _ := chooseProfileLevel(st.h264.stream(), info.h264)
	video := videoCapability(plid)
	me, err := mediaEngine(video)
	if err != nil {
		s.cancel()
		return nil, err
	}
	ir, err := senderInterceptors(me, pionLogs{log: srv.Log}, &bweOptions{
		initial:     srv.Config.ABR.InitialBitrate,
		min:         min(needs[len(needs)-1]/2, 100_000),
		max:         2 * needs[0],
		absSendTime: !info.twcc,
	}, func(e *bwe) { s.bwe = e })
	if err != nil {
		s.cancel()
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir),
		webrtc.WithSettingEngine(srv.net.settings))
	s.pc, err = api.NewPeerConnection(webrtc.Configuration{
		ICEServers:   srv.relayServers(),
		Certificates: []webrtc.Certificate{srv.cert},
		BundlePolicy: webrtc.BundlePolicyMaxBundle,
	})
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("webrtc: new peer connection: %w", err)
	}
	if err := s.negotiate(ctx, video, offer); err != nil {
		s.cancel()
		_ = s.pc.Close()
		return nil, err
	}
	s.fwd = newForwarder(s.videoTrack, s.audioTrack, initial)
	s.fwd.onSwitch = s.onSwitch
	s.fwd.onFrameSent = s.onFrameSent
	s.interest.Store(s.fwd.interest())
	return s, nil
}

func (s *session) negotiate(ctx context.Context, video webrtc.RTPCodecCapability, offer string) error {
	var err error
	s.videoTrack, err = webrtc.NewTrackLocalStaticRTP(video, "video", "prism-"+s.st.name)
	if err != nil {
		return fmt.Errorf("webrtc: video track: %w", err)
	}
	s.audioTrack, err = webrtc.NewTrackLocalStaticRTP(audioCapability(), "audio", "prism-"+s.st.name)
	if err != nil {
		return fmt.Errorf("webrtc: audio track: %w", err)
	}
	if s.videoSender, err = s.pc.AddTrack(s.videoTrack); err != nil {
		return fmt.Errorf("webrtc: add video track: %w", err)
	}
	if s.audioSender, err = s.pc.AddTrack(s.audioTrack); err != nil {
		return fmt.Errorf("webrtc: add audio track: %w", err)
	}
	s.pc.OnConnectionStateChange(s.onState)
	s.pc.OnDataChannel(s.onDataChannel)
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	answer, err := s.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupportedOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupportedOffer, err)
	}
	if len(s.videoSender.GetParameters().Codecs) == 0 {
		return fmt.Errorf("%w: no H.264 format of the offer matches the stream", ErrUnsupportedOffer)
	}
	t := time.NewTimer(gatherTimeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// takeCandidates counts n more remote candidates against limit; false (and
// nothing counted) when they would go beyond it.
func (s *session) takeCandidates(n, limit int) bool {
	s.candMu.Lock()
	defer s.candMu.Unlock()
	if s.candidates+n > limit {
		return false
	}
	s.candidates += n
	return true
}

// answer is the local description with the candidates gathered so far.
func (s *session) answer() string { return s.pc.LocalDescription().SDP }

// start runs the session; the caller registered it with the server's
// WaitGroup.
func (s *session) start() {
	s.rtcpDone.Add(2)
	go s.readRTCP(s.videoSender, true)
	go s.readRTCP(s.audioSender, false)
	go s.run()
}

// close ends the session for reason; the first reason wins. It does not
// wait: run tears down.
func (s *session) close(reason string) {
	s.endOnce.Do(func() {
		s.reason = reason
		s.cancel()
	})
}

func (s *session) run() {
	defer s.srv.wg.Done()
	defer s.teardown()
	defer s.closeEvents()
	s.evFlush = time.NewTimer(time.Hour)
	s.evFlush.Stop()
	handshake := time.NewTimer(s.srv.Config.HandshakeTimeout)
	defer handshake.Stop()
	tick := time.NewTicker(abrTick)
	defer tick.Stop()
	s.publish(0, 0)
	for {
		select {
		case <-s.ctx.Done():
			s.close(endServerClosed) // no-op unless the server context ended
			return
		case <-handshake.C:
			if !s.active.Load() {
				s.close(endHandshakeTimeout)
				return
			}
		case <-s.queue.notify:
			if err := s.drain(); err != nil {
				s.log.Debug("webrtc: write failed", "err", err)
				s.close(endWriteError)
				return
			}
		case <-tick.C:
			s.tick()
		case <-s.overuse():
			s.tick() // a queue is building: decide now, not at the next tick
		case name := <-s.pins:
			s.applyPin(name)
		case <-s.dcOpened:
			s.openEvents()
		case e, ok := <-s.evC:
			s.onEvent(e, ok)
		case <-s.evFlushC:
			s.evFlushC = nil
			s.flushEvents()
		}
	}
}

func (s *session) teardown() {
	s.active.Store(false)
	s.st.remove(s)
	_ = s.pc.Close()
	s.rtcpDone.Wait()
	s.srv.removeSession(s)
	s.srv.counters.end(s.reason)
	s.log.Debug("webrtc: session ended", "reason", s.reason, "frames", s.fwd.frames, "switches", s.switches,
		"dropped", s.queue.droppedUnits())
	close(s.done)
}

func (s *session) onState(state webrtc.PeerConnectionState) {
	switch state {
	case webrtc.PeerConnectionStateConnected:
		// Media starts: video on the rung's latest keyframe if it is
		// young (the join IDR was asked for at the POST), else at the next.
		s.st.activate(s)
	case webrtc.PeerConnectionStateFailed:
		s.close(endICEFailed)
	case webrtc.PeerConnectionStateClosed:
		s.close(endClosed)
	}
}

// drain forwards everything queued. Only a closed transport is fatal;
// other write errors (e.g. SRTP not ready yet) lose that packet only.
func (s *session) drain() error {
	for {
		q, ok := s.queue.pop()
		if !ok {
			return nil
		}
		var err error
		if q.u.video {
			err = s.fwd.onVideo(q)
			s.videoPTS, s.sentVideo = q.u.pts, true
			// The events read so far, bound to this frame or later, right
			// behind its packets: the frame does not wait for SCTP.
			s.pumpEvents()
		} else {
			err = s.fwd.onAudio(q.u)
		}
		// Padding goes out after every unit (audio every 20 ms, video
		// every frame): spread out, so that the probe measures the link
		// and not the burst.
		if err == nil && s.probeBPS > 0 {
			err = s.fwd.pad(s.paddingDue())
		}
		if errors.Is(err, io.ErrClosedPipe) {
			return err
		}
		if err != nil {
			s.writeErrs++
		}
	}
}

// paddingDue converts the probe rate into padding packets owed since the
// last frame.
func (s *session) paddingDue() int {
	now := time.Now()
	if !s.lastPad.IsZero() {
		s.padCredit += float64(s.probeBPS) / 8 * now.Sub(s.lastPad).Seconds()
	}
	s.lastPad = now
	const packetBytes = paddingSize + 12
	n := min(int(s.padCredit/packetBytes), maxPadBurst)
	s.padCredit -= float64(n * packetBytes)
	s.padCredit = min(s.padCredit, maxPadBurst*packetBytes) // no catch-up burst after a stall
	return n
}

// overuse is signalled by the estimator when a queue starts to build (nil,
// which never fires, until the PeerConnection made it).
func (s *session) overuse() <-chan struct{} {
	if s.bwe == nil {
		return nil
	}
	return s.bwe.onOveruse
}

// tick reads the bandwidth estimate and lets the ABR decide.
func (s *session) tick() {
	if !s.active.Load() || s.bwe == nil {
		return
	}
	now := time.Now()
	b := s.bwe.snapshot()
	in := abrInput{now: now, estimate: b.estimate, capacity: b.capacity, loss: b.loss, overuse: b.overuse,
		growing: b.growing, queueDelay: b.queueDelay}
	remb := int(s.remb.Load())
	if !b.feedback && remb > 0 {
		// No transport-cc (the viewer did not offer it): its REMB is the
		// estimate, and a fall of it is the congestion signal.
		if s.lastREMB > 0 && remb < s.lastREMB*95/100 {
			s.rembFell = now
		}
		s.lastREMB = remb
		in.estimate, in.capacity = remb, 0
		in.overuse = now.Sub(s.rembFell) < time.Second
	} else if remb > 0 && remb < in.estimate {
		in.estimate = remb // a receiver's cap, e.g. its decoder
	}
	s.last = b
	if bweTrace {
		s.log.Info("webrtc: estimator", "estimate", b.estimate, "capacity", b.capacity, "acked", b.acked,
			"queue_delay", b.queueDelay, "overuse", b.overuse, "loss", b.loss, "rtt", b.rtt, "feedback", b.feedback)
	}
	if s.srv.Config.ABR.Enabled && !s.pinned {
		d := s.abr.tick(in)
		switch {
		case d.probeBPS > 0 && s.probeBPS == 0:
			s.log.Debug("webrtc: probing the next rung", "extra_bps", d.probeBPS, "estimate", in.estimate,
				"capacity", in.capacity)
		case d.probeEnd != "":
			if d.probeEnd != "up" {
				s.srv.counters.probeFailed(s.st.name)
			} else {
				s.bwe.confirm(s.abr.needs[d.target])
			}
			s.log.Debug("webrtc: probe ended", "result", d.probeEnd, "estimate", in.estimate, "loss", in.loss,
				"queue_delay", in.queueDelay, "capacity", in.capacity)
		}
		if d.probeBPS == 0 {
			s.padCredit, s.lastPad = 0, time.Time{}
		}
		s.probeBPS = d.probeBPS
		if d.target != s.fwd.want {
			s.log.Debug("webrtc: rung decision", "to", s.st.rungs[d.target].track.Name, "reason", d.reason,
				"estimate", in.estimate, "capacity", in.capacity, "acked", b.acked, "queue_delay", in.queueDelay,
				"loss", in.loss)
			s.want(d.target, d.reason, keyReasonSwitch)
		}
	}
	s.publish(in.estimate, in.loss)
}

// want asks the forwarder for rung r. Moves down (the viewer is congested)
// and pins (the viewer asked) also ask for an IDR, rate limited per stream,
// so they do not wait for the next GOP; moves up wait for it, since forced
// IDRs raise every rung's bitrate and an up-switch is not urgent. A move
// down for congestion also stops the current rung until the switch: its
// frames would only queue up at the bottleneck.
func (s *session) want(r int, reason, keyReason string) {
	if reason == ReasonCongestion && r > s.fwd.cur {
		s.fwd.setWantPaused(r)
	} else {
		s.fwd.setWant(r)
	}
	s.reasonFor = reason
	s.interest.Store(s.fwd.interest())
	if r != s.fwd.cur && (r > s.fwd.cur || reason == ReasonPin) {
		s.st.kf.request(keyReason)
	}
}

// bweTrace (PRISM_BWE_TRACE=1) logs every viewer's estimator reading on
// every tick: a diagnostic for tuning the ABR on a real network.
var bweTrace = os.Getenv("PRISM_BWE_TRACE") == "1"

// freezeGap: a viewer that gets no video frame for this long sees a freeze
// (Chromium counts one from about this on at 30 fps).
const freezeGap = 500 * time.Millisecond

func (s *session) onFrameSent(pts int64, ingest time.Time) {
	now := time.Now()
	s.frames.add(pts, ingest)
	if !ingest.IsZero() {
		s.st.latency.Observe(now.Sub(ingest))
	}
	if !s.lastFrame.IsZero() && now.Sub(s.lastFrame) > freezeGap {
		s.freezes++
		s.srv.counters.froze(s.st.name)
	}
	s.lastFrame = now
}

func (s *session) onSwitch(from, to int) {
	s.interest.Store(s.fwd.interest())
	if from >= 0 {
		s.switches++
		reasons := make(map[string]uint64, len(s.reasons)+1)
		maps.Copy(reasons, s.reasons)
		reasons[s.reasonFor]++
		s.reasons = reasons
		s.srv.counters.switched(s.st.name, to < from, s.reasonFor)
		s.log.Debug("webrtc: switched", "from", s.st.rungs[from].track.Name, "to", s.st.rungs[to].track.Name,
			"reason", s.reasonFor)
	}
	s.send(rungMessage{Type: "rung", Rung: s.st.rungs[to].track.Name, Width: s.st.rungs[to].track.Width,
		Height: s.st.rungs[to].track.Height, Reason: s.reasonFor})
}

func (s *session) applyPin(name string) {
	if name == pinAuto {
		if s.pinned {
			s.pinned = false
			s.abr.reset(s.fwd.want)
			s.reasonFor = ReasonUnpin
		}
		return
	}
	r, ok := s.st.rungIndex(name)
	if !ok {
		s.send(errorMessage{Type: "error", Error: fmt.Sprintf("%v %q (have %v)", ErrUnknownRung, name, s.st.rungNames())})
		return
	}
	s.pinned = true
	s.probeBPS = 0
	s.want(r, ReasonPin, keyReasonPin)
}

// readRTCP drains a sender's RTCP, which pion needs for NACK and congestion
// control to work, and turns PLI/FIR into (rate-limited) keyframe requests.
// It returns when the PeerConnection closes.
func (s *session) readRTCP(sender *webrtc.RTPSender, video bool) {
	defer s.rtcpDone.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		if !video {
			continue
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				s.plis.Add(1)
				s.st.kf.request(keyReasonPLI)
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				s.remb.Store(int64(p.Bitrate))
			}
		}
	}
}

// publish stores a stats snapshot for Server.Stats.
func (s *session) publish(est int, loss float64) {
	s.noteReaderDrops()
	v := &ViewerStats{
		ID: s.id, Stream: s.st.name, Connected: s.active.Load(), Pinned: s.pinned,
		Target: s.st.rungs[s.fwd.want].track.Name, Estimate: est, Loss: loss,
		Packets: s.fwd.packets, Bytes: s.fwd.bytes, Frames: s.fwd.frames, Padding: s.fwd.padding,
		Dropped: s.queue.droppedUnits(), Switches: s.switches, WriteErrors: s.writeErrs,
		Capacity: s.last.capacity, QueueDelayMS: float64(s.last.queueDelay.Microseconds()) / 1000,
		RTTMS: float64(s.last.rtt.Microseconds()) / 1000, Overuses: s.last.overuses, KeyframeRequests: s.plis.Load(),
		ProbesFailed: s.abr.failed, Freezes: s.freezes, SwitchReasons: s.reasons,
		Viewer: s.viewer, EventsSent: s.eventsSent.Load(), EventsDropped: s.eventsDropped.Load(),
		ActionsAccepted: s.actionsAccepted.Load(), ActionsRefused: s.actionsRefused.Load(),
	}
	if s.fwd.cur >= 0 {
		v.Rung = s.st.rungs[s.fwd.cur].track.Name
	}
	s.snap.Store(v)
}

func (s *session) stats() ViewerStats {
	if v := s.snap.Load(); v != nil {
		return *v
	}
	return ViewerStats{ID: s.id, Stream: s.st.name}
}
