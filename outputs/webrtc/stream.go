package webrtc

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"

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

	// latency: ingest (the source frame entering Prism: the publisher's
	// access unit for a pushed stream) to the frame's last RTP packet
	// handed to a viewer's track, over every viewer.
	latency pipeline.Histogram

	mu       sync.RWMutex
	sessions map[*session]struct{}
	closed   bool
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
		if !st.wanted(p.Track) {
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
