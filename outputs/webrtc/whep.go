package webrtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"
)

// maxOfferBytes caps a WHEP POST or PATCH body. Browser offers are 3–10 KB.
const maxOfferBytes = 64 << 10

const (
	mimeSDP        = "application/sdp"
	mimeTrickleICE = "application/trickle-ice-sdpfrag"
)

// ServeHTTP implements WHEP (draft-ietf-wish-whep, on the WHIP model of
// RFC 9725). Mount it under "/whep/":
//
//	POST    /whep/<stream>[?rung=<name>]  offer -> 201 answer, Location, ETag, Link
//	PATCH   /whep/<stream>/<session>      trickle ICE candidates -> 204
//	DELETE  /whep/<stream>/<session>      end the session -> 200
//	OPTIONS either                        CORS preflight -> 204
//
// Other methods get 405, unknown streams and sessions 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.cors(w)
	name, id := splitWHEPPath(r.URL.Path)
	if name == "" {
		http.Error(w, "no stream in the path: use /whep/<stream>", http.StatusNotFound)
		return
	}
	if id == "" {
		switch r.Method {
		case http.MethodOptions:
			w.Header().Set("Allow", "OPTIONS, POST")
			w.Header().Set("Accept-Post", mimeSDP)
			w.WriteHeader(http.StatusNoContent)
		case http.MethodPost:
			s.post(w, r, name)
		default:
			w.Header().Set("Allow", "OPTIONS, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
		return
	}
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Allow", "OPTIONS, PATCH, DELETE")
		w.Header().Set("Accept-Patch", mimeTrickleICE)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		s.patch(w, r, name, id)
	case http.MethodDelete:
		s.delete(w, name, id)
	default:
		w.Header().Set("Allow", "OPTIONS, PATCH, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// splitWHEPPath returns the stream and session of /…/whep/<stream>[/<session>],
// wherever the handler is mounted.
func splitWHEPPath(path string) (stream, session string) {
	if i := strings.LastIndex(path, "/whep/"); i >= 0 {
		path = path[i+len("/whep/"):]
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch len(parts) {
	case 1:
		return parts[0], ""
	case 2:
		return parts[0], parts[1]
	}
	return "", ""
}

func (s *Server) cors(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", s.Config.AllowOrigin)
	h.Set("Access-Control-Allow-Methods", "OPTIONS, POST, PATCH, DELETE")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch, Accept-Post")
}

func (s *Server) post(w http.ResponseWriter, r *http.Request, name string) {
	if !hasContentType(r, mimeSDP) {
		s.fail(w, "content_type", http.StatusUnsupportedMediaType, "Content-Type must be "+mimeSDP)
		return
	}
	st, err := s.stream(name)
	if err != nil {
		s.failErr(w, err)
		return
	}
	pin := -1
	if rungName := r.URL.Query().Get("rung"); rungName != "" && rungName != pinAuto {
		i, ok := st.rungIndex(rungName)
		if !ok {
			s.failErr(w, fmt.Errorf("%w %q: the stream has %v", ErrUnknownRung, rungName, st.rungNames()))
			return
		}
		pin = i
	}
	// Take a slot before reading the body or building anything: a burst of
	// offers beyond max_sessions costs a header check each.
	if err := s.reserve(); err != nil {
		w.Header().Set("Retry-After", "5")
		s.failErr(w, err)
		return
	}
	reserved := true
	defer func() {
		if reserved {
			s.release()
		}
	}()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOfferBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			s.fail(w, "too_large", http.StatusRequestEntityTooLarge, fmt.Sprintf("offer larger than %d bytes", maxOfferBytes))
			return
		}
		s.fail(w, "bad_offer", http.StatusBadRequest, "reading the offer: "+err.Error())
		return
	}
	info, err := inspectOffer(string(body))
	if err != nil {
		s.failErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	sess, err := s.newSession(ctx, st, string(body), info, pin)
	if err != nil {
		s.failErr(w, err)
		return
	}
	reserved = false
	if err := s.admit(sess); err != nil {
		sess.cancel()
		_ = sess.pc.Close()
		s.failErr(w, err)
		return
	}
	s.counters.accept()
	h := w.Header()
	h.Set("Content-Type", mimeSDP)
	h.Set("Location", strings.TrimSuffix(r.URL.Path, "/")+"/"+sess.id)
	h.Set("ETag", sess.etag)
	h.Set("Accept-Patch", mimeTrickleICE)
	for _, l := range s.linkHeaders() {
		h.Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, sess.answer())
}

// linkHeaders announce the configured ICE servers (RFC 9725 §4.6).
func (s *Server) linkHeaders() []string {
	var out []string
	for _, is := range s.Config.ICEServers {
		for _, u := range is.URLs {
			l := fmt.Sprintf(`<%s>; rel="ice-server"`, u)
			if strings.HasPrefix(u, "turn") && is.Username != "" {
				l += fmt.Sprintf(`; username=%q; credential=%q; credential-type="password"`, is.Username, is.Credential)
			}
			out = append(out, l)
		}
	}
	return out
}

// patch adds trickled ICE candidates of the viewer. ICE restarts (a new
// ufrag) are refused with 422, as RFC 9725 §4.3.1 asks of a session that
// supports trickle but not restarts.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, name, id string) {
	sess, err := s.session(name, id)
	if err != nil {
		s.failErr(w, err)
		return
	}
	if !hasContentType(r, mimeTrickleICE) {
		http.Error(w, "Content-Type must be "+mimeTrickleICE, http.StatusUnsupportedMediaType)
		return
	}
	if m := r.Header.Get("If-Match"); m != "" && m != "*" && m != sess.etag {
		http.Error(w, "ETag does not match the session's", http.StatusPreconditionFailed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOfferBytes))
	if err != nil {
		http.Error(w, "fragment too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	frag, err := parseSDPFrag(string(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if frag.ufrag != "" && frag.ufrag != sess.ice {
		http.Error(w, ErrICERestart.Error(), http.StatusUnprocessableEntity)
		return
	}
	for _, c := range frag.candidates {
		mid := frag.mid
		if err := sess.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c, SDPMid: &mid}); err != nil {
			http.Error(w, "bad candidate: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) delete(w http.ResponseWriter, name, id string) {
	sess, err := s.session(name, id)
	if err != nil {
		s.failErr(w, err)
		return
	}
	sess.close(endDeleted)
	select {
	case <-sess.done:
	case <-time.After(5 * time.Second):
	}
	w.WriteHeader(http.StatusOK)
}

// failErr answers an error with its status and counts the refusal.
func (s *Server) failErr(w http.ResponseWriter, err error) {
	status, reason := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, ErrStreamNotFound):
		status, reason = http.StatusNotFound, "unknown_stream"
	case errors.Is(err, ErrSessionNotFound):
		status, reason = http.StatusNotFound, "unknown_session"
	case errors.Is(err, ErrTooManySessions):
		status, reason = http.StatusServiceUnavailable, "max_sessions"
	case errors.Is(err, ErrServerClosed):
		status, reason = http.StatusServiceUnavailable, "closed"
	case errors.Is(err, ErrBadOffer):
		status, reason = http.StatusBadRequest, "bad_offer"
	case errors.Is(err, ErrUnknownRung):
		status, reason = http.StatusBadRequest, "unknown_rung"
	case errors.Is(err, ErrUnsupportedOffer):
		status, reason = http.StatusUnprocessableEntity, "unsupported_offer"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status, reason = http.StatusServiceUnavailable, "timeout"
	}
	if status == http.StatusInternalServerError {
		s.Log.Error("webrtc: WHEP request failed", "err", err)
	}
	s.fail(w, reason, status, err.Error())
}

func (s *Server) fail(w http.ResponseWriter, reason string, status int, msg string) {
	if reason != "unknown_session" {
		s.counters.reject(reason)
	}
	http.Error(w, msg, status)
}

func hasContentType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

// sdpFrag is the part of a trickle-ice-sdpfrag (RFC 8840) a session uses.
type sdpFrag struct {
	ufrag      string
	mid        string
	candidates []string
}

func parseSDPFrag(body string) (sdpFrag, error) {
	var f sdpFrag
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			f.ufrag = strings.TrimPrefix(line, "a=ice-ufrag:")
		case strings.HasPrefix(line, "a=mid:"):
			f.mid = strings.TrimPrefix(line, "a=mid:")
		case strings.HasPrefix(line, "a=candidate:"):
			f.candidates = append(f.candidates, strings.TrimPrefix(line, "a="))
		case strings.HasPrefix(line, "a="), strings.HasPrefix(line, "m="), strings.HasPrefix(line, "c="):
			// ice-pwd, end-of-candidates, ice-options, the m-line: nothing to do
		default:
			return f, fmt.Errorf("not an SDP fragment line: %.40q", line)
		}
	}
	return f, nil
}
