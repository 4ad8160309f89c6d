package relay

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Wire format of one media message on media.<stream>.<track>: a fixed
// 56-byte big-endian header, then up to (max payload - 56) bytes of the
// packet's data. A packet larger than one message is split into chunks
// that repeat the header with their index; chunks of one packet are
// published back to back on one subject from one connection, which NATS
// delivers in order, so a receiver only has to notice a missing one.
//
//	off size field
//	  0    1 version (wireVersion)
//	  1    1 flags: 1 keyframe, 2 chunked, 4 ingest time present
//	  2    2 track index
//	  4    8 publisher instance (random per Publish call)
//	 12    4 sequence number of the packet on its track, +1 per packet
//	 16    2 chunk index
//	 18    2 chunk count (1 when not chunked)
//	 20    4 total data length of the packet
//	 24    8 PTS     (track clock)
//	 32    8 DTS     (track clock)
//	 40    8 duration (track clock)
//	 48    8 ingest time, Unix nanoseconds
//	 56      data
const (
	wireVersion = 1
	headerLen   = 56

	flagKeyframe = 1 << 0
	flagChunked  = 1 << 1
	flagIngest   = 1 << 2

	maxChunks = 1<<16 - 1
)

// wireHeader is the decoded header of one media message.
type wireHeader struct {
	flags              byte
	track              uint16
	instance           uint64
	seq                uint32
	chunk, chunks      uint16
	total              uint32
	pts, dts, duration int64
	ingest             int64
}

// chunkCount is how many messages of at most maxPayload bytes a packet of
// n data bytes needs.
func chunkCount(n, maxPayload int) (int, error) {
	room := maxPayload - headerLen
	if room <= 0 {
		return 0, fmt.Errorf("%w: max payload %d leaves no room after the %d-byte header", ErrWire, maxPayload, headerLen)
	}
	c := max((n+room-1)/room, 1)
	if c > maxChunks {
		return 0, fmt.Errorf("%w: a %d-byte packet needs %d chunks of %d bytes (at most %d)", ErrWire, n, c, room, maxChunks)
	}
	return c, nil
}

// packetHeader is the header every chunk of p shares.
func packetHeader(p *pipeline.Packet, instance uint64, seq uint32, chunks int) wireHeader {
	h := wireHeader{
		track: uint16(p.Track), instance: instance, seq: seq, chunks: uint16(chunks), total: uint32(len(p.Data)),
		pts: p.PTS, dts: p.DTS, duration: p.Duration,
	}
	if p.Keyframe {
		h.flags |= flagKeyframe
	}
	if chunks > 1 {
		h.flags |= flagChunked
	}
	if !p.Ingest.IsZero() {
		h.flags |= flagIngest
		h.ingest = p.Ingest.UnixNano()
	}
	return h
}

// appendMessage appends the header (with chunk index i) and data to dst.
func appendMessage(dst []byte, h wireHeader, i int, data []byte) []byte {
	var b [headerLen]byte
	b[0] = wireVersion
	b[1] = h.flags
	binary.BigEndian.PutUint16(b[2:], h.track)
	binary.BigEndian.PutUint64(b[4:], h.instance)
	binary.BigEndian.PutUint32(b[12:], h.seq)
	binary.BigEndian.PutUint16(b[16:], uint16(i))
	binary.BigEndian.PutUint16(b[18:], h.chunks)
	binary.BigEndian.PutUint32(b[20:], h.total)
	binary.BigEndian.PutUint64(b[24:], uint64(h.pts))
	binary.BigEndian.PutUint64(b[32:], uint64(h.dts))
	binary.BigEndian.PutUint64(b[40:], uint64(h.duration))
	binary.BigEndian.PutUint64(b[48:], uint64(h.ingest))
	return append(append(dst, b[:]...), data...)
}

