package api

import (
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/prism-streaming/prism/internal/auth"
)

// Who may call what. With no authentication configured (Auth.Enabled is
// false) the API and /metrics answer local requests only (auth.IsLocal: a
// loopback peer naming localhost, so DNS rebinding fails) and everything
// else gets 401 with the reason; once tokens or a JWT key are configured,
// every API call needs a credential granting its action, loopback included.
// Playback is the stream's own policy: public streams play for anyone,
// signed ones need a credential granting play on that stream.

// localOnly is the 401 reason while no authentication is configured.
const localOnly = "the API answers on loopback only while no authentication is configured: set auth.tokens or auth.jwt to use it from elsewhere"

// authorize answers w and returns false when r may not do action on
// stream ("" for none). Refusals are counted by the authorizer and never
// logged: a credential must not end up in a log.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, action auth.Action, stream string) (auth.Principal, bool) {
	if !s.Auth.Enabled() {
		if auth.IsLocal(r) {
			return auth.LocalPrincipal(), true
		}
		refuse(w, http.StatusUnauthorized, localOnly)
		return auth.Principal{}, false
	}
	p, err := s.Auth.Authorize(auth.Credential(r), action, stream)
	switch {
	case err == nil:
		return p, true
	case errors.Is(err, auth.ErrForbidden):
		refuse(w, http.StatusForbidden, err.Error())
	default:
		refuse(w, http.StatusUnauthorized, err.Error())
	}
	return auth.Principal{}, false
}

func refuse(w http.ResponseWriter, code int, reason string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="prism"`)
	}
	// A player on another origin must see the status, not a CORS error.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeJSON(w, code, map[string]string{"error": reason})
}

// guarded wraps an API handler: GET and HEAD need api.read, other methods
// api.write and a JSON body type (a form on another site cannot send one,
// so CSRF cannot submit or stop jobs). The stream is the route's {id} or
// {name}, when it has one.
func (s *Server) guarded(next func(http.ResponseWriter, *http.Request, auth.Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		action := auth.ActionAPIRead
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			action = auth.ActionAPIWrite
		}
		stream := r.PathValue("id")
		if stream == "" {
			stream = r.PathValue("name")
		}
		p, ok := s.authorize(w, r, action, stream)
		if !ok {
			return
		}
		if action == auth.ActionAPIWrite {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be application/json"})
				return
			}
		}
		next(w, r, p)
	}
}

// guardedSubmit is guarded for a job submission, whose stream is in the
// body: a credential limited to some streams is judged by the handler on
// the spec's id (Principal.Permits), once the body is read.
func (s *Server) guardedSubmit(next func(http.ResponseWriter, *http.Request, auth.Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := auth.LocalPrincipal()
		if !s.Auth.Enabled() {
			if !auth.IsLocal(r) {
				refuse(w, http.StatusUnauthorized, localOnly)
				return
			}
		} else {
			var err error
			p, err = s.Auth.Authorize(auth.Credential(r), auth.ActionAPIWrite, "")
			if err != nil && !errors.Is(err, auth.ErrForbidden) {
				refuse(w, http.StatusUnauthorized, err.Error())
				return
			}
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be application/json"})
			return
		}
		next(w, r, p)
	}
}

// metricsGuard lets through what may scrape /metrics.
func (s *Server) metricsGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.authorize(w, r, auth.ActionMetrics, ""); ok {
			next.ServeHTTP(w, r)
		}
	})
}

// GuardPlay puts the streams' playback policy in front of an output
// mounted at prefix ("/hls/", "/whep/"): a request for a signed stream
// needs a credential (Authorization: Bearer, or ?token=) granting play on
// it. Only requests that start playback are checked for WHEP (a POST of
// an offer; a session's own URL is its capability); every LL-HLS request
// is, since each part is fetched on its own.
func (s *Server) GuardPlay(prefix string, next http.Handler) http.Handler {
	whep := prefix == "/whep/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions || (whep && r.Method != http.MethodPost) {
			next.ServeHTTP(w, r)
			return
		}
		stream, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, prefix), "/")
		if !s.Node.PlaySigned(stream, s.Auth.Enabled()) {
			next.ServeHTTP(w, r)
			return
		}
		if !s.Auth.Enabled() { // cannot happen for a configured stream: config refuses it
			refuse(w, http.StatusUnauthorized, "stream "+stream+" needs a signed token and no key is configured to verify one")
			return
		}
		if _, ok := s.authorize(w, r, auth.ActionPlay, stream); ok {
			next.ServeHTTP(w, r)
		}
	})
}
