package relay

import (
	"bytes"
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

func TestWireRejectsMalformedMessages(t *testing.T) {
	good := messages(t, &pipeline.Packet{Data: []byte("abc")}, 1, 1000)[0]
	cases := map[string][]byte{
		"short":       good[:headerLen-1],
		"version":     append([]byte{9}, good[1:]...),
		"zero chunks": func() []byte { b := bytes.Clone(good); b[18], b[19] = 0, 0; return b }(),
		"chunk index": func() []byte { b := bytes.Clone(good); b[17] = 1; return b }(),
		"length":      append(bytes.Clone(good), 'x'),
	}
	for name, m := range cases {
		if _, _, err := decodeMessage(m); !errors.Is(err, ErrWire) {
			t.Errorf("%s: %v, want ErrWire", name, err)
		}
	}
	if _, err := chunkCount(10, headerLen); !errors.Is(err, ErrWire) {
		t.Errorf("no room: %v", err)
	}
	if _, err := chunkCount(1<<30, headerLen+1); !errors.Is(err, ErrWire) {
		t.Errorf("too many chunks: %v", err)
	}
}

// FuzzWire feeds arbitrary messages to the decoder and reassembler: they
// must reject or drop, never panic or build a packet longer than declared.
func FuzzWire(f *testing.F) {
	for _, m := range messages(f, &pipeline.Packet{Data: bytes.Repeat([]byte{1}, 300), Keyframe: true}, 1, 128) {
		f.Add(m)
	}
	f.Add([]byte{1})
	var r reassembler
	f.Fuzz(func(t *testing.T, m []byte) {
		h, data, err := decodeMessage(m)
		if err != nil {
			return
		}
		if p, _ := r.push(h, data); p != nil && uint32(len(p.Data)) != h.total {
			t.Fatalf("packet of %d bytes, header says %d", len(p.Data), h.total)
		}
	})
}