// decodeMessage splits a media message into header and data.
func decodeMessage(msg []byte) (wireHeader, []byte, error) {
	var h wireHeader
	if len(msg) < headerLen {
		return h, nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrWire, len(msg))
	}
	if msg[0] != wireVersion {
		return h, nil, fmt.Errorf("%w: version %d, want %d", ErrWire, msg[0], wireVersion)
	}
	h.flags = msg[1]
	h.track = binary.BigEndian.Uint16(msg[2:])
	h.instance = binary.BigEndian.Uint64(msg[4:])
	h.seq = binary.BigEndian.Uint32(msg[12:])
	h.chunk = binary.BigEndian.Uint16(msg[16:])
	h.chunks = binary.BigEndian.Uint16(msg[18:])
	h.total = binary.BigEndian.Uint32(msg[20:])
	h.pts = int64(binary.BigEndian.Uint64(msg[24:]))
	h.dts = int64(binary.BigEndian.Uint64(msg[32:]))
	h.duration = int64(binary.BigEndian.Uint64(msg[40:]))
	h.ingest = int64(binary.BigEndian.Uint64(msg[48:]))
	data := msg[headerLen:]
	switch {
	case h.chunks == 0 || h.chunk >= h.chunks:
		return h, nil, fmt.Errorf("%w: chunk %d of %d", ErrWire, h.chunk, h.chunks)
	case h.chunks == 1 && uint32(len(data)) != h.total:
		return h, nil, fmt.Errorf("%w: %d data bytes, header says %d", ErrWire, len(data), h.total)
	case uint32(len(data)) > h.total:
		return h, nil, fmt.Errorf("%w: chunk of %d bytes in a %d-byte packet", ErrWire, len(data), h.total)
	}
	return h, data, nil
}

func (h *wireHeader) packet(data []byte) *pipeline.Packet {
	p := &pipeline.Packet{
		Track: int(h.track), Data: data, PTS: h.pts, DTS: h.dts, Duration: h.duration,
		Keyframe: h.flags&flagKeyframe != 0,
	}
	if h.flags&flagIngest != 0 {
		p.Ingest = time.Unix(0, h.ingest)
	}
	return p
}

// reassembler rebuilds packets from messages of one publisher and notices
// lost ones.
type reassembler struct {
	tracks map[uint16]*trackRx
}

type trackRx struct {
	started bool
	lastSeq uint32
	// the packet being reassembled, if any
	partial []byte
	hdr     wireHeader
	next    uint16 // next chunk index expected
}

// push takes one message. It returns the completed packet, if this message
// completed one, and whether packets were lost before or with it (a gap in
// sequence numbers, or chunks missing from a packet, which is dropped
// whole).
func (r *reassembler) push(h wireHeader, data []byte) (p *pipeline.Packet, lost bool) {
	if r.tracks == nil {
		r.tracks = make(map[uint16]*trackRx)
	}
	t := r.tracks[h.track]
	if t == nil {
		t = &trackRx{}
		r.tracks[h.track] = t
	}
	if h.chunk == 0 {
		if t.partial != nil {
			t.partial, lost = nil, true // the previous packet never completed
		}
		if t.started && h.seq != t.lastSeq+1 {
			lost = true
		}
		t.started, t.lastSeq = true, h.seq
		if h.chunks == 1 {
			return h.packet(data), lost
		}
		t.hdr, t.next = h, 1
		t.partial = append(make([]byte, 0, h.total), data...)
		return nil, lost
	}
	if t.partial == nil || h.seq != t.hdr.seq || h.chunk != t.next || h.total != t.hdr.total {
		// A chunk of a packet whose start we missed or that skipped one:
		// the packet cannot be completed.
		t.partial = nil
		t.started, t.lastSeq = true, h.seq
		return nil, true
	}
	t.partial = append(t.partial, data...)
	t.next++
	if t.next < t.hdr.chunks {
		return nil, false
	}
	if uint32(len(t.partial)) != t.hdr.total {
		t.partial = nil
		return nil, true
	}
	p = t.hdr.packet(t.partial)
	t.partial = nil
	return p, false
}
