package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// messages encodes p the way Publish does.
func messages(t testing.TB, p *pipeline.Packet, seq uint32, maxPayload int) [][]byte {
	t.Helper()
	n, err := chunkCount(len(p.Data), maxPayload)
	if err != nil {
		t.Fatal(err)
	}
	h := packetHeader(p, 0xabcdef, seq, n)
	room := maxPayload - headerLen
	var out [][]byte
	for i := range n {
		out = append(out, appendMessage(nil, h, i, p.Data[min(i*room, len(p.Data)):min((i+1)*room, len(p.Data))]))
	}
	return out
}

// feed pushes messages through a reassembler and returns the packets and
// whether any loss was reported.
func feed(t testing.TB, r *reassembler, msgs [][]byte) ([]*pipeline.Packet, bool) {
	t.Helper()
	var out []*pipeline.Packet
	lostAny := false
	for _, m := range msgs {
		h, data, err := decodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		p, lost := r.push(h, data)
		lostAny = lostAny || lost
		if p != nil {
			out = append(out, p)
		}
	}
	return out, lostAny
}

func TestWireRoundTrip(t *testing.T) {
	const maxPayload = 200
	room := maxPayload - headerLen
	ingest := time.Unix(0, 1_700_000_000_123_456_789)
	for _, size := range []int{0, 1, room - 1, room, room + 1, 3 * room, 3*room + 7} {
		data := bytes.Repeat([]byte{byte(size)}, size)
		p := &pipeline.Packet{Track: 3, Data: data, PTS: -5, DTS: 1 << 50, Duration: 1001, Keyframe: size%2 == 0, Ingest: ingest}
		msgs := messages(t, p, 7, maxPayload)
		for _, m := range msgs {
			if len(m) > maxPayload {
				t.Fatalf("size %d: a %d-byte message exceeds the max payload", size, len(m))
			}
		}
		var r reassembler
		got, lost := feed(t, &r, msgs)
		if lost || len(got) != 1 {
			t.Fatalf("size %d: %d packets, lost %v", size, len(got), lost)
		}
		g := got[0]
		if g.Track != 3 || !bytes.Equal(g.Data, data) || g.PTS != -5 || g.DTS != 1<<50 || g.Duration != 1001 || g.Keyframe != p.Keyframe || !g.Ingest.Equal(ingest) {
			t.Fatalf("size %d: got %+v", size, g)
		}
	}
	// No ingest time travels as none.
	var r reassembler
	got, _ := feed(t, &r, messages(t, &pipeline.Packet{Data: []byte{1}}, 1, maxPayload))
	if !got[0].Ingest.IsZero() {
		t.Fatalf("ingest %v, want zero", got[0].Ingest)
	}
}

func TestReassemblerReportsLoss(t *testing.T) {
	const maxPayload = 100
	pkt := func(n int) *pipeline.Packet { return &pipeline.Packet{Track: 0, Data: bytes.Repeat([]byte{9}, n)} }
	big := messages(t, pkt(200), 2, maxPayload) // 5 chunks of 44 bytes

	// A missing middle chunk drops that packet, and the next packet is
	// delivered with the loss reported.
	var r reassembler
	feed(t, &r, messages(t, pkt(10), 1, maxPayload))
	got, lost := feed(t, &r, append(append([][]byte{}, big[:2]...), big[3:]...))
	if len(got) != 0 || !lost {
		t.Fatalf("missing chunk: %d packets, lost %v", len(got), lost)
	}
	got, lost = feed(t, &r, messages(t, pkt(10), 3, maxPayload))
	if len(got) != 1 || lost {
		t.Fatalf("after the loss: %d packets, lost %v", len(got), lost)
	}

	// A gap in sequence numbers is a loss.
	got, lost = feed(t, &r, messages(t, pkt(10), 5, maxPayload))
	if len(got) != 1 || !lost {
		t.Fatalf("sequence gap: %d packets, lost %v", len(got), lost)
	}

	// A packet cut short (its last chunks never came) is dropped when the
	// next one starts.
	got, lost = feed(t, &r, messages(t, pkt(200), 6, maxPayload)[:3])
	if len(got) != 0 || lost {
		t.Fatalf("partial: %d packets, lost %v", len(got), lost)
	}
	got, lost = feed(t, &r, messages(t, pkt(10), 7, maxPayload))
	if len(got) != 1 || !lost {
		t.Fatalf("after a cut packet: %d packets, lost %v", len(got), lost)
	}

	// Joining in the middle of a chunked packet: nothing until the next.
	var late reassembler
	got, _ = feed(t, &late, append(messages(t, pkt(200), 8, maxPayload)[2:], messages(t, pkt(200), 9, maxPayload)...))
	if len(got) != 1 || len(got[0].Data) != 200 {
		t.Fatalf("late join: %d packets", len(got))
	}
}

