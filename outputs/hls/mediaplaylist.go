package hls

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/pipeline"
)

// advancePartLimit is how many parts past the last one a blocking request
// may ask for before it is refused (LL-HLS "Advance Part Limit").
const advancePartLimit = 3

// directives are the LL-HLS delivery directives of a playlist request.
type directives struct {
	msn, part int
	hasMSN    bool
	skip      bool // _HLS_skip: a delta update, so not a player's first request
}

func parseDirectives(r *http.Request) (d directives, err error) {
	q := r.URL.Query()
	num := func(key string) (int, bool, error) {
		v, ok := q[key]
		if !ok {
			return 0, false, nil
		}
		if len(v) != 1 {
			return 0, false, fmt.Errorf("%s given %d times", key, len(v))
		}
		// 31 bits: media sequence numbers are ints in playlists.
		n, err := strconv.ParseUint(v[0], 10, 31)
		if err != nil {
			return 0, false, fmt.Errorf("%s=%q: must be a non-negative integer", key, v[0])
		}
		return int(n), true, nil
	}
	var hasPart bool
	if d.msn, d.hasMSN, err = num("_HLS_msn"); err != nil {
		return d, err
	}
	if d.part, hasPart, err = num("_HLS_part"); err != nil {
		return d, err
	}
	if hasPart && !d.hasMSN {
		return d, errors.New("_HLS_part needs _HLS_msn")
	}
	if v, ok := q["_HLS_skip"]; ok {
		if len(v) != 1 || (v[0] != "YES" && v[0] != "v2") {
			return d, fmt.Errorf("_HLS_skip=%q: must be YES or v2", q.Get("_HLS_skip"))
		}
		d.skip = true
	}
	return d, nil
}

