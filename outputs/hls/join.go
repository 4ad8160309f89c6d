package hls

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// holdBackParts is PART-HOLD-BACK in parts, as rewrite writes it.
const holdBackParts = 3

// awaitJoinPoint holds a playlist request without delivery directives (the
// first one a browser player makes: its start comes from it) until the playlist is
// a good place to join: one whose newest IDR is about PART-HOLD-BACK behind
// the live edge. hls.js and Shaka start PART-HOLD-BACK behind the edge but
// must begin with an independent part, so they fetch from the IDR at or
// before that point: answered at any other moment, up to a whole GOP of
// parts more has to be downloaded and demuxed before playback starts, and
// a player that does not catch up (hls.js' defaults) keeps that extra
// start-up time as latency for good. The wait is at most a GOP and a
// PART-HOLD-BACK; a keyframe is asked for when the next GOP boundary is
// further than that (long GOPs). Failing to wait is not an error: the
// playlist is served as it is.
func (s *Server) awaitJoinPoint(ctx context.Context, client string, st *stream, rg *rung, cur playlistState) {
	if cur.joinDistance(holdBackParts) <= 1 {
		return
	}
	if cur.parts > holdBackParts+1 {
		// Past the join window of this GOP: the next one would be a GOP
		// away. A forced IDR (within the job's keyframe budget) is sooner.
		st.job.RequestKeyframe(pipeline.KeyframeHLS)
	}
	limit := time.Second + holdBackParts*s.Config.PartTarget
	if t, ok := st.timing(); ok {
		limit = ticksDuration(t.gop + holdBackParts*t.part)
	}
	_, _ = s.await(ctx, client, rg.prog, limit, func(ps playlistState) bool {
		return ps.joinDistance(holdBackParts) <= 1
	})
}

// browser tells whether the request comes from a web browser, where LL-HLS
// players (hls.js, Shaka, dash.js) run on MSE and start PART-HOLD-BACK
// behind the edge on an independent part: the players awaitJoinPoint is
// for. Other clients (FFmpeg, gohlslib, native players) start elsewhere,
// and one that reloads without directives and follows preload hints would
// only be slowed down by the wait.
func browser(r *http.Request) bool {
	return strings.HasPrefix(r.UserAgent(), "Mozilla/")
}

// joinMemory is how long a client is remembered as playing a playlist:
// longer than any player's reload interval (a target duration or so).
const joinMemory = 30 * time.Second

// maxJoins bounds the clients remembered; when it is full, requests are
// answered at once, as before joins were held.
const maxJoins = 16384

// joinLog remembers which clients (address and User-Agent) have asked for
// which playlist lately, so that only a player's first request is held
// for a join point: players behind one address with one browser share an
// entry, and the second of them is simply answered at once.
type joinLog struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	prune time.Time
}

// first records a request and tells whether it is the first one of this
// client for this playlist within joinMemory.
func (j *joinLog) first(playlist, client, userAgent string, now time.Time) bool {
	key := playlist + "\x00" + client + "\x00" + userAgent
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.seen == nil {
		j.seen = map[string]time.Time{}
	}
	if now.Sub(j.prune) > joinMemory {
		j.prune = now
		for k, t := range j.seen {
			if now.Sub(t) > joinMemory {
				delete(j.seen, k)
			}
		}
	}
	last, ok := j.seen[key]
	if !ok && len(j.seen) >= maxJoins {
		return false
	}
	j.seen[key] = now
	return !ok || now.Sub(last) > joinMemory
}
