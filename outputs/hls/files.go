package hls

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/prism-streaming/prism/pipeline"
)

// serveMedia answers an init file, a segment or a part. A request for the
// part being written (the preload hint) waits here until it is complete;
// gohlslib would wait too, but without noticing a client that went away.
func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, st *stream, rg *rung, file, prefix, partID string) {
	cur, err := s.awaitReady(r.Context(), pipeline.ClientKey(r.RemoteAddr), rg.prog)
	if err != nil {
		waitFailed(w, st, err, fmt.Sprintf("starting, no complete segment yet after %s; retry", s.Config.ReadyTimeout))
		return
	}
	if prefix != cur.prefix {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no file %q: it belongs to an earlier muxer", file))
		return
	}
	if partID != "" {
		id, err := strconv.ParseUint(partID, 10, 64)
		switch {
		case err != nil || id > cur.nextPart:
			httpError(w, http.StatusNotFound, fmt.Sprintf("part %s does not exist yet (the next part is %d)", partID, cur.nextPart))
			return
		case id == cur.nextPart:
			_, err := s.await(r.Context(), pipeline.ClientKey(r.RemoteAddr), rg.prog, st.blockLimit(), func(ps playlistState) bool { return ps.nextPart > id })
			if err != nil {
				waitFailed(w, st, err, fmt.Sprintf("part %d did not arrive in time", id))
				return
			}
		}
	}
	mw := &mediaWriter{ResponseWriter: w}
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: "/" + file}
	rg.muxer.Load().Handle(mw, req)
	if !mw.wrote {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no file %q: not in the playlist window", file))
	}
}

// mediaWriter passes gohlslib's media responses through with Prism's cache
// policy, and turns its failures (a closed muxer) into a clear 404.
type mediaWriter struct {
	http.ResponseWriter
	wrote  bool
	failed bool
}

func (w *mediaWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if code != http.StatusOK {
		w.failed = true
		httpError(w.ResponseWriter, http.StatusNotFound, "stream ended")
		return
	}
	w.Header().Set("Cache-Control", cacheMedia)
	w.ResponseWriter.WriteHeader(code)
}

func (w *mediaWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.failed {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}
