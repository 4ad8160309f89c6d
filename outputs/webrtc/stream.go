package webrtc

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// streamReaderBuffer is the stream reader's buffer in the job's fan-out. The
// reader only packetizes and hands units to viewer queues without waiting,
// so it keeps up; the room covers scheduling hiccups.
const streamReaderBuffer = 4096

// rung is one video rendition as the WebRTC output sees it.
type rung struct {
	track pipeline.Track
	need  int // bits/s a viewer needs for it: video + audio bitrate
}

// stream serves one running job to its WHEP viewers: one reader of the job,
// each rung packetized once, units handed to every interested viewer's
// queue. The goroutine running run owns the packetizer; the Server owns the
// goroutine (it stops when the job ends, the stream is removed or the
// server closes).
type stream struct {
	name  string
	job   pipeline.Source
	log   *slog.Logger
	rungs []rung // best first
	opus  *pipeline.Track
	kf    *keyframeLimiter
	pk    *packetizer
	h264  *h264Params

	reader *pipeline.Reader
	cancel context.CancelFunc
	done   chan struct{}

	// events: each event's message, encoded once for all the stream's
	// viewers (events.go).
	events eventCache

	// latency: ingest (the source frame entering Prism: the publisher's
	// access unit for a pushed stream) to the frame's last RTP packet
	// handed to a viewer's track, over every viewer.
	latency pipeline.Histogram

	mu       sync.RWMutex
	sessions map[*session]struct{}
	closed   bool

	// starts: per rung, the units since its most recent keyframe, for
	// viewers that connect soon after it (see startCache). Written only by
	// the goroutine running run, with mu held (read-locked, inside
	// dispatch); read by activate with mu held exclusively.
	starts []startCache
	// keyOnJoin is Config.KeyframeOnJoin; joinAsked (UnixNano) is when a
	// joining viewer last asked for an IDR.
	keyOnJoin bool
	joinAsked atomic.Int64
	// How viewers started: on a cached keyframe, or waiting for the next.
	startedCached, startedWaiting atomic.Uint64
}

func newStream(name string, job pipeline.Source, cfg *Config, log *slog.Logger) *stream {
	st := &stream{name: name, job: job, log: log.With("stream", name),
		sessions: map[*session]struct{}{}, done: make(chan struct{})}
	var videos []pipeline.Track
	for _, tr := range job.Tracks() {
		switch {
		case tr.Kind == pipeline.KindVideo && tr.Codec == pipeline.CodecH264:
			videos = append(videos, tr)
		case tr.Kind == pipeline.KindAudio && tr.Codec == pipeline.CodecOpus && st.opus == nil:
			st.opus = &tr
		}
	}
	// Best first, whatever order the ladder listed them in.
	sort.SliceStable(videos, func(i, j int) bool {
		if videos[i].Bitrate != videos[j].Bitrate {
			return videos[i].Bitrate > videos[j].Bitrate
		}
		return videos[i].Height > videos[j].Height
	})
	audioBPS := 0
	if st.opus != nil {
		audioBPS = int(st.opus.Bitrate)
	}
	rungOf := map[int]int{}
	ids := make([]int, 0, len(videos)+1)
	for i, tr := range videos {
		st.rungs = append(st.rungs, rung{track: tr, need: int(tr.Bitrate) + audioBPS})
		rungOf[tr.ID] = i
		ids = append(ids, tr.ID)
	}
	if st.opus != nil {
		ids = append(ids, st.opus.ID)
	}
	st.starts = make([]startCache, len(videos))
	st.keyOnJoin = cfg.KeyframeOnJoin
	st.h264 = newH264Params(videos)
	st.pk = newPacketizer(rungOf, len(videos), st.opus)
	st.kf = newKeyframeLimiter(job.RequestKeyframe, cfg.KeyframeMinInterval)
	st.reader = job.Subscribe(
		pipeline.WithTracks(ids...),
		pipeline.WithBufferSize(streamReaderBuffer),
		pipeline.WithName("webrtc:"+name),
		// The reader lost frames: every viewer now waits for an IDR.
		pipeline.WithKeyframeRequest(func(int) { st.kf.request(keyReasonDrop) }),
	)
	return st
}

