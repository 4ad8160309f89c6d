package whip

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// fuzzPackets reads a packet sequence from fuzz input: per packet a flags
// byte (bit 0 marker, bit 1 new timestamp), a sequence step, a length and
// that many payload bytes.
func fuzzPackets(data []byte, each func(p *rtp.Packet, step time.Duration)) {
	var seq uint16
	var ts uint32
	for len(data) >= 3 {
		flags, step, n := data[0], data[1], int(data[2])
		data = data[3:]
		n = min(n, len(data))
		payload := append([]byte(nil), data[:n]...)
		data = data[n:]
		seq += uint16(int8(step))
		if flags&2 != 0 {
			ts += 3000
		}
		each(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: flags&1 != 0}, Payload: payload},
			time.Duration(flags>>2)*10*time.Millisecond)
	}
}

// FuzzDepacketize feeds random RTP sequences through the reorder buffer
// and both depacketizers: no panic, bounded frames, Annex-B out.
func FuzzDepacketize(f *testing.F) {
	var seed []byte
	add := func(flags, step byte, payload []byte) {
		seed = append(seed, flags, step, byte(len(payload)))
		seed = append(seed, payload...)
	}
	add(2, 1, stapA([]byte{0x67, 1, 2}, []byte{0x68, 3}))
	for i, fr := range fuA(append([]byte{0x65}, bytes.Repeat([]byte{5}, 200)...), 3) {
		add(byte(i/2), 1, fr)
	}
	add(3, 1, []byte{0x41, 1, 2})
	add(3, 2, []byte{0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00})
	add(1, 0xff, []byte{28, 0x45, 1})
	f.Add(seed)
	f.Add([]byte{0, 1, 3, 24, 0, 9, 3, 1, 2, 28, 0x80})
	f.Add([]byte{1, 5, 4, 0x90, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Unix(0, 0)
		r := newReorder(reorderMaxPackets, reorderMaxDelay)
		h, v := &h264Depacketizer{}, &vp8Depacketizer{}
		check := func(f frame) {
			if f.broken {
				if f.data != nil {
					t.Fatal("a broken frame with data")
				}
				return
			}
			if len(f.data) > 2*maxFrameBytes {
				t.Fatalf("frame of %d bytes", len(f.data))
			}
		}
		fuzzPackets(data, func(p *rtp.Packet, step time.Duration) {
			now = now.Add(step)
			r.push(p, now, func(p *rtp.Packet, lost bool) {
				h.push(p, lost, func(f frame) {
					check(f)
					if !f.broken && !bytes.HasPrefix(f.data, annexBStartCode) {
						t.Fatal("an H.264 frame that is not Annex-B")
					}
				})
				v.push(p, lost, check)
			})
		})
		if r.count > reorderMaxPackets {
			t.Fatalf("reorder holds %d packets", r.count)
		}
	})
}

// FuzzVP8Size: any frame header parses or is refused, sizes within 14 bits.
func FuzzVP8Size(f *testing.F) {
	f.Add([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00})
	f.Add([]byte{0x11, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if w, h, ok := vp8Size(b); ok && (w <= 0 || h <= 0 || w > 0x3fff || h > 0x3fff) {
			t.Fatalf("%dx%d", w, h)
		}
	})
}

// FuzzInspectOffer: the offer check never panics, and what it accepts
// names its source section.
func FuzzInspectOffer(f *testing.F) {
	f.Add(chromeLikeOffer)
	f.Add("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=bundle-only\r\na=simulcast:send ~;;,\r\n")
	f.Add("v=0\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		info, err := inspectOffer(s)
		if err == nil && info.videoMid == "" {
			t.Fatal("accepted without a video section")
		}
		if len(info.rids) > maxRIDs {
			t.Fatalf("%d RIDs", len(info.rids))
		}
	})
}

// FuzzParseSDPFrag: trickle bodies never panic.
func FuzzParseSDPFrag(f *testing.F) {
	f.Add("a=ice-ufrag:u\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n")
	f.Add("a=end-of-candidates\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		frag, err := parseSDPFrag(s)
		if err == nil && len(frag.candidates) > len(s)/12+1 {
			t.Fatalf("%d candidates from %d bytes", len(frag.candidates), len(s))
		}
	})
}
