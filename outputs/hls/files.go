package hls

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/prism-streaming/prism/pipeline"
)

// serveMedia answers an init file, a segment or a part, named on the
// stream's timeline (timeline.go). A file not complete yet (the preload
// hint, or a segment or part another node behind the same load balancer
// already listed) is waited for here, within the blocking limit; gohlslib
// would wait too, but without noticing a client that went away.
func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, st *stream, rg *rung, stream string, mf mediaFile) {
	client := pipeline.ClientKey(r.RemoteAddr)
	cur, err := s.awaitReady(r.Context(), client, rg.prog)
	if err != nil {
		waitFailed(w, st, err, fmt.Sprintf("starting, no complete segment yet after %s; retry", s.Config.ReadyTimeout))
		return
	}
	if mf.init {
		s.serveFile(w, r, rg, cur.prefix+"_"+stream+"_init.mp4", mf)
		return
	}
	name := segmentName(mf.msn)
	if mf.isPart {
		name = partName(mf.msn, mf.part)
	}
	if tooFar(cur, mf, st.slack()) {
		httpError(w, http.StatusNotFound, fmt.Sprintf("%s does not exist yet (the playlist is at segment %d part %d)", name, cur.nextMSN, cur.parts))
		return
	}
	if !complete(cur, mf) {
		cur, err = s.await(r.Context(), client, rg.prog, st.blockLimit(), func(ps playlistState) bool { return complete(ps, mf) })
		if err != nil {
			waitFailed(w, st, err, fmt.Sprintf("%s did not arrive in time", name))
			return
		}
	}
	file := gohlsSegment(cur.prefix, stream, mf.msn, cur.delta)
	if mf.isPart {
		id, ok := cur.partID(mf.msn, mf.part)
		if !ok {
			httpError(w, http.StatusNotFound, fmt.Sprintf("no file %q: not in the playlist window", name))
			return
		}
		file = fmt.Sprintf("%s_%s_part%d.mp4", cur.prefix, stream, id)
	}
	s.serveFile(w, r, rg, file, mf)
}

// tooFar tells whether f lies further ahead than a blocking request may
// wait for: the next segment, or a part within the LL-HLS limits for
// playlists (tooFarAhead), with slack segments more.
func tooFar(s playlistState, f mediaFile, slack int) bool {
	if !f.isPart {
		return f.msn > s.nextMSN+slack
	}
	return tooFarAhead(s, f.msn, f.part, slack)
}

// tooFarAhead tells whether part part of segment msn lies further ahead
// than LL-HLS lets a blocking playlist request wait for (one segment, or
// Advance Part Limit parts, past the part being written), with slack
// segments more. A node behind a load balancer shared with other nodes of
// the same timeline is given a segment of slack: the player's last
// playlist may have come from a node a segment ahead of this one, and
// this node will get there within the blocking limit.
func tooFarAhead(s playlistState, msn, part, slack int) bool {
	if slack > 0 {
		last := s.nextMSN + 1 + slack
		return msn > last || (msn == last && part > advancePartLimit)
	}
	return msn > s.nextMSN+1 ||
		(msn == s.nextMSN+1 && part > advancePartLimit) ||
		(msn == s.nextMSN && part > s.parts+advancePartLimit)
}

// complete tells whether file f is complete in state s (or was: it may have
// left the window).
func complete(s playlistState, f mediaFile) bool {
	if !f.isPart {
		return f.msn < s.nextMSN
	}
	return f.msn < s.nextMSN || (f.msn == s.nextMSN && f.part < s.parts)
}

// serveFile answers gohlslib's file with Prism's cache policy, its movie
// fragments renumbered for the timeline, or a clear 404.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, rg *rung, file string, mf mediaFile) {
	res := newMemWriter()
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: "/" + file}
	req.Method = http.MethodGet
	rg.muxer.Load().Handle(res, req)
	if res.status() != http.StatusOK {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no file %q: not in the playlist window", file))
		return
	}
	body := res.body.Bytes()
	if !mf.init {
		renumberFragments(body, mf.msn, mf.part)
	}
	ct := res.header.Get("Content-Type")
	if ct == "" {
		ct = "video/mp4"
	}
	writeBody(w, ct, cacheMedia, body)
}
