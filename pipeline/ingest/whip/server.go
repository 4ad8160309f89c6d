// Package whip is Prism's WHIP (RFC 9725) ingest endpoint: publishers
// (OBS, browsers, GStreamer) POST an SDP offer, the node admits them
// through ingest.Handler before any media is accepted, and the server turns
// their RTP into access units on an ingest.Session: H.264 as Annex-B with
// parameter sets on every keyframe, VP8 frames, Opus packets.
//
// Only the top simulcast layer is ingested: the worker transcodes one
// source and builds its own ladder.
package whip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline/ingest"
)

const (
	mimeSDP        = "application/sdp"
	mimeTrickleICE = "application/trickle-ice-sdpfrag"

	// maxPatches is how many PATCH requests one session may make: a
	// publisher trickles a handful of candidates, and each PATCH costs a
	// parse and connectivity checks.
	maxPatches = 50
	// maxCandidates bounds the remote candidates a session accepts over
	// PATCH.
	maxCandidates = 64
	// handshakeTimeout bounds the time from the answer to a connected
	// PeerConnection.
	handshakeTimeout = 10 * time.Second
	// gatherTimeout bounds the wait for the server's candidates.
	gatherTimeout = 3 * time.Second
)

// Errors of the server.
var (
	// ErrClosed: the server is closed (503).
	ErrClosed = errors.New("whip: server closed")
	// ErrSessionNotFound: no such session for PATCH or DELETE (404).
	ErrSessionNotFound = errors.New("whip: no such session")
	// ErrNoKeyframe: the publisher connected but sent no usable video
	// keyframe in time.
	ErrNoKeyframe = errors.New("whip: no video keyframe from the publisher")
	// ErrConnection: ICE or DTLS failed, or the publisher closed the
	// connection without DELETE.
	ErrConnection = errors.New("whip: connection lost")
)

// Server is the WHIP endpoint. Set the fields, call Initialize, mount it at
// "/whip/":
//
//	POST    /whip/<stream>        offer -> 201 answer, Location, ETag
//	PATCH   /whip/<stream>/<id>   trickle ICE candidates -> 204
//	DELETE  /whip/<stream>/<id>   end the session -> 200
//	OPTIONS either                -> 204
type Server struct {
	Handler ingest.Handler
	// Settings is the pion setting engine (the node passes the WHEP
	// server's, with the shared ICE UDP/TCP mux); the zero value is pion's
	// defaults.
	Settings   webrtc.SettingEngine
	ICEServers []webrtc.ICEServer
	Log        *slog.Logger
	// MaxSDPBytes caps an offer (413 above it); 0 means 128 KiB.
	MaxSDPBytes int64
	// PLIInterval is the minimum spacing of the PLIs sent to a publisher;
	// 0 means 500ms.
	PLIInterval time.Duration
	// TrackWait is how long after connecting the session waits for the
	// offered tracks (the top simulcast layer, the audio); 0 means 3s.
	TrackWait time.Duration
	// KeyframeTimeout ends a session whose publisher sent no usable video
	// keyframe this long after connecting; 0 means 10s.
	KeyframeTimeout time.Duration
	// Net is the network ICE runs on (pion vnet in tests); nil is the host's.
	Net transport.Net
	// AllowOrigin, when set, is sent as Access-Control-Allow-Origin so
	// browser publishers on other origins may POST.
	AllowOrigin string

	api      *webrtc.API
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	closed   bool
	sessions map[string]*conn
}

