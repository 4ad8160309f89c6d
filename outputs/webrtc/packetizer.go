package webrtc

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/prism-streaming/prism/pipeline"
)

// rtpPayloadMTU is the largest RTP payload Prism sends. With the 12-byte RTP
// header, the 8-byte transport-cc extension, SRTP's 10-byte tag and IP/UDP
// headers a packet stays near 1250 bytes: below the 1280-byte IPv6 minimum
// MTU and the ~1300 bytes tunnels and VPNs leave.
const rtpPayloadMTU = 1188

// opusClockRate is Opus's RTP clock, whatever the encoder's sample rate.
const opusClockRate = 48000

// unit is one access unit of one track, packetized once and shared by every
// viewer that forwards it: neither the unit nor its packets are modified
// after creation (forwarders copy the header before rewriting it).
type unit struct {
	video    bool
	rung     int // index into the stream's rungs (video only)
	keyframe bool
	pts      int64     // in the track's clock
	ingest   time.Time // when the source frame entered the pipeline
	packets  []*rtp.Packet
	bytes    int // payload bytes of all packets
}

// rungPacketizer turns one rung's Annex-B access units into RTP packets.
// Owned by the goroutine that reads the job.
type rungPacketizer struct {
	payloader codecs.H264Payloader // keeps SPS/PPS to send them as STAP-A with the IDR
	seq       uint16
}

// packetizer packetizes a job's rungs and its Opus track. All rungs share one
// RTP timestamp base, so a viewer switched between rungs keeps a continuous
// timeline: every rung carries the same PTS for the same source frame.
type packetizer struct {
	rungOf    map[int]int // job track ID -> rung index
	opusTrack int         // job track ID, -1 when the job has no Opus
	opusRate  int
	videoBase uint32
	audioBase uint32
	rungs     []rungPacketizer
	audioSeq  uint16
}

func newPacketizer(rungOf map[int]int, nRungs int, opus *pipeline.Track) *packetizer {
	p := &packetizer{
		rungOf:    rungOf,
		opusTrack: -1,
		rungs:     make([]rungPacketizer, nRungs),
		// Random initial timestamps and sequence numbers (RFC 3550 §5.1).
		videoBase: randUint32(),
		audioBase: randUint32(),
		audioSeq:  uint16(randUint32()),
	}
	for i := range p.rungs {
		p.rungs[i].seq = uint16(randUint32())
	}
	if opus != nil {
		p.opusTrack, p.opusRate = opus.ID, opus.ClockRate
	}
	return p
}

// packetize returns the unit for a job packet, or nil for tracks it does not
// carry (AAC) and packets that produce no RTP payload.
func (p *packetizer) packetize(pkt *pipeline.Packet) *unit {
	if r, ok := p.rungOf[pkt.Track]; ok {
		rp := &p.rungs[r]
		payloads := rp.payloader.Payload(rtpPayloadMTU, pkt.Data)
		if len(payloads) == 0 {
			return nil
		}
		ts := p.videoBase + uint32(pkt.PTS) // video PTS are in 90 kHz, the H.264 RTP clock
		u := &unit{video: true, rung: r, keyframe: pkt.Keyframe, pts: pkt.PTS, ingest: pkt.Ingest}
		u.packets = buildPackets(payloads, ts, &rp.seq, true)
		for _, pl := range payloads {
			u.bytes += len(pl)
		}
		return u
	}
	if pkt.Track != p.opusTrack || len(pkt.Data) == 0 {
		return nil
	}
	pts := pkt.PTS
	if p.opusRate > 0 && p.opusRate != opusClockRate {
		pts = pts * opusClockRate / int64(p.opusRate)
	}
	u := &unit{pts: pkt.PTS, ingest: pkt.Ingest, bytes: len(pkt.Data)}
	// No marker on audio: for Opus it flags the start of a talkspurt, and
	// the encoder never pauses.
	u.packets = buildPackets([][]byte{pkt.Data}, p.audioBase+uint32(pts), &p.audioSeq, false)
	return u
}

// buildPackets wraps payloads of one access unit into packets with
// consecutive sequence numbers, the marker on the last when marker is set
// (video: end of frame). The packets live in one allocation.
func buildPackets(payloads [][]byte, ts uint32, seq *uint16, marker bool) []*rtp.Packet {
	arr := make([]rtp.Packet, len(payloads))
	out := make([]*rtp.Packet, len(payloads))
	for i, pl := range payloads {
		arr[i] = rtp.Packet{
			Header: rtp.Header{
				Version:        2,
				Marker:         marker && i == len(payloads)-1,
				SequenceNumber: *seq,
				Timestamp:      ts,
			},
			Payload: pl,
		}
		*seq++
		out[i] = &arr[i]
	}
	return out
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return binary.BigEndian.Uint32(b[:])
}
