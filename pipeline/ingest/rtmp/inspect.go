package rtmp

import (
	"errors"
	"io"

	"github.com/abema/go-mp4"
	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
)

// inspector sits between gortmplib's Reader and the connection. It sees
// what the Reader ignores (the unpublish commands, onMetaData, the AV1
// configuration, which the library drops) and filters the messages that
// would make the library's callbacks dereference a nil configuration.
type inspector struct {
	gortmplib.Conn

	unpublished bool
	fps         float64 // from onMetaData; 0 if not sent
	// AV1 sequence header OBUs: of the first TU carrying one, and of the
	// configuration. The TU's wins: gortmplib's own Writer (mediamtx
	// relaying) sends a placeholder configuration.
	av1TUHdr, av1ConfigHdr []byte
	video                  videoKind
	// onData, when set, sees every AMF0 data message (timed events).
	onData func(amf0.Data)
}

// videoKind is how gortmplib set up video track 0: by the first legacy
// config message or the first extended sequence start.
type videoKind int

const (
	videoUnset videoKind = iota
	videoH264
	videoH265
	videoOther
)

var errBadHEVCConfig = errors.New("rtmp: invalid HEVC decoder configuration")

func (in *inspector) Read() (message.Message, error) {
	for {
		if in.unpublished {
			// Nothing after deleteStream is media; do not wait for it.
			return nil, io.EOF
		}
		msg, err := in.Conn.Read()
		if err != nil {
			return nil, err
		}
		keep, err := in.inspect(msg)
		if err != nil {
			return nil, err
		}
		if keep {
			return msg, nil
		}
	}
}

func (in *inspector) inspect(msg message.Message) (bool, error) {
	switch m := msg.(type) {
	case *message.CommandAMF0:
		switch m.Name {
		case "FCUnpublish", "deleteStream", "closeStream":
			in.unpublished = true
		}

	case *message.DataAMF0:
		if fps := metadataFPS(m.Payload); fps > 0 {
			in.fps = fps
		}
		if in.onData != nil {
			in.onData(m.Payload)
		}

	case *message.Video:
		if m.Type != message.VideoTypeConfig {
			return true, nil
		}
		kind := videoH264
		if m.Codec == message.CodecH265 {
			kind = videoH265
			if !validHvcC(m.HEVCConfig) {
				return false, errBadHEVCConfig
			}
		}
		if in.video == videoUnset {
			in.video = kind
		}
		// A configuration of the other codec would reach the track's
		// callback with its own configuration nil.
		return in.video == kind, nil

	case *message.VideoExSequenceStart:
		return true, in.sequenceStart(m)

	case *message.VideoExCodedFrames:
		if m.FourCC == message.FourCCAV1 {
			in.frameSeqHdr(m.Payload)
		}

	case *message.VideoExFramesX:
		if m.FourCC == message.FourCCAV1 {
			in.frameSeqHdr(m.Payload)
		}

	case *message.VideoExMultitrack:
		if ss, ok := m.Wrapped.(*message.VideoExSequenceStart); ok {
			if m.TrackID != 0 {
				return true, checkSequenceStart(ss)
			}
			return true, in.sequenceStart(ss)
		}
	}
	return true, nil
}

func (in *inspector) sequenceStart(m *message.VideoExSequenceStart) error {
	if err := checkSequenceStart(m); err != nil {
		return err
	}
	if in.video != videoUnset {
		return nil
	}
	switch m.FourCC {
	case message.FourCCAVC:
		in.video = videoH264
	case message.FourCCHEVC:
		in.video = videoH265
	default:
		in.video = videoOther
	}
	if m.FourCC == message.FourCCAV1 && m.AV1Config != nil {
		in.av1ConfigHdr = findSeqHdr(m.AV1Config.ConfigOBUs)
	}
	return nil
}

func (in *inspector) av1SeqHdr() []byte {
	if in.av1TUHdr != nil {
		return in.av1TUHdr
	}
	return in.av1ConfigHdr
}

func (in *inspector) frameSeqHdr(buf []byte) {
	if in.av1TUHdr == nil {
		in.av1TUHdr = findSeqHdr(buf)
	}
}

// findSeqHdr returns the first sequence header OBU of an AV1 low-overhead
// bitstream, or nil.
func findSeqHdr(buf []byte) []byte {
	var bs av1.Bitstream
	if len(buf) == 0 || bs.Unmarshal(buf) != nil {
		return nil
	}
	for _, obu := range bs {
		if len(obu) > 0 && av1.OBUType((obu[0]>>3)&0xF) == av1.OBUTypeSequenceHeader {
			return obu
		}
	}
	return nil
}

func checkSequenceStart(m *message.VideoExSequenceStart) error {
	if m.FourCC == message.FourCCHEVC && !validHvcC(m.HEVCConfig) {
		return errBadHEVCConfig
	}
	return nil
}

// validHvcC rejects what gortmplib's NALU lookup would index out of range.
func validHvcC(c *mp4.HvcC) bool {
	if c == nil {
		return false
	}
	for _, a := range c.NaluArrays {
		if int(a.NumNalus) != len(a.Nalus) {
			return false
		}
		for _, n := range a.Nalus {
			if len(n.NALUnit) == 0 {
				return false
			}
		}
	}
	return true
}

// metadataFPS reads the frame rate of an onMetaData message
// (["@setDataFrame",] "onMetaData", {framerate: …}); 0 if absent or absurd.
func metadataFPS(payload amf0.Data) float64 {
	for i, v := range payload {
		if s, ok := v.(string); !ok || s != "onMetaData" || i+1 >= len(payload) {
			continue
		}
		var obj amf0.Object
		switch o := payload[i+1].(type) {
		case amf0.Object:
			obj = o
		case amf0.ECMAArray:
			obj = amf0.Object(o)
		default:
			return 0
		}
		for _, k := range []string{"framerate", "videoframerate"} {
			if f, ok := obj.GetFloat64(k); ok && f > 0 && f <= 1000 {
				return f
			}
		}
		return 0
	}
	return 0
}
