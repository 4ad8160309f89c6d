package hls

import (
	"slices"
	"sync"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
)

// maxDiscontinuities bounds the source changes remembered per stream: far
// more than a playlist window holds.
const maxDiscontinuities = 256

// discontinuities are the media sequence numbers of the segments that start
// after the job's source changed (a pushed stream's publisher came back):
// their playlists carry EXT-X-DISCONTINUITY and count them in
// EXT-X-DISCONTINUITY-SEQUENCE. All rungs and the audio rendition cut
// segments on the same IDRs, so one list serves every playlist.
type discontinuities struct {
	mu   sync.Mutex
	msns []int // ascending
}

// add records that segment msn starts after a source change.
func (d *discontinuities) add(msn int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, found := slices.BinarySearch(d.msns, msn); !found {
		d.msns = slices.Insert(d.msns, i, msn)
	}
	if len(d.msns) > maxDiscontinuities {
		d.msns = d.msns[len(d.msns)-maxDiscontinuities:]
	}
}

// mark sets the discontinuity tags of a media playlist.
func (d *discontinuities) mark(pl *playlist.Media) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.msns) == 0 {
		return
	}
	before := 0
	for _, m := range d.msns {
		if m < pl.MediaSequence {
			before++
		}
	}
	for i, seg := range pl.Segments {
		if _, found := slices.BinarySearch(d.msns, pl.MediaSequence+i); found {
			seg.Discontinuity = true
		}
	}
	// The tags of segments that left the window (RFC 8216 6.2.1).
	pl.DiscontinuitySequence = &before
}
