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
//	  1    1 flags: 1 keyframe, 2 chunked, 4 ingest time present,
//	             8 discontinuity (the first packet after the job's source changed)
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
	wireVersion = 2 // 2: the discontinuity flag
	headerLen   = 56

	flagKeyframe = 1 << 0
	flagChunked  = 1 << 1
	flagIngest   = 1 << 2
	flagDiscont  = 1 << 3
	// knownFlags are the flags of wireVersion; a new flag needs a new
	// version, so a message with any other bit set is not ours.
	knownFlags = flagKeyframe | flagChunked | flagIngest | flagDiscont

	maxChunks = 1<<16 - 1

	// maxPacketLen bounds one packet on the wire, far above any encoded
	// frame (a 4K keyframe is a few MiB), so that a header cannot make a
	// follower hold more than this for one packet.
	maxPacketLen = 64 << 20
	// maxPrealloc bounds what a follower allocates for a chunked packet
	// before its chunks arrive: the rest grows with the data actually
	// received, so a header claiming a large packet costs no more than
	// the bytes sent with it.
	maxPrealloc = 1 << 20
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
	if n > maxPacketLen {
		return 0, fmt.Errorf("%w: a %d-byte packet is larger than %d bytes", ErrWire, n, maxPacketLen)
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
	if p.Discontinuity {
		h.flags |= flagDiscont
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

// decodeMessage splits a media message into header and data, and checks
// every field it can on its own: a follower gets messages from whoever can
// publish on the subject, so nothing in the header is trusted before it is
// checked. Once the fixed fields are read (the message is long enough and
// of our version), h holds them even with an error, so that the caller can
// count the loss on h.track. A packet's chunks all carry the same number of
// data bytes (the publisher's max payload less the header) except the
// last, so the first chunk shows how much a packet of h.chunks chunks can
// hold, and total must fit exactly: a header cannot claim more data than
// its chunks will bring.
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
	// Widened to 64 bits: chunks × chunk size overflows 32.
	n, total, chunks := uint64(len(data)), uint64(h.total), uint64(h.chunks)
	switch {
	case h.flags&^knownFlags != 0:
		return h, nil, fmt.Errorf("%w: unknown flags %#x", ErrWire, h.flags&^knownFlags)
	case h.chunks == 0 || h.chunk >= h.chunks:
		return h, nil, fmt.Errorf("%w: chunk %d of %d", ErrWire, h.chunk, h.chunks)
	case (h.flags&flagChunked != 0) != (h.chunks > 1):
		return h, nil, fmt.Errorf("%w: chunked flag %v with %d chunks", ErrWire, h.flags&flagChunked != 0, h.chunks)
	case total > maxPacketLen:
		return h, nil, fmt.Errorf("%w: a %d-byte packet is larger than %d bytes", ErrWire, total, maxPacketLen)
	case h.chunks == 1 && n != total:
		return h, nil, fmt.Errorf("%w: %d data bytes, header says %d", ErrWire, n, total)
	case n > total:
		return h, nil, fmt.Errorf("%w: chunk of %d bytes in a %d-byte packet", ErrWire, n, total)
	case h.chunks > 1 && n == 0:
		return h, nil, fmt.Errorf("%w: empty chunk %d of %d", ErrWire, h.chunk, h.chunks)
	case h.chunks > 1 && h.chunk == 0 && (total > chunks*n || total <= (chunks-1)*n):
		return h, nil, fmt.Errorf("%w: %d chunks of %d bytes cannot make a %d-byte packet", ErrWire, h.chunks, n, total)
	}
	return h, data, nil
}

func (h *wireHeader) packet(data []byte) *pipeline.Packet {
	p := &pipeline.Packet{
		Track: int(h.track), Data: data, PTS: h.pts, DTS: h.dts, Duration: h.duration,
		Keyframe: h.flags&flagKeyframe != 0, Discontinuity: h.flags&flagDiscont != 0,
	}
	if h.flags&flagIngest != 0 {
		p.Ingest = time.Unix(0, h.ingest)
	}
	return p
}

// reassembler rebuilds packets from messages of one publisher and notices
// lost ones. What it holds is bounded by what was received: a packet being
// reassembled preallocates at most maxPrealloc, grows only by chunks of the
// size its first chunk set, and never past its declared total (at most
// maxPacketLen). The caller passes only tracks the stream has, so it keeps
// state for those alone.
type reassembler struct {
	tracks map[uint16]*trackRx
}

type trackRx struct {
	started bool
	lastSeq uint32
	// the packet being reassembled, if any
	partial []byte
	hdr     wireHeader
	room    int    // data bytes in each of its chunks but the last
	next    uint16 // next chunk index expected
}

func (r *reassembler) track(id uint16) *trackRx {
	if r.tracks == nil {
		r.tracks = make(map[uint16]*trackRx)
	}
	t := r.tracks[id]
	if t == nil {
		t = &trackRx{}
		r.tracks[id] = t
	}
	return t
}

// drop records a message of the track that could not be decoded: whatever
// packet it belonged to is lost, and so is the one being reassembled.
func (r *reassembler) drop(track uint16) {
	r.track(track).partial = nil
}

// push takes one decoded message (decodeMessage checked it on its own). It
// returns the completed packet, if this message completed one, and whether
// packets were lost before or with it (a gap in sequence numbers, or
// chunks missing from a packet, or a chunk that does not fit the packet,
// which is then dropped whole).
func (r *reassembler) push(h wireHeader, data []byte) (p *pipeline.Packet, lost bool) {
	t := r.track(h.track)
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
		t.hdr, t.next, t.room = h, 1, len(data)
		t.partial = append(make([]byte, 0, min(int(h.total), maxPrealloc)), data...)
		return nil, lost
	}
	if t.partial == nil || h.seq != t.hdr.seq || h.chunk != t.next || h.chunks != t.hdr.chunks ||
		h.total != t.hdr.total || h.flags != t.hdr.flags || len(data) != t.chunkLen(h.chunk) {
		// A chunk of a packet whose start we missed, that skipped one, or
		// that does not match its first chunk: the packet cannot be
		// completed.
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

// chunkLen is how many data bytes chunk i of the packet being reassembled
// carries: the first chunk's size, the rest in the last.
func (t *trackRx) chunkLen(i uint16) int {
	if i < t.hdr.chunks-1 {
		return t.room
	}
	return int(t.hdr.total) - int(t.hdr.chunks-1)*t.room
}
