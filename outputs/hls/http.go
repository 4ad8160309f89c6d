package hls

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

const (
	mountPrefix  = "/hls/"
	maxPathBytes = 512

	contentTypePlaylist = "application/vnd.apple.mpegurl"
	// Playlists change with every part; media files never change under
	// their name (numbered on the stream's timeline, under the epoch).
	cachePlaylist = "no-cache"
	cacheMedia    = "public, max-age=31536000, immutable"
	cacheError    = "no-store"
)

var (
	epochRE = regexp.MustCompile(`^[0-9a-f]{8}$`)
	// The media playlists gohlslib serves for a muxer's streams; the
	// other files are named on the stream's timeline (timeline.go).
	playlistRE = regexp.MustCompile(`^(video1|audio2)_stream\.m3u8$`)
)

var (
	errBusy       = errors.New("too many requests waiting")
	errClientBusy = fmt.Errorf("%w from this client", errBusy)
)

// route is a parsed request path.
type route struct {
	stream string
	index  bool   // /hls/<stream>/index.m3u8
	epoch  string // the rest: /hls/<stream>/<epoch>/<dir>/<file>
	dir    string
	file   string
}

// ServeHTTP answers /hls/<stream>/index.m3u8 and the files below it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	allowed := s.cors(w, r)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		s.preflight(w, r, allowed)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		httpError(w, http.StatusMethodNotAllowed, "method not allowed: use GET or HEAD")
		return
	}
	rt, code, msg := parsePath(r)
	if code != 0 {
		httpError(w, code, msg)
		return
	}
	st, err := s.follow(r.Context(), rt.stream)
	if err != nil {
		switch {
		case errors.Is(err, pipeline.ErrStreamUnknown):
			httpError(w, http.StatusNotFound, fmt.Sprintf("unknown stream %q", rt.stream))
		case r.Context().Err() == nil:
			w.Header().Set("Retry-After", "1")
			httpError(w, http.StatusServiceUnavailable, fmt.Sprintf("stream %q: not followed by this node within %s; retry", rt.stream, pipeline.FollowWait))
		}
		return
	}
	// A request that waits (the first playlist until every rung has a
	// segment, a blocking reload) keeps the stream followed meanwhile,
	// however long it waits: node.follow_idle counts from its end.
	defer s.Streams.Use(rt.stream)()
	if rt.index {
		s.serveIndex(w, r, st)
		return
	}
	if rt.epoch != st.epoch {
		httpError(w, http.StatusNotFound, fmt.Sprintf("stream %q was restarted: reload %sindex.m3u8", st.name, mountPrefix+st.name+"/"))
		return
	}
	// The audio rendition lives in the muxer of the host rung.
	var rg *rung
	stream := "video1"
	if rt.dir == audioDir {
		rg, stream = st.host, "audio2"
	} else {
		rg = st.rung(rt.dir)
	}
	if rg == nil {
		httpError(w, http.StatusNotFound, fmt.Sprintf("stream %q has no rendition %q", st.name, rt.dir))
		return
	}
	if m := playlistRE.FindStringSubmatch(rt.file); m != nil && m[1] == stream {
		s.serveMediaPlaylist(w, r, st, rg, rt.file)
		return
	}
	if mf, ok := parseMediaFile(rt.file); ok {
		s.serveMedia(w, r, st, rg, stream, mf)
		return
	}
	httpError(w, http.StatusNotFound, fmt.Sprintf("no file %q in %s/%s", rt.file, st.name, rt.dir))
}

// follow returns the stream of a request and records the use in the
// registry, which keeps the stream followed on this node (every request
// counts, so a player keeps it until it stops). A stream that runs but is
// not followed here is asked for and waited for, at most
// pipeline.FollowWait: the first request of a player is answered late
// rather than with an error that makes it give up. A stream that does not
// run is pipeline.ErrStreamUnknown at once.
func (s *Server) follow(ctx context.Context, name string) (*stream, error) {
	wctx, cancel := context.WithTimeout(ctx, pipeline.FollowWait)
	defer cancel()
	if _, err := s.Streams.Await(wctx, name, pipeline.OutputHLS); err != nil {
		return nil, err
	}
	if st := s.stream(name); st != nil {
		return st, nil
	}
	return nil, fmt.Errorf("%w: %s", pipeline.ErrStreamUnknown, name) // not served (no H.264 rung)
}

