package hls

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/bluenviron/gohlslib/v2"
)

// measure records the bit rates of the segment that just completed, from
// the bytes gohlslib serves for it (fMP4 boxes included, which at low bit
// rates are a good part of it) over its duration. BANDWIDTH is the peak of
// these (RFC 8216 4.3.4.2: the peak segment bit rate).
func (f *feeder) measure(s playlistState) {
	seg := uint64(s.nextMSN - 1 - s.delta) //nolint:gosec // gohlslib's own number, never negative
	secs := s.lastSegDuration.Seconds()
	video := float64(servedSize(f.muxer, s.prefix+"_video1_seg"+strconv.FormatUint(seg, 10)+".mp4")) * 8 / secs
	var audio float64
	if f.atrack != nil {
		audio = float64(servedSize(f.muxer, s.prefix+"_audio2_seg"+strconv.FormatUint(seg, 10)+".mp4")) * 8 / secs
	}
	f.r.setBits(video, audio, f.st.conf.SegmentCount)
}

// servedSize is the size of the body gohlslib serves for file, 0 if none.
func servedSize(m *gohlslib.Muxer, file string) int {
	var w countWriter
	m.Handle(&w, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/" + file}, Header: http.Header{}})
	if w.code != http.StatusOK {
		return 0
	}
	return w.n
}

// countWriter counts a response's bytes without keeping them.
type countWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *countWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *countWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *countWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(b)
	return len(b), nil
}
