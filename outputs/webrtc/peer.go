package webrtc

import (
	"fmt"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Payload types offered by the publisher; answers reuse the viewer's.
const (
	ptH264 = 102
	ptOpus = 111
)

// videoCapability is the H.264 codec of a session. The fmtp line is set
// explicitly: when a track's codec does not match the negotiated one
// exactly, pion falls back to the first codec of the same MIME type, whose
// profile or packetization mode may differ.
func videoCapability(p profileLevel) webrtc.RTPCodecCapability {
	return webrtc.RTPCodecCapability{
		MimeType:    webrtc.MimeTypeH264,
		ClockRate:   90000,
		SDPFmtpLine: h264Fmtp(p),
		RTCPFeedback: []webrtc.RTCPFeedback{
			{Type: webrtc.TypeRTCPFBTransportCC},
			{Type: webrtc.TypeRTCPFBGoogREMB}, // a cap from receivers without transport-cc
			{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
			// nack and nack pli are added by webrtc.ConfigureNack.
		},
	}
}

func audioCapability() webrtc.RTPCodecCapability {
	return webrtc.RTPCodecCapability{
		MimeType:     webrtc.MimeTypeOpus,
		ClockRate:    opusClockRate,
		Channels:     2,
		SDPFmtpLine:  "minptime=10;useinbandfec=1",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}},
	}
}

// mediaEngine registers only the two codecs a session sends, so the answer
// cannot pick anything else.
func mediaEngine(video webrtc.RTPCodecCapability) (*webrtc.MediaEngine, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: video, PayloadType: ptH264},
		webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("webrtc: register H.264: %w", err)
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: audioCapability(), PayloadType: ptOpus},
		webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("webrtc: register Opus: %w", err)
	}
	return me, nil
}

// bweOptions configure one viewer's send-side bandwidth estimator.
type bweOptions struct {
	initial, min, max int
	// absSendTime: mark video packets with abs-send-time, for a viewer that
	// offers no transport-cc and estimates on its side (REMB).
	absSendTime bool
}

// senderInterceptors builds the interceptor chain of a sending peer:
// congestion control (Prism's bwe on transport-cc feedback) first, so it wraps the
// writer closest to the wire and sees the transport-cc sequence numbers the
// header-extension interceptor stamps; then NACK responses and RTCP sender
// reports (browsers need them to sync audio with video). onBWE receives the
// estimator when the PeerConnection is built.
//
// The pacer is pion's no-op one: its default leaky bucket queues without
// bound (adding latency whenever the estimate is below the media rate) and
// truncates packets to 1460 bytes. Pacing buys little here: the forwarder
// sends one frame's packets at a time and the ABR keeps the rate below the
// estimate.
func senderInterceptors(me *webrtc.MediaEngine, lf pionLogs, opts *bweOptions, onBWE func(*bwe)) (*interceptor.Registry, error) {
	ir := &interceptor.Registry{}
	if opts != nil {
		ccf, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
			return newBWE(opts.initial, opts.min, opts.max), nil
		})
		if err != nil {
			return nil, fmt.Errorf("webrtc: congestion control: %w", err)
		}
		ccf.OnNewPeerConnection(func(_ string, e cc.BandwidthEstimator) { onBWE(e.(*bwe)) })
		ir.Add(ccf)
		if opts.absSendTime {
			if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.ABSSendTimeURI},
				webrtc.RTPCodecTypeVideo); err != nil {
				return nil, fmt.Errorf("webrtc: abs-send-time: %w", err)
			}
			ir.Add(absSendTimeFactory{})
		}
	}
	if err := configureTWCCStamping(me, ir); err != nil {
		return nil, fmt.Errorf("webrtc: transport-cc: %w", err)
	}
	if err := webrtc.ConfigureNackWithOptions(me, ir, []nack.GeneratorOption{nack.WithGeneratorLoggerFactory(lf)},
		nack.WithResponderLoggerFactory(lf), nack.ResponderSize(nackHistory)); err != nil {
		return nil, fmt.Errorf("webrtc: nack: %w", err)
	}
	if err := webrtc.ConfigureRTCPReportsWithOptions(ir, []report.ReceiverOption{report.WithReceiverLoggerFactory(lf)},
		report.WithSenderLoggerFactory(lf)); err != nil {
		return nil, fmt.Errorf("webrtc: rtcp reports: %w", err)
	}
	return ir, nil
}
