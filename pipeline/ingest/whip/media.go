package whip

import (
	"fmt"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// h264Profiles are the profile-level-ids registered for H.264, all with
// packetization-mode=1: what Chrome, Firefox, Safari and OBS offer (pion
// matches on profile_idc and the constraint byte, not the level).
var h264Profiles = []struct {
	pt   webrtc.PayloadType
	plid string
}{
	{102, "42001f"}, // Baseline
	{104, "42e01f"}, // Constrained Baseline (OBS, Safari)
	{106, "4d001f"}, // Main
	{108, "64001f"}, // High
	{112, "640c1f"}, // Constrained High
}

const (
	ptVP8  = 96
	ptOpus = 111
)

var videoFeedback = []webrtc.RTCPFeedback{
	{Type: webrtc.TypeRTCPFBGoogREMB},
	{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
	// nack, nack pli and transport-cc come with the default interceptors.
}

// newAPI builds the pion API every session shares: H.264, VP8 and Opus
// only (so the answer picks nothing the worker cannot decode), the default
// interceptors (NACK generator, RTCP reports, TWCC feedback, stats) and the
// mid/rid header extensions a simulcast offer needs.
func newAPI(se webrtc.SettingEngine) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	for _, p := range h264Profiles {
		c := webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType:     webrtc.MimeTypeH264,
				ClockRate:    90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p.plid,
				RTCPFeedback: videoFeedback,
			},
			PayloadType: p.pt,
		}
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("whip: register H.264 %s: %w", p.plid, err)
		}
	}
	vp8 := webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback},
		PayloadType:        ptVP8,
	}
	if err := me.RegisterCodec(vp8, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("whip: register VP8: %w", err)
	}
	opus := webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: opusRate, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: ptOpus,
	}
	if err := me.RegisterCodec(opus, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("whip: register Opus: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, fmt.Errorf("whip: interceptors: %w", err)
	}
	// Already part of the defaults in pion v4.2; explicit so an upgrade
	// that drops it does not silently refuse simulcast.
	if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
		return nil, fmt.Errorf("whip: simulcast extensions: %w", err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}
