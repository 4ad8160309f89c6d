package srt

import (
	"bytes"
	"testing"
)

// tsPackets returns n TS packets whose bytes after the sync byte are their
// index, so that a test sees which packets came out.
func tsPackets(n int) []byte {
	b := make([]byte, 0, n*tsPacketSize)
	for i := range n {
		p := bytes.Repeat([]byte{byte(i + 1)}, tsPacketSize)
		p[0] = tsSync
		b = append(b, p...)
	}
	return b
}

// alignAll feeds chunks to a fresh aligner.
func alignAll(chunks ...[]byte) ([]byte, *tsAligner) {
	var a tsAligner
	var out []byte
	for _, c := range chunks {
		out = a.Append(out, c)
	}
	return out, &a
}

func TestAligner(t *testing.T) {
	ts := tsPackets(10)
	garbage := []byte{1, 2, 3, 0, 0xff}
	for _, ca := range []struct {
		name    string
		chunks  [][]byte
		want    []byte
		dropped uint64
	}{
		{"aligned payloads", [][]byte{ts[:7*188], ts[7*188:]}, ts, 0},
		{"payloads of 1456 (gosrt's sender)", [][]byte{ts[:1456], ts[1456:]}, ts, 0},
		{"byte at a time", splitEvery(ts, 1), ts, 0},
		{"garbage first", [][]byte{garbage, ts}, ts, 5},
		{"garbage first, split", [][]byte{garbage[:2], garbage[2:], ts[:100], ts[100:]}, ts, 5},
		{"trailing partial packet is held", [][]byte{ts[:3*188+50]}, ts[:3*188], 0},
		{"lost payload: the cut packet is dropped", [][]byte{ts[:188+100], ts[4*188+20:]}, append(append([]byte{}, ts[:188]...), ts[5*188:]...), 100 + 168},
		{"no sync at all", [][]byte{bytes.Repeat([]byte{0}, 1000)}, nil, 1000},
	} {
		t.Run(ca.name, func(t *testing.T) {
			got, a := alignAll(ca.chunks...)
			if !bytes.Equal(got, ca.want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(ca.want))
			}
			if a.dropped != ca.dropped {
				t.Fatalf("dropped %d, want %d", a.dropped, ca.dropped)
			}
		})
	}
}

func splitEvery(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// FuzzAligner: whatever a caller sends in whatever chunks, the aligner
// emits whole packets starting with the sync byte, accounts for every byte
// (emitted + dropped + pending = sent), holds less than a packet, and a
// stream of whole packets comes out unchanged however it is cut.
func FuzzAligner(f *testing.F) {
	ts := tsPackets(8)
	f.Add(ts, uint16(1316))
	f.Add(ts, uint16(1456))
	f.Add(append([]byte{0, 1, 2}, ts...), uint16(100))
	f.Add(append(ts[:300:300], ts[900:]...), uint16(188))
	f.Add([]byte{tsSync, tsSync, tsSync}, uint16(1))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		n := int(cut)%2000 + 1
		chunks := splitEvery(data, n)
		out, a := alignAll(chunks...)
		if len(out)%tsPacketSize != 0 {
			t.Fatalf("emitted %d bytes, not whole packets", len(out))
		}
		for i := 0; i < len(out); i += tsPacketSize {
			if out[i] != tsSync {
				t.Fatalf("packet at %d starts with %#x", i, out[i])
			}
		}
		if len(a.pend) >= tsPacketSize || (len(a.pend) > 0 && a.pend[0] != tsSync) {
			t.Fatalf("pending %d bytes", len(a.pend))
		}
		if uint64(len(out))+a.dropped+uint64(len(a.pend)) != uint64(len(data)) {
			t.Fatalf("%d emitted + %d dropped + %d pending != %d sent", len(out), a.dropped, len(a.pend), len(data))
		}
		// A clean stream survives any cut.
		clean := tsPackets(len(data)%20 + 1)
		got, _ := alignAll(splitEvery(clean, n)...)
		if !bytes.Equal(got, clean) {
			t.Fatalf("a clean stream cut every %d bytes came out different", n)
		}
	})
}
