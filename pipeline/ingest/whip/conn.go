package whip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// Bounds of the receive path.
const (
	// The reorder buffer waits this long (or this many packets) for a
	// missing packet: a few NACK round trips on a continental path.
	reorderMaxPackets = 200
	reorderMaxDelay   = 300 * time.Millisecond
	// unitQueue is the channel from the track readers to the session
	// writer; pendingMax and pendingMaxBytes bound the frames held from
	// the first keyframe until the tracks are announced.
	unitQueue       = 64
	pendingMax      = 300
	pendingMaxBytes = 32 << 20
	opusRate        = 48000
	// readBuffer holds one SRTP-decrypted RTP packet (pion's receive MTU
	// is 1460).
	readBuffer = 4096
)

// errKicked is the stop reason when the node closes the session: the
// session ends as Session.Close says, cleanly.
var errKicked = errors.New("whip: closed by the node")

// conn is one publisher: its PeerConnection and the goroutines that read
// its tracks and write the session. run owns the session's end.
type conn struct {
	s      *Server
	id     string
	etag   string
	stream string
	ufrag  string // the publisher's ICE ufrag: another one in a PATCH is an ICE restart
	info   offerInfo
	pc     *webrtc.PeerConnection
	sess   *ingest.Session
	log    *slog.Logger
	epoch  time.Time // timestamps of every track count from here

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // closed when the session has ended
	connected chan struct{}
	connOnce  sync.Once
	units     chan unit
	pli       chan struct{}
	wg        sync.WaitGroup // track and RTCP readers

	source atomic.Pointer[webrtc.TrackRemote] // the video track ingested
	audio  atomic.Pointer[webrtc.TrackRemote] // the Opus track, if any

	mu         sync.Mutex
	closing    bool
	reason     error
	stopped    bool
	patches    int
	candidates int
	layers     []*webrtc.TrackRemote // video tracks seen, for the fallback source
}

// unit is one access unit on its way from a track reader to the session.
type unit struct {
	video    bool
	pts      int64
	data     []byte
	keyframe bool
	arrival  time.Time
	track    *pipeline.Track // video keyframes: the track as this keyframe describes it
}

