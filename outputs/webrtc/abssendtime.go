package webrtc

import (
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// absSendTimeFactory marks outgoing packets with abs-send-time, the send
// time a receiver-side estimator (the viewer's REMB) needs when the viewer
// offered no transport-cc. Only sessions of such viewers register it.
type absSendTimeFactory struct{}

func (absSendTimeFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &absSendTime{}, nil
}

type absSendTime struct{ interceptor.NoOp }

func (*absSendTime) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	id := extensionID(info, sdp.ABSSendTimeURI)
	if id == 0 {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if b, err := rtp.NewAbsSendTimeExtension(time.Now()).Marshal(); err == nil {
			_ = h.SetExtension(id, b)
		}
		return w.Write(h, payload, a)
	})
}

// extensionID is the negotiated ID of the header extension uri on a
// stream; 0 when it was not negotiated.
func extensionID(info *interceptor.StreamInfo, uri string) uint8 {
	for _, x := range info.RTPHeaderExtensions {
		if x.URI == uri {
			return uint8(x.ID) //nolint:gosec // extension IDs are 1..255
		}
	}
	return 0
}
