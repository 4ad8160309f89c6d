package webrtc

import (
	_ "embed"
	"net/http"
)

// PlayerHTML is a small WHEP player page: it plays /whep/<stream> (query
// ?stream=<name>), lets the viewer pin a rung over the data channel, shows
// timed events on their frame (window.prismEvents records where), sends
// a Bid action bound to the frame on screen, and can
// POST a getStats report (frames decoded, fps, resolution, audio packets,
// time to first frame) to ?report=<url>, which the browser test uses.
//
//go:embed player.html
var PlayerHTML string

// PlayerHandler serves PlayerHTML, e.g. at "/whep-player". The page finds
// the WHEP endpoint at /whep/<stream> on the same origin, or at ?whep=<url>.
func PlayerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write([]byte(PlayerHTML))
	})
}