// craft encodes one message with any header, valid or not.
func craft(h wireHeader, chunk int, data []byte) []byte { return appendMessage(nil, h, chunk, data) }

func TestWireRejectsMalformedMessages(t *testing.T) {
	good := messages(t, &pipeline.Packet{Data: []byte("abc")}, 1, 1000)[0]
	chunked := wireHeader{flags: flagChunked, instance: 1, seq: 1, chunks: 2, total: 5}
	with := func(edit func(h *wireHeader)) wireHeader { h := chunked; edit(&h); return h }
	cases := map[string][]byte{
		"short":                       good[:headerLen-1],
		"empty":                       nil,
		"version":                     append([]byte{9}, good[1:]...),
		"zero chunks":                 func() []byte { b := bytes.Clone(good); b[18], b[19] = 0, 0; return b }(),
		"chunk index":                 func() []byte { b := bytes.Clone(good); b[17] = 1; return b }(),
		"chunk past the count":        craft(chunked, 7, []byte("ab")),
		"length":                      append(bytes.Clone(good), 'x'),
		"unknown flag":                func() []byte { b := bytes.Clone(good); b[1] |= 0x80; return b }(),
		"chunked flag alone":          func() []byte { b := bytes.Clone(good); b[1] |= flagChunked; return b }(),
		"chunks without flag":         craft(with(func(h *wireHeader) { h.flags = 0 }), 0, []byte("abc")),
		"total 0xFFFFFFFF":            craft(with(func(h *wireHeader) { h.total = 0xFFFFFFFF }), 0, []byte("abc")),
		"total 0xFFFFFFFF, one chunk": craft(wireHeader{instance: 1, chunks: 1, total: 0xFFFFFFFF}, 0, []byte("abc")),
		"total over the cap":          craft(with(func(h *wireHeader) { h.chunks, h.total = maxChunks, maxPacketLen+1 }), 0, make([]byte, 2000)),
		"more than the chunks carry":  craft(with(func(h *wireHeader) { h.total = 7 }), 0, []byte("abc")),
		"less than the chunks carry":  craft(with(func(h *wireHeader) { h.chunks, h.total = 3, 6 }), 0, []byte("abc")),
		"empty chunk":                 craft(chunked, 1, nil),
		"chunk longer than the total": craft(chunked, 1, []byte("abcdef")),
	}
	for name, m := range cases {
		if _, _, err := decodeMessage(m); !errors.Is(err, ErrWire) {
			t.Errorf("%s: %v, want ErrWire", name, err)
		}
	}
	// What a follower can still tell from a malformed header: whose
	// message it was and of which track, to count the loss there.
	h, _, err := decodeMessage(craft(wireHeader{track: 1, instance: 42, chunks: 1, total: 0xFFFFFFFF}, 0, nil))
	if err == nil || h.instance != 42 || h.track != 1 {
		t.Errorf("header of a malformed message: %+v, %v", h, err)
	}
	if _, err := chunkCount(10, headerLen); !errors.Is(err, ErrWire) {
		t.Errorf("no room: %v", err)
	}
	if _, err := chunkCount(1<<30, headerLen+1); !errors.Is(err, ErrWire) {
		t.Errorf("too many chunks: %v", err)
	}
	if _, err := chunkCount(maxPacketLen+1, 1<<20); !errors.Is(err, ErrWire) {
		t.Errorf("packet over the cap: %v", err)
	}
}

