package hls

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/bluenviron/gohlslib/v2/pkg/codecparams"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

const audioGroup = "aac"

// variant is one EXT-X-STREAM-INF before sorting.
type variant struct {
	name string
	v    *playlist.MultivariantVariant
}

// multivariant writes the stream's multivariant playlist: one variant per
// rung, ordered by bandwidth, all sharing one AAC audio rendition. Every
// figure comes from the media itself where it can: CODECS, RESOLUTION and
// FRAME-RATE from the SPS the encoder sent, the bandwidths from the sizes
// of the segments served (at least the configured bit rate, which the VBV
// holds the encoder to, while few segments exist).
func (st *stream) multivariant() ([]byte, error) {
	pl := &playlist.Multivariant{
		Version:             10, // as gohlslib's media playlists
		IndependentSegments: true,
	}
	var audioCodec string
	var audioBits, audioAvg int
	if st.audio != nil {
		var conf mpeg4audio.AudioSpecificConfig
		if err := conf.Unmarshal(st.audio.Extradata); err != nil {
			return nil, fmt.Errorf("AAC track %q: %w", st.audio.Name, err)
		}
		audioCodec = codecparams.Marshal(&codecs.MPEG4Audio{Config: conf})
		audioBits, audioAvg = st.host.audioBandwidth(int(st.audio.Bitrate))
		uri := st.epoch + "/" + audioDir + "/" + audioPlaylist
		channels := strconv.Itoa(st.audio.Channels)
		pl.Renditions = append(pl.Renditions, &playlist.MultivariantRendition{
			Type:       playlist.MultivariantRenditionTypeAudio,
			GroupID:    audioGroup,
			Name:       "aac",
			Autoselect: true,
			Default:    true,
			Channels:   &channels,
			URI:        &uri,
		})
	}
	var vs []variant
	for _, r := range st.rungs {
		v, err := r.variant(st.epoch)
		if err != nil {
			return nil, err
		}
		if audioCodec != "" {
			v.Codecs = append(v.Codecs, audioCodec)
			v.Audio = audioGroup
			v.Bandwidth += audioBits
			*v.AverageBandwidth += audioAvg
		}
		vs = append(vs, variant{r.name, v})
	}
	slices.SortFunc(vs, func(a, b variant) int {
		return cmp.Or(cmp.Compare(a.v.Bandwidth, b.v.Bandwidth), cmp.Compare(a.name, b.name))
	})
	for _, v := range vs {
		pl.Variants = append(pl.Variants, v.v)
	}
	return pl.Marshal()
}

func (r *rung) variant(epoch string) (*playlist.MultivariantVariant, error) {
	r.mu.Lock()
	sps := bytes.Clone(r.sps)
	r.mu.Unlock()
	peak, avg := r.bandwidth()
	if sps == nil {
		return nil, errors.New("rung " + r.name + ": no SPS seen yet")
	}
	var p h264.SPS
	if err := p.Unmarshal(sps); err != nil {
		return nil, fmt.Errorf("rung %s: SPS: %w", r.name, err)
	}
	fps := p.FPS()
	if fps == 0 {
		fps = r.track.FPS
	}
	return &playlist.MultivariantVariant{
		Bandwidth:        peak,
		AverageBandwidth: &avg,
		Codecs:           []string{codecparams.Marshal(&codecs.H264{SPS: sps})},
		Resolution:       strconv.Itoa(p.Width()) + "x" + strconv.Itoa(p.Height()),
		FrameRate:        &fps,
		URI:              epoch + "/" + r.name + "/" + videoPlaylist,
	}, nil
}

// bandwidth is the rung's video BANDWIDTH and AVERAGE-BANDWIDTH: the peak
// of every segment served so far, never less than the configured bit rate
// (while few segments exist) and never falling, since players keep the
// figure they read first; the average of the latest segments.
func (r *rung) bandwidth() (peak, avg int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bandwidthOf(int(r.track.Bitrate), r.peak, r.segBits)
}

// audioBandwidth is the same for the audio rendition carried by r.
func (r *rung) audioBandwidth(configured int) (peak, avg int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bandwidthOf(configured, r.audioPeak, r.audioBits)
}

func bandwidthOf(configured int, peak float64, window []float64) (int, int) {
	avg := configured
	if len(window) > 0 {
		var sum float64
		for _, b := range window {
			sum += b
		}
		avg = int(sum / float64(len(window)))
	}
	return max(configured, int(math.Ceil(peak))), avg
}