// start negotiates a session for an admitted publisher and returns the
// answer. On error the caller ends sess. A panic in pion on a hostile
// offer is an error of this request only.
func (s *Server) start(ctx context.Context, sess *ingest.Session, offer string, info offerInfo, log *slog.Logger) (c *conn, answer string, err error) {
	var pc *webrtc.PeerConnection
	added := false
	defer func() {
		if v := recover(); v != nil {
			log.Error("whip: panic while negotiating", "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("whip: internal error: %v", v)
			switch {
			case added:
				c.stop(err) // run owns the teardown
			case c != nil:
				c.shutdown()
			case pc != nil:
				_ = pc.Close()
			}
			c, answer = nil, ""
		}
	}()
	pc, err = s.api.NewPeerConnection(webrtc.Configuration{ICEServers: s.ICEServers, BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return nil, "", fmt.Errorf("whip: new peer connection: %w", err)
	}
	id := randomID()
	c = &conn{
		s: s, id: id, etag: `"` + randomID()[:16] + `"`, stream: sess.Request.Stream, ufrag: info.iceUfrag,
		info: info, pc: pc, sess: sess, log: log.With("session", id), epoch: time.Now(),
		done: make(chan struct{}), connected: make(chan struct{}),
		units: make(chan unit, unitQueue), pli: make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	abort := func(err error) (*conn, string, error) {
		c.shutdown()
		return nil, "", err
	}
	sess.OnClose(func() { c.stop(errKicked) })
	sess.OnKeyframeRequest(c.requestPLI)
	pc.OnConnectionStateChange(c.onState)
	pc.OnTrack(c.onTrack)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return abort(fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	local, err := pc.CreateAnswer(nil)
	if err != nil {
		return abort(fmt.Errorf("%w: no answer: %w", ErrBadOffer, err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(local); err != nil {
		return abort(fmt.Errorf("whip: set answer: %w", err))
	}
	// The answer carries every server candidate: publishers that do not
	// trickle (most of them) need them, and with the shared ICE mux
	// gathering is immediate.
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
	case <-ctx.Done():
		return abort(ctx.Err())
	}
	if !s.add(c) {
		return abort(ErrClosed)
	}
	added = true
	go c.run()
	c.log.Info("whip: publisher connecting", "rid", info.topRID, "audio", info.audio)
	return c, pc.LocalDescription().SDP, nil
}

// stop asks run to end the session with reason (nil: DELETE, a clean stop).
func (c *conn) stop(reason error) {
	c.mu.Lock()
	if !c.stopped {
		c.stopped, c.reason = true, reason
	}
	c.mu.Unlock()
	c.cancel()
}

// shutdown closes the PeerConnection and waits for the readers; no reader
// starts after it.
func (c *conn) shutdown() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.cancel()
	_ = c.pc.Close()
	c.wg.Wait()
}

// goOwned runs fn in a goroutine the conn waits for, unless it is closing.
func (c *conn) goOwned(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.recoverPanic()
		fn()
	}()
	return true
}

// recoverPanic turns a panic in one of the conn's goroutines into the end
// of this session only.
func (c *conn) recoverPanic() {
	if v := recover(); v != nil {
		c.log.Error("whip: panic in a session", "panic", v, "stack", string(debug.Stack()))
		c.stop(fmt.Errorf("whip: internal error: %v", v))
	}
}

func (c *conn) takePatch() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.patches++
	return c.patches <= maxPatches
}

func (c *conn) takeCandidates(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.candidates+n > maxCandidates {
		return false
	}
	c.candidates += n
	return true
}

func (c *conn) onState(st webrtc.PeerConnectionState) {
	switch st {
	case webrtc.PeerConnectionStateConnected:
		c.connOnce.Do(func() { close(c.connected) })
	case webrtc.PeerConnectionStateFailed:
		c.stop(fmt.Errorf("%w: ICE or DTLS failed", ErrConnection))
	case webrtc.PeerConnectionStateClosed:
		c.stop(fmt.Errorf("%w: closed by the publisher", ErrConnection))
	}
}

// requestPLI asks run for a PLI; run sends it within PLIInterval.
func (c *conn) requestPLI() {
	select {
	case c.pli <- struct{}{}:
	default:
	}
}

// onTrack starts reading every track pion announces: the source video and
// the audio are ingested, other simulcast layers (and extra sections) are
// read and discarded, since unread packets would fill pion's buffers.
func (c *conn) onTrack(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	mid := ""
	for _, tr := range c.pc.GetTransceivers() {
		if tr.Receiver() == r {
			mid = tr.Mid()
		}
	}
	c.goOwned(func() { c.readRTCP(t, r) })
	switch t.Kind() {
	case webrtc.RTPCodecTypeVideo:
		if mid == c.info.videoMid && (c.info.topRID == "" || t.RID() == c.info.topRID) {
			c.source.CompareAndSwap(nil, t)
		}
		c.mu.Lock()
		c.layers = append(c.layers, t)
		c.mu.Unlock()
		c.goOwned(func() { c.readVideo(t) })
	case webrtc.RTPCodecTypeAudio:
		if c.audio.CompareAndSwap(nil, t) && c.info.audio {
			c.goOwned(func() { c.readAudio(t) })
			return
		}
		c.goOwned(func() { c.discard(t) })
	}
}

// pickFallbackSource makes the best layer that arrived the source when the
// top one did not show up within TrackWait (a browser pauses layers it has
// no bandwidth for).
func (c *conn) pickFallbackSource() {
	if c.source.Load() != nil {
		return
	}
	c.mu.Lock()
	layers := slices.Clone(c.layers)
	c.mu.Unlock()
	rank := func(t *webrtc.TrackRemote) int {
		if i := slices.Index(c.info.rids, t.RID()); i >= 0 {
			return i
		}
		return len(c.info.rids)
	}
	slices.SortStableFunc(layers, func(a, b *webrtc.TrackRemote) int { return rank(a) - rank(b) })
	if len(layers) > 0 && c.source.CompareAndSwap(nil, layers[0]) {
		c.log.Info("whip: the top simulcast layer did not arrive; using another", "rid", layers[0].RID())
		c.requestPLI()
	}
}

func (c *conn) readRTCP(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	// Reading drives the interceptors (sender reports feed the receiver
	// reports); the packets themselves are not needed.
	for {
		var err error
		if rid := t.RID(); rid != "" {
			_, _, err = r.ReadSimulcastRTCP(rid)
		} else {
			_, _, err = r.ReadRTCP()
		}
		if err != nil {
			return
		}
	}
}

func (c *conn) discard(t *webrtc.TrackRemote) {
	buf := make([]byte, readBuffer)
	for {
		if _, _, err := t.Read(buf); err != nil {
			return
		}
	}
}

// send hands a unit to run, unless the session is ending.
func (c *conn) send(u unit) bool {
	select {
	case c.units <- u:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// run writes the session: it waits for the connection, announces the
// tracks once the first video keyframe is known, sends the PLIs, and ends
// the session when the publisher goes.
func (c *conn) run() {
	defer c.s.wg.Done()
	defer c.finish()
	defer c.recoverPanic()
	w := writer{c: c}
	w.loop()
}

// finish tears the connection down and ends the session with the reason
// it stopped.
func (c *conn) finish() {
	c.shutdown()
	c.s.remove(c)
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	if errors.Is(reason, errKicked) {
		reason = nil
	}
	if reason != nil {
		c.log.Info("whip: publisher gone", "reason", reason)
	} else {
		c.log.Info("whip: publish ended")
	}
	c.sess.End(reason)
	close(c.done)
}

// writer is run's state.
type writer struct {
	c          *conn
	ready      bool
	withAudio  bool
	trackWait  bool // TrackWait has passed since connecting
	video      *pipeline.Track
	pending    []unit
	pendingLen int
	lastPLI    time.Time
	pliTimer   *time.Timer
	pliPending bool
}

func (w *writer) loop() {
	c := w.c
	handshake := time.NewTimer(handshakeTimeout)
	defer handshake.Stop()
	select {
	case <-c.connected:
	case <-handshake.C:
		c.stop(fmt.Errorf("%w: not connected within %s", ErrConnection, handshakeTimeout))
		return
	case <-c.ctx.Done():
		return
	}
	c.log.Info("whip: publisher connected")
	trackWait := time.NewTimer(c.s.TrackWait)
	defer trackWait.Stop()
	keyframe := time.NewTimer(c.s.KeyframeTimeout)
	defer keyframe.Stop()
	w.pliTimer = time.NewTimer(time.Hour)
	w.pliTimer.Stop()
	defer w.pliTimer.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case u := <-c.units:
			if err := w.unit(u); err != nil {
				c.stop(err)
				return
			}
		case <-c.pli:
			w.sendPLI(false)
		case <-w.pliTimer.C:
			w.sendPLI(true)
		case <-trackWait.C:
			w.trackWait = true
			c.pickFallbackSource()
			if c.source.Load() == nil {
				c.stop(fmt.Errorf("%w: no video track arrived within %s", ErrNoKeyframe, c.s.TrackWait))
				return
			}
			if err := w.maybeReady(); err != nil {
				c.stop(err)
				return
			}
		case <-keyframe.C:
			if !w.ready {
				c.stop(fmt.Errorf("%w within %s of connecting", ErrNoKeyframe, c.s.KeyframeTimeout))
				return
			}
		}
	}
}

// sendPLI sends a PLI to the source, at most one per PLIInterval: a
// request inside the interval is sent when it ends.
func (w *writer) sendPLI(timer bool) {
	c := w.c
	if timer {
		w.pliPending = false
	}
	src := c.source.Load()
	if src == nil {
		return
	}
	if wait := c.s.PLIInterval - time.Since(w.lastPLI); wait > 0 {
		if !w.pliPending {
			w.pliPending = true
			w.pliTimer.Reset(wait)
		}
		return
	}
	w.lastPLI = time.Now()
	if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(src.SSRC())}}); err != nil {
		c.log.Debug("whip: PLI not sent", "err", err)
	}
}