// TestReassemblerBoundsMemory: a header may claim a packet of up to
// maxPacketLen, but the reassembler holds only what arrived (plus at most
// maxPrealloc), and chunks that do not fit the first one drop the packet.
func TestReassemblerBoundsMemory(t *testing.T) {
	room := 1024
	claim := wireHeader{flags: flagChunked | flagKeyframe, seq: 1, chunks: maxChunks, total: uint32(maxChunks * room)}
	if claim.total > maxPacketLen {
		t.Fatalf("test claim %d is over the cap", claim.total)
	}
	push := func(r *reassembler, h wireHeader, chunk int, data []byte) (*pipeline.Packet, bool) {
		t.Helper()
		h2, d, err := decodeMessage(craft(h, chunk, data))
		if err != nil {
			t.Fatalf("chunk %d: %v", chunk, err)
		}
		return r.push(h2, d)
	}
	var r reassembler
	if p, _ := push(&r, claim, 0, make([]byte, room)); p != nil {
		t.Fatal("a packet from its first chunk")
	}
	if c := cap(r.tracks[0].partial); c > maxPrealloc+8192 {
		t.Fatalf("a %d-byte claim preallocated %d bytes", claim.total, c)
	}
	// A second chunk of another size, or claiming another chunk count,
	// total or flags: the packet is lost.
	for name, edit := range map[string]func(h *wireHeader) []byte{
		"short chunk":  func(h *wireHeader) []byte { return make([]byte, room-1) },
		"long chunk":   func(h *wireHeader) []byte { return make([]byte, room+1) },
		"chunk count":  func(h *wireHeader) []byte { h.chunks--; h.total -= uint32(room); return make([]byte, room) },
		"total":        func(h *wireHeader) []byte { h.total--; return make([]byte, room) },
		"flags":        func(h *wireHeader) []byte { h.flags &^= flagKeyframe; return make([]byte, room) },
		"other packet": func(h *wireHeader) []byte { h.seq++; return make([]byte, room) },
	} {
		var r reassembler
		push(&r, claim, 0, make([]byte, room))
		h := claim
		data := edit(&h)
		if p, lost := push(&r, h, 1, data); p != nil || !lost || r.tracks[0].partial != nil {
			t.Errorf("%s: packet %v, lost %v, still reassembling %v", name, p != nil, lost, r.tracks[0].partial != nil)
		}
	}
	// The last chunk carries exactly the rest.
	small := wireHeader{flags: flagChunked, seq: 1, chunks: 3, total: 25}
	var r2 reassembler
	push(&r2, small, 0, make([]byte, 10))
	push(&r2, small, 1, make([]byte, 10))
	if p, lost := push(&r2, small, 2, make([]byte, 4)); p != nil || !lost {
		t.Errorf("short last chunk: packet %v, lost %v", p != nil, lost)
	}
	r2 = reassembler{}
	push(&r2, small, 0, make([]byte, 10))
	push(&r2, small, 1, make([]byte, 10))
	if p, lost := push(&r2, small, 2, make([]byte, 5)); p == nil || lost || len(p.Data) != 25 {
		t.Errorf("exact last chunk: packet %v, lost %v", p != nil, lost)
	}
	// A dropped (malformed) message ends the packet in progress.
	r2 = reassembler{}
	push(&r2, small, 0, make([]byte, 10))
	r2.drop(0)
	if p, lost := push(&r2, small, 1, make([]byte, 10)); p != nil || !lost {
		t.Errorf("after a drop: packet %v, lost %v", p != nil, lost)
	}
}

// splitFrames cuts a fuzz input into messages, each preceded by its
// length (2 bytes, big-endian); a length past the end takes the rest.
func splitFrames(in []byte) [][]byte {
	var out [][]byte
	for len(in) >= 2 {
		n := min(int(binary.BigEndian.Uint16(in)), len(in)-2)
		out = append(out, in[2:2+n])
		in = in[2+n:]
	}
	return out
}

// frames is the inverse of splitFrames.
func frames(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
		out = append(out, m...)
	}
	return out
}

// FuzzDecodeMessage feeds a sequence of arbitrary messages (framed as
// splitFrames reads them) to the decoder and one reassembler, as a
// follower would: they must reject or drop, never panic, never build a
// packet other than declared, and never hold more than the bytes received
// (plus the preallocation). The seeds in testdata/fuzz/FuzzDecodeMessage
// are hostile headers; `go test -fuzz FuzzDecodeMessage ./queue/relay`
// explores from them.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(frames(messages(f, &pipeline.Packet{Data: bytes.Repeat([]byte{1}, 300), Keyframe: true}, 1, 128)...))
	f.Add(frames(messages(f, &pipeline.Packet{Track: 1, Data: []byte("abc")}, 2, 128)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		var r reassembler
		received := 0
		for _, m := range splitFrames(in) {
			h, data, err := decodeMessage(m)
			if err != nil {
				if !errors.Is(err, ErrWire) {
					t.Fatalf("error %v is not ErrWire", err)
				}
				r.drop(h.track)
				continue
			}
			received += len(data)
			if h.total > maxPacketLen || len(data) > int(h.total) {
				t.Fatalf("accepted a chunk of %d bytes in a %d-byte packet", len(data), h.total)
			}
			p, _ := r.push(h, data)
			if p != nil && uint32(len(p.Data)) != h.total {
				t.Fatalf("packet of %d bytes, header says %d", len(p.Data), h.total)
			}
			for id, tr := range r.tracks {
				if tr.partial == nil {
					continue
				}
				if len(tr.partial) > int(tr.hdr.total) || len(tr.partial) > received {
					t.Fatalf("track %d: %d bytes reassembled of a %d-byte packet, %d received", id, len(tr.partial), tr.hdr.total, received)
				}
				if c := cap(tr.partial); c > maxPrealloc+2*len(tr.partial)+8192 {
					t.Fatalf("track %d: %d bytes held for %d received", id, c, len(tr.partial))
				}
			}
		}
	})
}
