package hls

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
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
	var audioBits int
	if st.audio != nil {
		var conf mpeg4audio.AudioSpecificConfig
		if err := conf.Unmarshal(st.audio.Extradata); err != nil {
			return nil, fmt.Errorf("AAC track %q: %w", st.audio.Name, err)
		}
		audioCodec = codecparams.Marshal(&codecs.MPEG4Audio{Config: conf})
		audioBits = int(st.audio.Bitrate)
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
			*v.AverageBandwidth += audioBits
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
	bits := slices.Clone(r.segBits)
	r.mu.Unlock()
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
	peak, avg := int(r.track.Bitrate), int(r.track.Bitrate)
	if len(bits) > 0 {
		var sum float64
		for _, b := range bits {
			peak = max(peak, int(b))
			sum += b
		}
		avg = int(sum / float64(len(bits)))
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