// serveMediaPlaylist answers a rung's or the audio rendition's media
// playlist. Blocking reload is done here, with the client's context and a
// time limit; gohlslib is asked only once the playlist it will produce is
// known to exist, so it never blocks.
func (s *Server) serveMediaPlaylist(w http.ResponseWriter, r *http.Request, st *stream, rg *rung, file string) {
	d, err := parseDirectives(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	client := pipeline.ClientKey(r.RemoteAddr)
	cur, err := s.awaitReady(r.Context(), client, rg.prog)
	if err != nil {
		waitFailed(w, st, err, fmt.Sprintf("starting, no complete segment yet after %s; retry", s.Config.ReadyTimeout))
		return
	}
	if !d.hasMSN && !d.skip && browser(r) && s.joins.first(st.epoch+"/"+rg.name+"/"+file, client, r.UserAgent(), time.Now()) {
		// A browser player's first look at this playlist: it picks its
		// start from it. (A delta update, _HLS_skip, needs an earlier
		// playlist; later plain reloads are answered at once.)
		s.awaitJoinPoint(r.Context(), client, st, rg, cur)
	} else if d.hasMSN {
		// Refuse at once what cannot come soon (LL-HLS: more than one
		// segment or Advance Part Limit parts ahead) or never will.
		switch {
		case tooFarAhead(cur, d.msn, d.part, st.slack()):
			httpError(w, http.StatusBadRequest, fmt.Sprintf("_HLS_msn=%d _HLS_part=%d is too far ahead: the playlist is at segment %d part %d", d.msn, d.part, cur.nextMSN, cur.parts))
			return
		case d.msn < cur.firstMSN:
			httpError(w, http.StatusBadRequest, fmt.Sprintf("_HLS_msn=%d is not in the playlist, which starts at segment %d", d.msn, cur.firstMSN))
			return
		}
		_, err := s.await(r.Context(), client, rg.prog, st.blockLimit(), func(ps playlistState) bool { return ps.hasPart(d.msn, d.part) })
		if err != nil {
			waitFailed(w, st, err, fmt.Sprintf("segment %d part %d did not arrive in time", d.msn, d.part))
			return
		}
	}
	m := rg.muxer.Load()
	query := r.URL.Query()
	token := tokenOf(query)
	query.Del(TokenParam) // gohlslib sees only the LL-HLS directives
	if d.hasMSN {
		query.Set("_HLS_msn", strconv.Itoa(d.msn-cur.delta)) // in gohlslib's numbers
	}
	res, err := fetchPlaylist(m, file, query.Encode())
	switch {
	case err == nil:
	case res.status() == http.StatusBadRequest:
		// gohlslib rechecks the window, which may have moved on meanwhile.
		httpError(w, http.StatusBadRequest, fmt.Sprintf("_HLS_msn=%d is no longer in the playlist", d.msn))
		return
	default:
		httpError(w, http.StatusNotFound, fmt.Sprintf("stream %q ended", st.name))
		return
	}
	body, err := st.rewrite(res.body.Bytes(), rg, file == audioPlaylist, cur.delta)
	if err != nil {
		st.log.Warn("hls: cannot rewrite gohlslib's playlist; serving it as is", "error", err)
		body = res.body.Bytes()
	}
	if token != "" {
		body = withToken(body, token)
	}
	writeBody(w, contentTypePlaylist, cachePlaylist, body)
}

// rewrite fixes up a media playlist produced by gohlslib:
//   - its numbers and file names become the stream's timeline's (retime);
//   - PART-HOLD-BACK becomes 3 part targets (gohlslib writes 2.5, below the
//     3 the LL-HLS spec recommends; players that honour it stall less);
//   - EXT-X-RENDITION-REPORT tags give every other rendition's last segment
//     and part (the other rungs and the audio on a rung's playlist, every
//     rung on the audio's), so that a player switching can issue its first
//     blocking request on the new rendition right away (gohlslib writes
//     none: it knows only its own muxer);
//   - INDEPENDENT=YES is kept only on parts that start with an IDR: gohlslib
//     marks any part that contains one, and a forced IDR (a WebRTC viewer
//     joining) lands mid-part, where a player starting on it would decode
//     the frames before it without their references;
//   - EXT-X-DATERANGE tags carry the stream's timed events (daterange.go).
func (st *stream) rewrite(body []byte, self *rung, audio bool, delta int) ([]byte, error) {
	var pl playlist.Media
	if err := pl.Unmarshal(body); err != nil {
		return nil, err
	}
	if pl.ServerControl != nil && pl.PartInf != nil {
		hold := 3 * pl.PartInf.PartTarget
		pl.ServerControl.PartHoldBack = &hold
	}
	if !audio {
		if m := self.muxer.Load(); m != nil {
			for _, seg := range pl.Segments {
				self.independence(m, seg.Parts)
			}
			self.independence(m, pl.Parts)
		}
	}
	// From here on the playlist is in the stream's numbers and names.
	retime(&pl, delta)
	st.discont.mark(&pl)
	for _, o := range st.rungs {
		if o == self && !audio {
			continue
		}
		if rep, ok := o.report(videoPlaylist, o.name); ok {
			pl.RenditionReport = append(pl.RenditionReport, rep)
		}
	}
	if st.host != nil && !audio {
		// The audio is cut with the host rung's video: same numbers.
		if rep, ok := st.host.report(audioPlaylist, audioDir); ok {
			pl.RenditionReport = append(pl.RenditionReport, rep)
		}
	}
	out, err := pl.Marshal()
	if err != nil {
		return nil, err
	}
	out = st.discont.markTail(out, &pl)
	if first, ok := firstPDT(&pl); ok {
		out = withDateRanges(out, st.events.tags(first))
	}
	return out, nil
}

// firstPDT is the PROGRAM-DATE-TIME where the playlist's window starts;
// in a delta update the skipped segments are counted at the target
// duration, an upper bound, so that no event still in the window is left
// out.
// Segments before the first with a PROGRAM-DATE-TIME (gap fillers) are
// counted at their EXTINF.
func firstPDT(pl *playlist.Media) (time.Time, bool) {
	var first time.Time
	var before time.Duration
	for _, s := range pl.Segments {
		if s.DateTime != nil {
			first = s.DateTime.Add(-before)
			break
		}
		before += s.Duration
	}
	if first.IsZero() {
		return time.Time{}, false
	}
	if pl.Skip != nil {
		first = first.Add(-time.Duration(pl.Skip.SkippedSegments*pl.TargetDuration) * time.Second)
	}
	return first, true
}

// report is the EXT-X-RENDITION-REPORT of the rendition file in folder dir
// that rides on the rung's muxer, relative to a sibling's playlist.
func (r *rung) report(file, dir string) (*playlist.MediaRenditionReport, bool) {
	s, ended := r.prog.get()
	if ended || !s.ready {
		return nil, false
	}
	msn, part := s.nextMSN, s.parts-1
	if s.parts == 0 {
		msn, part = s.nextMSN-1, s.lastSegParts-1
	}
	if part < 0 {
		return nil, false
	}
	return &playlist.MediaRenditionReport{URI: "../" + dir + "/" + file, LastMSN: msn, LastPart: &part}, true
}