// parsePath splits /hls/<stream>/index.m3u8 and
// /hls/<stream>/<epoch>/<dir>/<file>. Paths are matched against names held
// in memory only (gohlslib keeps media in RAM), but anything that looks
// like traversal is refused outright: a 400 makes probing visible in logs.
func parsePath(r *http.Request) (rt route, code int, msg string) {
	p, raw := r.URL.Path, r.URL.EscapedPath()
	if len(raw) > maxPathBytes {
		return rt, http.StatusBadRequest, "path too long"
	}
	lraw := strings.ToLower(raw)
	if strings.ContainsAny(p, "\\\x00") || strings.Contains(lraw, "%2f") || strings.Contains(lraw, "%5c") {
		return rt, http.StatusBadRequest, "bad path"
	}
	if !strings.HasPrefix(p, mountPrefix) {
		return rt, http.StatusNotFound, "not an HLS path: use " + mountPrefix + "<stream>/index.m3u8"
	}
	parts := strings.Split(p[len(mountPrefix):], "/")
	for _, part := range parts {
		if part == "." || part == ".." {
			return rt, http.StatusBadRequest, "bad path"
		}
	}
	rt.stream = parts[0]
	if pipeline.ValidStreamName(rt.stream) != nil {
		return rt, http.StatusNotFound, fmt.Sprintf("unknown stream %q", rt.stream)
	}
	switch {
	case len(parts) == 2 && parts[1] == "index.m3u8":
		rt.index = true
	case len(parts) == 4 && epochRE.MatchString(parts[1]) && parts[2] != "" && parts[3] != "":
		rt.epoch, rt.dir, rt.file = parts[1], parts[2], parts[3]
	default:
		return rt, http.StatusNotFound, fmt.Sprintf("no such file: %s (the stream's playlist is %s%s/index.m3u8)", p, mountPrefix, rt.stream)
	}
	return rt, 0, ""
}

// cors sets the CORS headers for an allowed Origin and tells whether the
// origin is allowed (requests without Origin are not cross-origin).
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	h := w.Header()
	for _, o := range s.Config.CORSOrigins {
		if o == "*" {
			h.Set("Access-Control-Allow-Origin", "*")
			return true
		}
		if o == origin {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			return true
		}
	}
	h.Add("Vary", "Origin")
	return false
}

func (s *Server) preflight(w http.ResponseWriter, r *http.Request, allowed bool) {
	h := w.Header()
	h.Set("Allow", "GET, HEAD, OPTIONS")
	if r.Header.Get("Origin") == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		w.WriteHeader(http.StatusNoContent) // plain OPTIONS
		return
	}
	if !allowed {
		httpError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" && tokenListRE.MatchString(req) {
		h.Set("Access-Control-Allow-Headers", req)
	}
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// tokenListRE matches a comma-separated list of header names, the only
// thing echoed back from a preflight request.
var tokenListRE = regexp.MustCompile(`^[A-Za-z0-9-]+( *, *[A-Za-z0-9-]+)*$`)

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Cache-Control", cacheError)
	http.Error(w, msg, code)
}

// await waits until cond holds for prog, at most limit, holding one of the
// server's blocking slots and one of the client's meanwhile (client is a
// clientKey). It returns at once when cond already holds, and as soon as
// the client goes away or the stream ends.
func (s *Server) await(ctx context.Context, client string, prog *progress, limit time.Duration, cond func(playlistState) bool) (playlistState, error) {
	if st, ended := prog.get(); ended {
		return st, errEnded
	} else if cond(st) {
		return st, nil
	}
	// The client's cap first: a client over it does not even briefly take
	// one of the slots the others share.
	if !s.holdClientSlot(client) {
		return playlistState{}, errClientBusy
	}
	defer s.dropClientSlot(client)
	select {
	case s.blocking <- struct{}{}:
	default:
		return playlistState{}, errBusy
	}
	defer func() { <-s.blocking }()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	st, err := prog.wait(ctx, timer.C, cond)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		s.abandoned.Add(1)
	}
	return st, err
}

// awaitReady waits for the first segment of prog, at most ReadyTimeout.
func (s *Server) awaitReady(ctx context.Context, client string, prog *progress) (playlistState, error) {
	return s.await(ctx, client, prog, s.Config.ReadyTimeout, func(st playlistState) bool { return st.ready })
}

// waitFailed answers a request whose wait did not succeed, except when the
// client went away (nobody to answer).
func waitFailed(w http.ResponseWriter, st *stream, err error, what string) {
	switch {
	case errors.Is(err, errEnded):
		httpError(w, http.StatusNotFound, fmt.Sprintf("stream %q ended", st.name))
	case errors.Is(err, errClientBusy):
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "too many requests from this address waiting for media (hls.max_blocking_per_client); retry")
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "too many requests waiting for media; retry")
	case errors.Is(err, errTimeout):
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, fmt.Sprintf("stream %q: %s", st.name, what))
	}
}

// serveIndex answers the multivariant playlist once every rung has a
// complete segment, so that every playlist it lists can be played at once.
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request, st *stream) {
	deadline := time.Now().Add(s.Config.ReadyTimeout)
	for _, rg := range st.rungs {
		ctx, cancel := context.WithDeadline(r.Context(), deadline)
		_, err := s.awaitReady(ctx, pipeline.ClientKey(r.RemoteAddr), rg.prog)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			err = errTimeout
		}
		if err != nil {
			waitFailed(w, st, err, fmt.Sprintf("starting, no complete segment yet after %s; retry", s.Config.ReadyTimeout))
			return
		}
	}
	body, err := st.multivariant()
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if token := tokenOf(r.URL.Query()); token != "" {
		body = withToken(body, token)
	}
	writeBody(w, contentTypePlaylist, cachePlaylist, body)
}

func writeBody(w http.ResponseWriter, contentType, cache string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cache)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