// needs returns what each rung needs, best first.
func (st *stream) needs() []int {
	n := make([]int, len(st.rungs))
	for i, r := range st.rungs {
		n[i] = r.need
	}
	return n
}

// rungIndex finds a rung by name.
func (st *stream) rungIndex(name string) (int, bool) {
	for i, r := range st.rungs {
		if r.track.Name == name {
			return i, true
		}
	}
	return 0, false
}

func (st *stream) rungNames() []string {
	names := make([]string, len(st.rungs))
	for i, r := range st.rungs {
		names[i] = r.track.Name
	}
	return names
}

// run reads the job until it ends or ctx is cancelled, then ends every
// session of the stream.
func (st *stream) run(ctx context.Context) {
	defer close(st.done)
	defer st.reader.Close()
	defer st.kf.stop()
	for {
		p, err := st.reader.Read(ctx)
		if err != nil {
			if !errors.Is(err, pipeline.ErrClosed) && !errors.Is(err, context.Canceled) {
				st.log.Warn("webrtc: stream reader stopped", "err", err)
			}
			break
		}
		if _, ok := st.pk.rungOf[p.Track]; ok && p.Keyframe {
			st.h264.observe(st.pk.rungOf[p.Track], p.Data)
		}
		if !st.wanted(p.Track) && !st.caches(p) {
			continue // no viewer would forward it: do not packetize it
		}
		if u := st.pk.packetize(p); u != nil {
			st.dispatch(u)
		}
	}
	st.mu.Lock()
	st.closed = true
	sessions := make([]*session, 0, len(st.sessions))
	for s := range st.sessions {
		sessions = append(sessions, s)
	}
	st.mu.Unlock()
	for _, s := range sessions {
		s.close(endStreamEnded)
	}
}

// dispatch hands u to every viewer that needs it. It never waits: a viewer
// whose queue is full loses the unit (and, for video, asks for an IDR).
// wanted reports whether any active viewer takes packets of a track (for a
// rung: that it watches it or is switching to it), the same test dispatch
// applies. Packetizing every rung of every stream for nobody would cost CPU
// on each packet; a viewer that starts wanting a rung waits for its IDR
// anyway.
func (st *stream) wanted(track int) bool {
	rung, video := st.pk.rungOf[track]
	st.mu.RLock()
	defer st.mu.RUnlock()
	for s := range st.sessions {
		if s.active.Load() && (!video || s.interest.Load()&(1<<uint(rung)) != 0) {
			return true
		}
	}
	return false
}

func (st *stream) dispatch(u *unit) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	st.remember(u) // under mu: activate finds every unit cached or dispatched, exactly once
	for s := range st.sessions {
		if !s.active.Load() {
			continue
		}
		if u.video && s.interest.Load()&(1<<uint(u.rung)) == 0 {
			continue
		}
		if s.queue.push(u) {
			st.kf.request(keyReasonDrop)
		}
	}
}

// add registers a session; it fails once the stream has ended.
func (st *stream) add(s *session) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	st.sessions[s] = struct{}{}
	return true
}

func (st *stream) remove(s *session) {
	st.mu.Lock()
	delete(st.sessions, s)
	st.mu.Unlock()
}

func (st *stream) stats() StreamStats {
	st.mu.RLock()
	n := len(st.sessions)
	st.mu.RUnlock()
	return StreamStats{Name: st.name, Rungs: st.rungNames(), Viewers: n,
		Dropped: st.reader.Dropped(), Keyframes: st.kf.stats()}
}

// A viewer that connects shortly after a keyframe of its rung starts on it:
// the stream keeps, per rung, the units since the rung's most recent
// keyframe (startCache) and pre-queues them when the viewer becomes active.
// The burst starts the viewer as far behind the live edge as the keyframe is
// old, so only a young one is served; with an older one the viewer waits for
// the next IDR (the join IDR asked for at the POST, budgeted).
//
// 300 ms, by measurement (README, "Joining"): the join IDR reaches the
// stream 20–40 ms after the POST in-process and 40–260 ms after from a
// loaded worker over NATS, and Chromium connects 30–200 ms after the POST,
// so at connect it is typically 0–150 ms old or still coming; 300 ms covers
// slow connects and stays below what a viewer notices as delay, where a
// fresh IDR would cost another round trip to the encoder.
const (
	startCacheMaxAge = 300 * time.Millisecond
	// startCacheMaxUnits bounds the memory of one rung's cache whatever the
	// frame rate: 300 ms at 60 fps is 18 frames.
	startCacheMaxUnits = 32
)

