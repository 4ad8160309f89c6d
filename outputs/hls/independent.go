package hls

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
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
	return partStartsWithSync(w.body.Bytes(), 1)
}

// partStartsWithSync tells whether track ID's first sample in an fMP4 part
// is a sync sample; known is false when the part does not parse or lacks
// the track. (hlscheck has the same for the players' side: outputs do not
// import each other.)
func partStartsWithSync(b []byte, track int) (independent, known bool) {
	var ps fmp4.Parts
	if err := ps.Unmarshal(b); err != nil {
		return false, false
	}
	for _, p := range ps {
		for _, t := range p.Tracks {
			if t.ID == track && len(t.Samples) > 0 {
				return !t.Samples[0].IsNonSyncSample, true
			}
		}
	}
	return false, false
}
