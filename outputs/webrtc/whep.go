package webrtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
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
	// The first /whep/ is the mount point: with the last one, a stream
	// named "whep" would lose its sessions, and /whep/a/whep/b would name
	// stream b to the server while a guard in front of it saw stream a.
	if i := strings.Index(path, "/whep/"); i >= 0 {
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
	// Held from now to the session's end: the node follows the stream
	// while it has sessions here (node.follow: on_demand).
	release := s.Streams.Hold(name)
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	st, err := s.follow(r.Context(), name)
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
	sl := slot{client: pipeline.ClientKey(r.RemoteAddr), stream: st.name}
	if err := s.admissible(sl); err != nil {
		w.Header().Set("Retry-After", "5")
		s.failErr(w, err)
		return
	}
	// The body is read before a slot is taken: a client that sends its
	// headers and stalls must not hold a slot (it would lock viewers out).
	body, err := s.readBody(w, r)
	if err != nil {
		s.failErr(w, err)
		return
	}
	info, err := inspectOffer(string(body))
	if err != nil {
		s.failErr(w, err)
		return
	}
	offer, candidates, err := s.candidates.screenOffer(string(body), s.Config.MaxCandidates)
	if err != nil {
		s.failErr(w, err)
		return
	}
	if err := s.reserve(sl); err != nil {
		w.Header().Set("Retry-After", "5")
		s.failErr(w, err)
		return
	}
	reserved := true
	defer func() {
		if reserved {
			s.release(sl)
		}
	}()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	sess, err := s.newSession(ctx, st, offer, info, pin)
	if err != nil {
		s.failErr(w, err)
		return
	}
	sess.slot, sess.candidates, sess.release = sl, candidates, release
	reserved, held = false, false
	if err := s.admit(sess); err != nil {
		release()
		sess.cancel()
		_ = sess.pc.Close()
		s.failErr(w, err)
		return
	}
	s.counters.accept()
	// The join IDR is produced while ICE and DTLS run (stream.activate).
	st.askJoinKeyframe()
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
	body, err := s.readBody(w, r)
	if err != nil {
		status, _ := errorStatus(err)
		http.Error(w, err.Error(), status)
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
	// Every candidate received counts, ignored ones too: each costs a parse,
	// and a used one costs connectivity checks for the session's lifetime.
	if !sess.takeCandidates(len(frag.candidates), s.Config.MaxCandidates) {
		err := fmt.Errorf("%w: a session may have at most %d (webrtc.max_candidates); the session keeps the ones it has",
			ErrTooManyCandidates, s.Config.MaxCandidates)
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	}
	var use []webrtc.ICECandidateInit
	for _, c := range frag.candidates {
		cand, err := ice.UnmarshalCandidate(c)
		if err != nil {
			http.Error(w, "bad candidate: "+err.Error(), http.StatusBadRequest)
			return
		}
		if why := s.candidates.refuse(cand); why != "" {
			sess.log.Debug("webrtc: remote candidate ignored", "candidate", c, "why", why)
			continue
		}
		mid := frag.mid
		use = append(use, webrtc.ICECandidateInit{Candidate: c, SDPMid: &mid})
	}
	for _, c := range use {
		if err := sess.pc.AddICECandidate(c); err != nil {
			http.Error(w, "bad candidate: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// readBody reads the body of a WHEP request, at most maxOfferBytes, within
// webrtc.offer_timeout of the handler's start. Errors wrap ErrOfferTimeout,
// ErrBodyTooLarge or ErrBadOffer.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	s.reading.Add(1)
	defer s.reading.Add(-1)
	rc := http.NewResponseController(w)
	// Without deadline support (a wrapped writer), http.Server.ReadTimeout
	// is the bound.
	_ = rc.SetReadDeadline(time.Now().Add(s.Config.OfferTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOfferBytes))
	var netErr net.Error
	switch {
	case err == nil:
		// The rest of the request (building the session) is not reading.
		_ = rc.SetReadDeadline(time.Time{})
		return body, nil
	case errors.As(err, new(*http.MaxBytesError)):
		return nil, fmt.Errorf("%w: a WHEP body may not be larger than %d bytes", ErrBodyTooLarge, maxOfferBytes)
	case errors.As(err, &netErr) && netErr.Timeout():
		return nil, fmt.Errorf("%w: the body did not arrive within %s (webrtc.offer_timeout)", ErrOfferTimeout, s.Config.OfferTimeout)
	default:
		return nil, fmt.Errorf("%w: reading the body: %w", ErrBadOffer, err)
	}
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
	status, reason := errorStatus(err)
	if status == http.StatusInternalServerError {
		s.Log.Error("webrtc: WHEP request failed", "err", err)
	}
	s.fail(w, reason, status, err.Error())
}

// errorStatus maps an error to its HTTP status and the reason it is
// counted under (Stats.Rejected).
func errorStatus(err error) (status int, reason string) {
	switch {
	case errors.Is(err, ErrStreamNotFound):
		return http.StatusNotFound, "unknown_stream"
	case errors.Is(err, ErrSessionNotFound):
		return http.StatusNotFound, "unknown_session"
	case errors.Is(err, ErrTooManySessionsPerIP):
		return http.StatusServiceUnavailable, "max_sessions_per_ip"
	case errors.Is(err, ErrTooManySessionsPerStream):
		return http.StatusServiceUnavailable, "max_sessions_per_stream"
	case errors.Is(err, ErrTooManySessions):
		return http.StatusServiceUnavailable, "max_sessions"
	case errors.Is(err, ErrServerClosed):
		return http.StatusServiceUnavailable, "closed"
	case errors.Is(err, ErrOfferTimeout):
		return http.StatusRequestTimeout, "offer_timeout"
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrTooManyCandidates):
		return http.StatusBadRequest, "too_many_candidates"
	case errors.Is(err, ErrBadOffer):
		return http.StatusBadRequest, "bad_offer"
	case errors.Is(err, ErrUnknownRung):
		return http.StatusBadRequest, "unknown_rung"
	case errors.Is(err, ErrUnsupportedOffer):
		return http.StatusUnprocessableEntity, "unsupported_offer"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "timeout"
	}
	return http.StatusInternalServerError, "internal"
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
