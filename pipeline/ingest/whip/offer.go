package whip

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// Limits on an offer's layout: a WHIP publisher sends one video and one
// audio section (RFC 9725 §4.2), simulcast with three layers at most in
// practice. Anything far beyond is not a publisher Prism can serve.
const (
	maxMediaSections = 8
	maxRIDs          = 8
)

// Errors of the offer check; the HTTP status follows from them.
var (
	// ErrBadOffer: the body is not an SDP offer.
	ErrBadOffer = errors.New("whip: not a valid SDP offer")
	// ErrUnsupportedOffer: the offer is SDP but offers nothing Prism ingests.
	ErrUnsupportedOffer = errors.New("whip: unsupported offer")
)

// offerInfo is what the server learns from an offer before it admits the
// publisher.
type offerInfo struct {
	videoMid string // the first video section that sends H.264 or VP8
	// topRID is the simulcast layer used as the source: the first RID of
	// the video section's a=simulcast send list ("" without simulcast).
	topRID   string
	rids     []string // every RID of that list, in order
	audio    bool     // an Opus section the publisher sends
	iceUfrag string
}

// inspectOffer checks an offer sends what the server ingests: at least one
// video section with H.264 (packetization-mode=1, since IDRs span several
// packets) or VP8. Errors wrap ErrBadOffer or ErrUnsupportedOffer.
func inspectOffer(text string) (offerInfo, error) {
	var info offerInfo
	var d sdp.SessionDescription
	if err := d.UnmarshalString(text); err != nil {
		return info, fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	if len(d.MediaDescriptions) == 0 {
		return info, fmt.Errorf("%w: no media sections", ErrBadOffer)
	}
	if len(d.MediaDescriptions) > maxMediaSections {
		return info, fmt.Errorf("%w: %d media sections, at most %d", ErrUnsupportedOffer, len(d.MediaDescriptions), maxMediaSections)
	}
	info.iceUfrag, _ = d.Attribute("ice-ufrag")
	video, h264Mode0 := false, false
	for i, m := range d.MediaDescriptions {
		if info.iceUfrag == "" {
			info.iceUfrag, _ = m.Attribute("ice-ufrag")
		}
		if (m.MediaName.Port.Value == 0 && !hasAttr(m, "bundle-only")) || !sends(m) {
			continue
		}
		mid, _ := m.Attribute("mid")
		if mid == "" {
			mid = fmt.Sprint(i)
		}
		switch m.MediaName.Media {
		case "video":
			if video {
				continue // the first video section is the source
			}
			ok, mode0 := videoCodecs(m)
			h264Mode0 = h264Mode0 || mode0
			if !ok {
				continue
			}
			video, info.videoMid = true, mid
			rids, err := simulcastRIDs(m)
			if err != nil {
				return info, err
			}
			if len(rids) > 0 {
				info.rids, info.topRID = rids, rids[0]
			}
		case "audio":
			for _, name := range rtpmaps(m) {
				if strings.HasPrefix(strings.ToLower(name), "opus/48000") {
					info.audio = true
				}
			}
		}
	}
	switch {
	case !video && h264Mode0:
		return info, fmt.Errorf("%w: the offer's H.264 lacks packetization-mode=1 and it has no VP8", ErrUnsupportedOffer)
	case !video:
		return info, fmt.Errorf("%w: the offer sends no H.264 or VP8 video", ErrUnsupportedOffer)
	}
	return info, nil
}

// videoCodecs reports whether m offers VP8 or H.264 with
// packetization-mode=1, and whether it offers only mode-0 H.264.
func videoCodecs(m *sdp.MediaDescription) (ok, h264Mode0 bool) {
	fmtps := map[string]string{}
	for _, a := range m.Attributes {
		if a.Key == "fmtp" {
			if pt, params, found := strings.Cut(a.Value, " "); found {
				fmtps[pt] = params
			}
		}
	}
	for pt, name := range rtpmaps(m) {
		switch strings.ToUpper(name) {
		case "VP8/90000":
			ok = true
		case "H264/90000":
			if fmtpParam(fmtps[pt], "packetization-mode") == "1" {
				ok = true
			} else {
				h264Mode0 = true
			}
		}
	}
	return ok, h264Mode0 && !ok
}

// simulcastRIDs returns the RIDs of "a=simulcast:send", in order: the
// first alternative of each layer, without the paused marker "~".
func simulcastRIDs(m *sdp.MediaDescription) ([]string, error) {
	v, ok := m.Attribute("simulcast")
	if !ok {
		return nil, nil
	}
	fields := strings.Fields(v)
	var rids []string
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] != "send" {
			continue
		}
		for _, layer := range strings.Split(fields[i+1], ";") {
			alt, _, _ := strings.Cut(layer, ",")
			if alt = strings.TrimPrefix(alt, "~"); alt != "" {
				rids = append(rids, alt)
			}
		}
	}
	if len(rids) > maxRIDs {
		return nil, fmt.Errorf("%w: %d simulcast layers, at most %d", ErrUnsupportedOffer, len(rids), maxRIDs)
	}
	return rids, nil
}

func hasAttr(m *sdp.MediaDescription, key string) bool {
	_, ok := m.Attribute(key)
	return ok
}

// sends: the publisher's side of the section sends media.
func sends(m *sdp.MediaDescription) bool {
	return !hasAttr(m, "recvonly") && !hasAttr(m, "inactive")
}

// rtpmaps maps payload types to "name/clock[/channels]".
func rtpmaps(m *sdp.MediaDescription) map[string]string {
	out := map[string]string{}
	for _, a := range m.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		if pt, name, ok := strings.Cut(a.Value, " "); ok {
			out[pt] = strings.TrimSpace(name)
		}
	}
	return out
}

func fmtpParam(params, key string) string {
	for _, kv := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