// keyReasonJoinLate: the IDR a viewer asks for when it connects after
// the one its POST asked for went by. It counts as a join in the job's
// budget (whose reasons are a closed set); startedWaiting tells them apart.
const keyReasonJoinLate = keyReasonJoin

// startCache is one rung's units since its most recent keyframe, while that
// keyframe is younger than startCacheMaxAge.
type startCache struct {
	keyAt time.Time // when the rung's most recent keyframe reached the stream
	units []*unit   // from that keyframe on; nil once too old or too many
	// (on a rung nobody watches, up to startCacheMaxUnits stay until its
	// next keyframe: its frames are no longer packetized to notice)
}

// caches reports whether the start cache takes p: a keyframe of a rung, or
// the frames after one while it is young. The stream packetizes these even
// when no viewer watches the rung, so a viewer joining on it can start at
// once. Called by run.
func (st *stream) caches(p *pipeline.Packet) bool {
	r, ok := st.pk.rungOf[p.Track]
	if !ok {
		return false
	}
	c := &st.starts[r]
	return p.Keyframe || (c.units != nil && time.Since(c.keyAt) <= startCacheMaxAge && len(c.units) < startCacheMaxUnits)
}

// remember adds a video unit to its rung's start cache: a keyframe restarts
// it, later frames extend it while it is young and small enough. Called by
// run (through dispatch) with mu read-locked.
func (st *stream) remember(u *unit) {
	if !u.video {
		return
	}
	c := &st.starts[u.rung]
	now := time.Now()
	switch {
	case u.keyframe:
		clear(c.units)
		c.units = append(c.units[:0], u)
		c.keyAt = now
	case c.units == nil:
	case now.Sub(c.keyAt) > startCacheMaxAge || len(c.units) >= startCacheMaxUnits:
		clear(c.units)
		c.units = nil // no longer a place to start: free the frames
	default:
		c.units = append(c.units, u)
	}
}

// askJoinKeyframe asks for an IDR for a viewer whose offer was just
// answered: it is produced while ICE and DTLS run, so that the viewer finds
// it in the start cache when it connects.
func (st *stream) askJoinKeyframe() {
	if !st.keyOnJoin {
		return
	}
	st.joinAsked.Store(time.Now().UnixNano())
	st.kf.request(keyReasonJoin)
}

// activate starts media for a viewer that connected: audio from the next
// packet on, video from the start cache of its rung when that keyframe is
// young, else from the rung's next IDR. It holds mu exclusively, so every
// unit reaches the viewer once: pre-queued here, or dispatched after. Later
// calls (a reconnect) change nothing.
func (st *stream) activate(s *session) {
	m := s.interest.Load()
	rung := bits.TrailingZeros64(m) // before its first frame a viewer wants one rung
	st.mu.Lock()
	if !s.active.CompareAndSwap(false, true) {
		st.mu.Unlock()
		return
	}
	var c startCache
	if bits.OnesCount64(m) == 1 && rung < len(st.starts) {
		c = st.starts[rung]
	}
	age := time.Since(c.keyAt)
	cached := c.units != nil && age <= startCacheMaxAge
	if cached {
		for _, u := range c.units {
			s.queue.push(u)
		}
	}
	st.mu.Unlock()

	if cached {
		st.startedCached.Add(1)
		s.log.Debug("webrtc: viewer starts on a cached keyframe", "age", age, "frames", len(c.units))
		return
	}
	st.startedWaiting.Add(1)
	// Ask again only if the keyframe asked for at the POST has come and
	// gone; one still on its way will do.
	late := st.keyOnJoin && !c.keyAt.IsZero() && c.keyAt.UnixNano() >= st.joinAsked.Load()
	s.log.Debug("webrtc: viewer waits for the next keyframe", "last_keyframe_age", age, "ask", late)
	if late {
		st.kf.request(keyReasonJoinLate)
	}
}