// Initialize applies the defaults and builds the pion API.
func (s *Server) Initialize() error {
	if s.Handler == nil {
		return errors.New("whip: Server needs a Handler")
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.MaxSDPBytes <= 0 {
		s.MaxSDPBytes = 128 << 10
	}
	if s.PLIInterval <= 0 {
		s.PLIInterval = 500 * time.Millisecond
	}
	if s.TrackWait <= 0 {
		s.TrackWait = 3 * time.Second
	}
	if s.KeyframeTimeout <= 0 {
		s.KeyframeTimeout = 10 * time.Second
	}
	se := s.Settings
	if se.LoggerFactory == nil {
		se.LoggerFactory = pionLogs{log: s.Log}
	}
	if s.Net != nil {
		se.SetNet(s.Net)
	}
	api, err := newAPI(se)
	if err != nil {
		return err
	}
	s.api = api
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sessions = map[string]*conn{}
	return nil
}

// Close ends every session (closing its PeerConnection) and waits for
// their goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed || s.sessions == nil {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.sessions))
	for _, c := range s.sessions {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Each session's reason first: cancelling the server's context closes
	// their PeerConnections, which would otherwise report a publisher that
	// left.
	for _, c := range conns {
		c.stop(ErrClosed)
	}
	s.cancel()
	s.wg.Wait()
}

// ServeHTTP implements the WHIP resource paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.AllowOrigin != "" {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", s.AllowOrigin)
		h.Set("Access-Control-Allow-Methods", "OPTIONS, POST, PATCH, DELETE")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
		h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch, Accept-Post")
	}
	stream, id, ok := splitPath(r.URL.Path)
	if !ok {
		http.Error(w, "use /whip/<stream>", http.StatusNotFound)
		return
	}
	if id == "" {
		switch r.Method {
		case http.MethodOptions:
			w.Header().Set("Allow", "OPTIONS, POST")
			w.Header().Set("Accept-Post", mimeSDP)
			w.WriteHeader(http.StatusNoContent)
		case http.MethodPost:
			s.post(w, r, stream)
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
		s.patch(w, r, stream, id)
	case http.MethodDelete:
		s.delete(w, stream, id)
	default:
		w.Header().Set("Allow", "OPTIONS, PATCH, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// splitPath returns the stream and session of …/whip/<stream>[/<id>].
func splitPath(path string) (stream, id string, ok bool) {
	// The first /whip/ is the mount point, whatever is in front of it.
	if i := strings.Index(path, "/whip/"); i >= 0 {
		path = path[i+len("/whip/"):]
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return parts[0], "", true
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return parts[0], parts[1], true
	}
	return "", "", false
}

func (s *Server) post(w http.ResponseWriter, r *http.Request, stream string) {
	if !hasContentType(r, mimeSDP) {
		http.Error(w, "Content-Type must be "+mimeSDP, http.StatusUnsupportedMediaType)
		return
	}
	if s.isClosed() {
		http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	body, status, err := s.readBody(w, r)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	info, err := inspectOffer(string(body))
	switch {
	case errors.Is(err, ErrUnsupportedOffer):
		http.Error(w, err.Error(), http.StatusNotAcceptable)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := ingest.Request{
		Protocol: ingest.WHIP,
		Stream:   stream,
		Key:      bearer(r),
		Remote:   remoteAddr(r.RemoteAddr),
		Query:    r.URL.Query(),
	}
	req.Query.Del("token") // a credential, whatever the publisher meant by it
	log := s.Log.With("stream", stream, "remote", r.RemoteAddr)
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	sess, err := s.Handler.Publish(ctx, req)
	if err != nil {
		status := refusalStatus(err)
		log.Info("whip: publish refused", "status", status, "err", err)
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="prism"`)
		}
		msg := err.Error()
		if status == http.StatusInternalServerError {
			msg = "publish failed"
		}
		http.Error(w, msg, status)
		return
	}
	c, answer, err := s.start(ctx, sess, string(body), info, log)
	if err != nil {
		sess.End(err)
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadOffer):
			status = http.StatusBadRequest
		case errors.Is(err, ErrClosed):
			status = http.StatusServiceUnavailable
		}
		log.Info("whip: session not started", "err", err)
		http.Error(w, err.Error(), status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", mimeSDP)
	h.Set("Location", "/whip/"+stream+"/"+c.id)
	h.Set("ETag", c.etag)
	h.Set("Accept-Patch", mimeTrickleICE)
	for _, l := range s.linkHeaders() {
		h.Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// readBody reads at most MaxSDPBytes of the body; a larger one is refused
// unread when its length is announced, and cut off when it is not.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	tooLarge := fmt.Errorf("the body is larger than %d bytes", s.MaxSDPBytes)
	if r.ContentLength > s.MaxSDPBytes {
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxSDPBytes))
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	case err != nil:
		return nil, http.StatusBadRequest, fmt.Errorf("reading the body: %w", err)
	}
	return body, 0, nil
}

// refusalStatus maps a Handler refusal to its HTTP status.
func refusalStatus(err error) int {
	switch {
	case errors.Is(err, ingest.ErrUnauthorized), errors.Is(err, ingest.ErrBadSecret):
		return http.StatusUnauthorized
	case errors.Is(err, ingest.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ingest.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ingest.ErrUnsupported):
		return http.StatusNotAcceptable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// linkHeaders announce the ICE servers to the publisher (RFC 9725 §4.6).
func (s *Server) linkHeaders() []string {
	var out []string
	for _, is := range s.ICEServers {
		for _, u := range is.URLs {
			l := fmt.Sprintf(`<%s>; rel="ice-server"`, u)
			if cred, ok := is.Credential.(string); ok && is.Username != "" {
				l += fmt.Sprintf(`; username=%q; credential=%q; credential-type="password"`, is.Username, cred)
			}
			out = append(out, l)
		}
	}
	return out
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, stream, id string) {
	c := s.session(stream, id)
	if c == nil {
		http.Error(w, ErrSessionNotFound.Error(), http.StatusNotFound)
		return
	}
	if !hasContentType(r, mimeTrickleICE) {
		http.Error(w, "Content-Type must be "+mimeTrickleICE, http.StatusUnsupportedMediaType)
		return
	}
	if m := r.Header.Get("If-Match"); m != "" && m != "*" && m != c.etag {
		http.Error(w, "If-Match does not match the session's ETag", http.StatusPreconditionFailed)
		return
	}
	if !c.takePatch() {
		http.Error(w, fmt.Sprintf("a session may send at most %d PATCH requests", maxPatches), http.StatusTooManyRequests)
		return
	}
	body, status, err := s.readBody(w, r)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	frag, err := parseSDPFrag(string(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if frag.ufrag != "" && frag.ufrag != c.ufrag {
		// RFC 9725 §4.3.2: a server that cannot restart ICE answers 422.
		http.Error(w, "ICE restarts are not supported", http.StatusUnprocessableEntity)
		return
	}
	if !c.takeCandidates(len(frag.candidates)) {
		http.Error(w, fmt.Sprintf("a session may trickle at most %d candidates", maxCandidates), http.StatusTooManyRequests)
		return
	}
	for _, cand := range frag.candidates {
		if _, err := ice.UnmarshalCandidate(cand); err != nil {
			http.Error(w, "bad candidate: "+err.Error(), http.StatusBadRequest)
			return
		}
		init := webrtc.ICECandidateInit{Candidate: cand}
		if frag.mid != "" {
			mid := frag.mid
			init.SDPMid = &mid
		}
		if err := c.pc.AddICECandidate(init); err != nil {
			http.Error(w, "bad candidate: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) delete(w http.ResponseWriter, stream, id string) {
	c := s.session(stream, id)
	if c == nil {
		http.Error(w, ErrSessionNotFound.Error(), http.StatusNotFound)
		return
	}
	c.stop(nil)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) session(stream, id string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.sessions[id]
	if c == nil || c.stream != stream {
		return nil
	}
	return c
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// add registers c and counts its goroutine, unless the server is closed.
func (s *Server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[c.id] = c
	s.wg.Add(1)
	return true
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	delete(s.sessions, c.id)
	s.mu.Unlock()
}

func hasContentType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

// bearer returns the token of "Authorization: Bearer <token>" ("" without).
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// remoteAddr parses http.Request.RemoteAddr ("ip:port"); nil if it is not
// one (a test server, a unix socket).
func remoteAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sdpFrag is the part of a trickle-ice-sdpfrag (RFC 8840) the server uses.
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
			if f.mid == "" {
				f.mid = strings.TrimPrefix(line, "a=mid:")
			}
		case strings.HasPrefix(line, "a=candidate:"):
			f.candidates = append(f.candidates, strings.TrimPrefix(line, "a="))
		case strings.HasPrefix(line, "a="), strings.HasPrefix(line, "m="), strings.HasPrefix(line, "c="):
			// ice-pwd, ice-options, end-of-candidates, the m-line: nothing to do
		default:
			return f, fmt.Errorf("not an SDP fragment line: %.40q", line)
		}
	}
	return f, nil
}

// pionLogs routes pion's logs into slog; its Info is routine chatter and
// becomes Debug.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) emit(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  { l.emit(slog.LevelDebug-4, "%s", msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.emit(slog.LevelDebug-4, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.emit(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.emit(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.emit(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.emit(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.emit(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.emit(slog.LevelWarn, format, args...) }
func (l pionLogger) Error(msg string)                  { l.emit(slog.LevelError, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.emit(slog.LevelError, format, args...) }
