package srt

import "bytes"

// MPEG-TS framing.
const (
	tsPacketSize = 188
	tsSync       = 0x47
)

// tsAligner cuts the byte stream an SRT caller sends into whole 188-byte
// TS packets, so that no pipeline.Packet ever holds part of one. Encoders
// send 7 packets per SRT payload, but nothing forces a caller to: a
// packet may straddle payloads, and bytes before a sync byte (garbage, or
// the rest of a packet whose start was lost) are dropped.
type tsAligner struct {
	pend    []byte // the start of a packet (pend[0] == tsSync), < 188 bytes
	dropped uint64 // bytes dropped to find sync
}

// Append appends to dst the whole packets that p completes and returns it.
func (a *tsAligner) Append(dst, p []byte) []byte {
	for len(p) > 0 {
		if len(a.pend) > 0 {
			need := tsPacketSize - len(a.pend)
			if len(p) < need {
				a.pend = append(a.pend, p...)
				return dst
			}
			if len(p) > need && p[need] != tsSync {
				// The next packet does not start where this one ends: what
				// is pending belongs to a packet cut short (a payload lost
				// in between), so drop it and look for sync in p.
				a.dropped += uint64(len(a.pend))
				a.pend = a.pend[:0]
				continue
			}
			dst = append(dst, a.pend...)
			dst = append(dst, p[:need]...)
			a.pend = a.pend[:0]
			p = p[need:]
			continue
		}
		if p[0] != tsSync {
			i := bytes.IndexByte(p, tsSync)
			if i < 0 {
				a.dropped += uint64(len(p))
				return dst
			}
			a.dropped += uint64(i)
			p = p[i:]
		}
		if len(p) < tsPacketSize {
			a.pend = append(a.pend, p...)
			return dst
		}
		// Whole packets in place (the common case): one copy.
		n := tsPacketSize
		for n+tsPacketSize <= len(p) && p[n] == tsSync {
			n += tsPacketSize
		}
		dst = append(dst, p[:n]...)
		p = p[n:]
	}
	return dst
}