func (w *writer) unit(u unit) error {
	if w.ready {
		w.write(u)
		return nil
	}
	if !u.video {
		return nil // audio before the tracks are known has no track to go to
	}
	if w.video == nil {
		if !u.keyframe || u.track == nil {
			return nil
		}
		w.video = u.track
	}
	w.pending = append(w.pending, u)
	w.pendingLen += len(u.data)
	if len(w.pending) >= pendingMax || w.pendingLen >= pendingMaxBytes {
		// The audio never came: go without it rather than hold more.
		w.trackWait = true
	}
	return w.maybeReady()
}

// maybeReady announces the tracks once the video is known and the audio
// arrived or will not.
func (w *writer) maybeReady() error {
	c := w.c
	if w.ready || w.video == nil {
		return nil
	}
	audio := c.info.audio && c.audio.Load() != nil
	if !audio && c.info.audio && !w.trackWait {
		return nil
	}
	tracks := []pipeline.Track{*w.video}
	if audio {
		tracks = append(tracks, pipeline.Track{
			Name: "opus", Kind: pipeline.KindAudio, Codec: pipeline.CodecOpus,
			ClockRate: opusRate, SampleRate: opusRate, Channels: 2, Extradata: opusHead(2),
		})
	}
	if err := c.sess.SetTracks(tracks); err != nil {
		return fmt.Errorf("whip: %w", err)
	}
	w.ready, w.withAudio = true, audio
	c.log.Info("whip: publishing", "codec", w.video.Codec, "width", w.video.Width, "height", w.video.Height, "audio", audio)
	for _, u := range w.pending {
		w.write(u)
	}
	w.pending = nil
	return nil
}

func (w *writer) write(u unit) {
	p := &pipeline.Packet{Data: u.data, PTS: u.pts, DTS: u.pts, Keyframe: u.keyframe, Ingest: u.arrival}
	if !u.video {
		if !w.withAudio {
			return
		}
		p.Track, p.Keyframe = 1, true
	}
	w.c.sess.WritePacket(p)
}

// opusHead is the identification header (RFC 7845 §5.1) of a WebRTC Opus
// stream: 48 kHz, no pre-skip, no gain, mapping family 0.
func opusHead(channels byte) []byte {
	return []byte{'O', 'p', 'u', 's', 'H', 'e', 'a', 'd', 1, channels, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0}
}
