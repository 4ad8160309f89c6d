package webrtc

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// nackHistory is how many sent packets per stream the NACK responder keeps
// for retransmission: about 6 s of a 700 kbit/s rung, 1 s at 5 Mbit/s,
// well beyond what a receiver still asks for. pion's default (1024) holds
// a 1460-byte copy of each, 1.5 MB per viewer, and a viewer costs more
// while that much memory fills (fresh pages) and is cycled through.
const nackHistory = 512

// configureTWCCStamping is webrtc.ConfigureTWCCHeaderExtensionSender with
// Prism's stamping interceptor instead of pion's: it negotiates the
// transport-cc header extension on both kinds and stamps every outgoing
// packet with the connection's next transport-wide sequence number.
func configureTWCCStamping(me *webrtc.MediaEngine, ir *interceptor.Registry) error {
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, kind); err != nil {
			return err
		}
	}
	ir.Add(twccStamperFactory{})
	return nil
}

type twccStamperFactory struct{}

func (twccStamperFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &twccStamper{}, nil
}

// twccStamper does what pion's twcc.HeaderExtensionInterceptor does without
// its two allocations per packet (the marshalled extension and the grown
// Extensions slice): each stream stamps into its own buffer, and the
// header is handed back as it came once the packet is written. The
// writers below (congestion control, SRTP) only read the extension while
// the write lasts.
type twccStamper struct {
	interceptor.NoOp
	next atomic.Uint32 // transport-wide: one sequence for every stream of the connection
}

func (t *twccStamper) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	id := extensionID(info, sdp.TransportCCURI)
	if id == 0 {
		return writer // not negotiated
	}
	s := &twccStream{t: t, id: id, writer: writer}
	return s
}

// twccStream is one stream's stamping state. Media (the session's
// goroutine) and NACK retransmissions (an RTCP reader) write concurrently,
// hence the lock around the shared buffer.
type twccStream struct {
	t      *twccStamper
	id     uint8
	writer interceptor.RTPWriter

	mu  sync.Mutex
	ext [1]rtp.Extension
	buf [2]byte
}

func (s *twccStream) Write(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	binary.BigEndian.PutUint16(s.buf[:], uint16(s.t.next.Add(1)-1)) //nolint:gosec // wraps by design
	if h.Extension || len(h.Extensions) > 0 {
		// The packet has extensions of its own (Prism strips them; kept
		// for safety): pion's way, which may allocate.
		if err := h.SetExtension(s.id, append([]byte(nil), s.buf[:]...)); err != nil {
			return 0, err
		}
		return s.writer.Write(h, payload, a)
	}
	h.Extensions = s.ext[:0]
	if err := h.SetExtension(s.id, s.buf[:]); err != nil {
		h.Extensions = nil
		return 0, err
	}
	n, err := s.writer.Write(h, payload, a)
	h.Extension, h.ExtensionProfile, h.Extensions = false, 0, nil
	return n, err
}
