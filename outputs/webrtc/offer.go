package webrtc

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// offerInfo is what the server needs to know about a WHEP offer before it
// spends a PeerConnection on it.
type offerInfo struct {
	h264        []profileLevel // H.264 formats with packetization-mode=1 the viewer can receive
	opus        bool
	dataChannel bool
	iceUfrag    string
	// twcc: the video section offers the transport-wide sequence number
	// extension, so the viewer sends transport-cc feedback. Without it the
	// server falls back to the viewer's REMB (and marks abs-send-time).
	twcc bool
}

// inspectOffer parses an SDP offer and checks it asks for what a WHEP
// session sends: H.264 with packetization-mode=1 (FU-A: IDRs are larger
// than a packet) and Opus. Errors wrap ErrBadOffer or ErrUnsupportedOffer.
func inspectOffer(text string) (offerInfo, error) {
	var info offerInfo
	var d sdp.SessionDescription
	if err := d.UnmarshalString(text); err != nil {
		return info, fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	if len(d.MediaDescriptions) == 0 {
		return info, fmt.Errorf("%w: no media sections", ErrBadOffer)
	}
	info.iceUfrag, _ = d.Attribute("ice-ufrag")
	var video, audio bool
	for _, m := range d.MediaDescriptions {
		if info.iceUfrag == "" {
			info.iceUfrag, _ = m.Attribute("ice-ufrag")
		}
		if m.MediaName.Port.Value == 0 && !bundleOnly(m) {
			continue // rejected section
		}
		switch m.MediaName.Media {
		case "application":
			info.dataChannel = true
			continue
		case "video", "audio":
		default:
			continue
		}
		if !canReceive(m) {
			continue
		}
		if m.MediaName.Media == "video" {
			for _, a := range m.Attributes {
				if a.Key == "extmap" && strings.Contains(a.Value, sdp.TransportCCURI) {
					info.twcc = true
				}
			}
		}
		codecs := rtpmaps(m)
		fmtps := map[string]string{}
		for _, a := range m.Attributes {
			if a.Key == "fmtp" {
				if pt, params, ok := strings.Cut(a.Value, " "); ok {
					fmtps[pt] = params
				}
			}
		}
		for pt, name := range codecs {
			switch {
			case m.MediaName.Media == "video" && strings.EqualFold(name, "H264/90000"):
				video = true
				params := fmtpParams(fmtps[pt])
				if params["packetization-mode"] != "1" {
					continue
				}
				plid, err := hex.DecodeString(params["profile-level-id"])
				if err != nil || len(plid) != 3 {
					plid = []byte{profileBaseline, 0, 0x1f} // RFC 6184: absent means 42001f
				}
				info.h264 = append(info.h264, profileLevel{plid[0], plid[1], plid[2]})
			case m.MediaName.Media == "audio" && strings.HasPrefix(strings.ToLower(name), "opus/48000"):
				audio = true
				info.opus = true
			}
		}
	}
	switch {
	case !video:
		return info, fmt.Errorf("%w: the offer has no H.264 video the viewer can receive", ErrUnsupportedOffer)
	case len(info.h264) == 0:
		return info, fmt.Errorf("%w: the offer's H.264 formats lack packetization-mode=1", ErrUnsupportedOffer)
	case !audio:
		return info, fmt.Errorf("%w: the offer has no Opus audio the viewer can receive", ErrUnsupportedOffer)
	}
	return info, nil
}

func bundleOnly(m *sdp.MediaDescription) bool {
	_, ok := m.Attribute("bundle-only")
	return ok
}

// canReceive: the viewer's side of the section accepts media from us.
func canReceive(m *sdp.MediaDescription) bool {
	for _, a := range m.Attributes {
		switch a.Key {
		case "sendonly", "inactive":
			return false
		}
	}
	return true
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

func fmtpParams(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		out[strings.ToLower(k)] = v
	}
	return out
}
