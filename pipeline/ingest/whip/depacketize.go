package whip

import (
	"encoding/binary"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// Bounds of one reassembled video frame: an access unit larger than this is
// dropped (a 4K IDR at high quality is a few MiB), and so is one with an
// absurd number of NAL units (each costs a slice header).
const (
	maxFrameBytes = 8 << 20
	maxFrameNALUs = 1024
)

// frame is one reassembled video access unit. A broken frame (loss, a
// missing fragment, an oversized or malformed one) carries no data: the
// receiver must wait for the next keyframe.
type frame struct {
	ts       uint32
	data     []byte // H.264: Annex-B NAL units; VP8: the frame
	keyframe bool
	broken   bool
}

// depacketizer turns in-order RTP packets of one video stream into frames.
// lost says packets were missing just before p. emit may be called twice
// for one packet (the previous frame ended by a timestamp change, then
// this one by its marker bit).
type depacketizer interface {
	push(p *rtp.Packet, lost bool, emit func(frame))
}

// assembler holds the frame being reassembled: frames end on the marker
// bit or when the RTP timestamp changes (a lost marker), and a frame any
// loss may have touched is broken: the one in progress and the one the
// packet after the gap belongs to (the lost packets may be its head).
type assembler struct {
	active bool
	ts     uint32
	broken bool
	size   int
}

// begin starts or continues the frame of p, emitting the previous one when
// p's timestamp differs. It returns false when p belongs to a frame that is
// already broken (the caller skips its payload).
func (a *assembler) begin(p *rtp.Packet, lost bool, finish func()) bool {
	if a.active && p.Timestamp != a.ts {
		finish()
	}
	if lost && a.active {
		a.broken = true
	}
	if !a.active {
		a.active, a.ts, a.broken, a.size = true, p.Timestamp, lost, 0
	}
	return !a.broken
}

// sequence notices a sequence-number gap the reorder did not report (it
// reports every gap it skips, so this only guards the depacketizer
// against callers and inputs that break that promise).
type sequence struct {
	known bool
	last  uint16
}

func (s *sequence) gap(p *rtp.Packet) bool {
	gap := s.known && p.SequenceNumber != s.last+1
	s.known, s.last = true, p.SequenceNumber
	return gap
}

// grow accounts n more bytes, breaking the frame beyond maxFrameBytes.
func (a *assembler) grow(n int) bool {
	a.size += n
	if a.size > maxFrameBytes {
		a.broken = true
	}
	return !a.broken
}

// h264Depacketizer reassembles RFC 6184 packetization-mode 1 (single NAL
// unit, STAP-A, FU-A) into Annex-B access units.
type h264Depacketizer struct {
	seq   sequence
	asm   assembler
	nalus [][]byte
	fua   []byte // the NAL unit being reassembled from FU-A fragments, nil when none
}

var annexBStartCode = []byte{0, 0, 0, 1}

func (d *h264Depacketizer) push(p *rtp.Packet, lost bool, emit func(frame)) {
	lost = d.seq.gap(p) || lost
	if len(p.Payload) == 0 {
		// Padding-only (bandwidth probes): it holds a sequence number but
		// no media, and says nothing about frame boundaries.
		return
	}
	if d.asm.begin(p, lost, func() { d.finish(emit) }) {
		d.depacketize(p.Payload)
	}
	if p.Marker {
		d.finish(emit)
	}
}

func (d *h264Depacketizer) depacketize(b []byte) {
	switch typ := b[0] & 0x1f; typ {
	case 24: // STAP-A: 16-bit size, NAL unit, ...
		if d.fua != nil {
			d.asm.broken = true // the fragmented NAL unit never ended
			return
		}
		b = b[1:]
		for len(b) > 0 {
			if len(b) < 2 {
				d.asm.broken = true
				return
			}
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n == 0 || n > len(b) {
				d.asm.broken = true
				return
			}
			d.add(b[:n])
			b = b[n:]
		}
	case 28: // FU-A
		if len(b) < 3 {
			d.asm.broken = true
			return
		}
		start, end := b[1]&0x80 != 0, b[1]&0x40 != 0
		switch {
		case start && d.fua != nil, !start && d.fua == nil:
			// A start before the previous NAL unit ended, or a middle
			// without its start: a fragment is missing.
			d.asm.broken = true
			return
		case start:
			if !d.asm.grow(len(b) - 1) {
				return
			}
			d.fua = append(make([]byte, 0, 4*len(b)), b[0]&0xe0|b[1]&0x1f)
		default:
			if !d.asm.grow(len(b) - 2) {
				return
			}
		}
		d.fua = append(d.fua, b[2:]...)
		if end {
			d.nalus = append(d.nalus, d.fua)
			d.fua = nil
			if len(d.nalus) > maxFrameNALUs {
				d.asm.broken = true
			}
		}
	case 0, 25, 26, 27, 29, 30, 31:
		// Reserved, STAP-B, MTAP16/24, FU-B: not in packetization-mode 1.
		d.asm.broken = true
	default:
		if d.fua != nil {
			d.asm.broken = true
			return
		}
		d.add(b)
	}
}

// add appends one whole NAL unit (copied: b is the packet's memory).
func (d *h264Depacketizer) add(b []byte) {
	if !d.asm.grow(len(b)) {
		return
	}
	d.nalus = append(d.nalus, append([]byte(nil), b...))
	if len(d.nalus) > maxFrameNALUs {
		d.asm.broken = true
	}
}

func (d *h264Depacketizer) finish(emit func(frame)) {
	if !d.asm.active {
		return
	}
	f := frame{ts: d.asm.ts, broken: d.asm.broken || d.fua != nil || len(d.nalus) == 0}
	if !f.broken {
		size := 0
		for _, n := range d.nalus {
			size += len(annexBStartCode) + len(n)
			if n[0]&0x1f == 5 {
				f.keyframe = true
			}
		}
		f.data = make([]byte, 0, size)
		for _, n := range d.nalus {
			f.data = append(append(f.data, annexBStartCode...), n...)
		}
	}
	d.asm = assembler{}
	clear(d.nalus)
	d.nalus, d.fua = d.nalus[:0], nil
	emit(f)
}

// vp8Depacketizer reassembles RFC 7741 VP8 frames.
type vp8Depacketizer struct {
	seq  sequence
	asm  assembler
	data []byte
	pkt  codecs.VP8Packet
}

func (d *vp8Depacketizer) push(p *rtp.Packet, lost bool, emit func(frame)) {
	lost = d.seq.gap(p) || lost
	if len(p.Payload) == 0 {
		return
	}
	if d.asm.begin(p, lost, func() { d.finish(emit) }) {
		d.depacketize(p.Payload)
	}
	if p.Marker {
		d.finish(emit)
	}
}

func (d *vp8Depacketizer) depacketize(b []byte) {
	payload, err := d.pkt.Unmarshal(b)
	if err != nil {
		d.asm.broken = true
		return
	}
	first := d.pkt.S == 1 && d.pkt.PID == 0
	if first != (len(d.data) == 0) {
		// A frame's first packet must be the start of partition 0, and
		// only it.
		d.asm.broken = true
		return
	}
	if !d.asm.grow(len(payload)) {
		return
	}
	d.data = append(d.data, payload...)
}

func (d *vp8Depacketizer) finish(emit func(frame)) {
	if !d.asm.active {
		return
	}
	f := frame{ts: d.asm.ts, broken: d.asm.broken || len(d.data) == 0}
	if !f.broken {
		f.data = d.data
		f.keyframe = d.data[0]&0x01 == 0 // the frame tag's inverted key-frame bit
	}
	d.asm = assembler{}
	d.data = nil
	emit(f)
}

// vp8Size reads the size from a VP8 keyframe's header (RFC 6386 §9.1: a
// 3-byte frame tag, the start code 9d 01 2a, then 14-bit width and height).
func vp8Size(b []byte) (w, h int, ok bool) {
	if len(b) < 10 || b[0]&0x01 != 0 || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a {
		return 0, 0, false
	}
	w = int(binary.LittleEndian.Uint16(b[6:]) & 0x3fff)
	h = int(binary.LittleEndian.Uint16(b[8:]) & 0x3fff)
	return w, h, w > 0 && h > 0
}
