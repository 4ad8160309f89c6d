package hls

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/outputs/hls/hlscheck"
)

// maxIndependence bounds the parts whose first sample is remembered per
// rung: a playlist lists the parts of its last two segments only.
const maxIndependence = 256

// independence sets INDEPENDENT on the listed parts of the rung's video
// playlist from the parts themselves: YES exactly when the first video
// sample is a sync sample (an IDR). Parts never change once listed, so
// each is read once.
func (r *rung) independence(m *gohlslib.Muxer, parts []*playlist.MediaPart) {
	for _, p := range parts {
		name, _, _ := strings.Cut(p.URI, "?")
		r.mu.Lock()
		v, ok := r.indep[name]
		r.mu.Unlock()
		if !ok {
			var known bool
			v, known = startsWithSync(m, name)
			if !known {
				continue // keep gohlslib's flag
			}
			r.mu.Lock()
			if r.indep == nil || len(r.indep) >= maxIndependence {
				r.indep = make(map[string]bool, maxIndependence)
			}
			r.indep[name] = v
			r.mu.Unlock()
		}
		p.Independent = v
	}
}

// startsWithSync reads a complete part from the muxer and tells whether its
// video track (the muxer's first) starts with a sync sample.
func startsWithSync(m *gohlslib.Muxer, name string) (independent, known bool) {
	w := newMemWriter()
	m.Handle(w, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/" + name}, Header: http.Header{}})
	if w.status() != http.StatusOK {
		return false, false
	}
	return hlscheck.PartStartsWithSync(w.body.Bytes(), 1)
}
