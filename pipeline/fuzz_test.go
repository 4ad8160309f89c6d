package pipeline

import (
	"bytes"
	"slices"
	"testing"
)

// fuzzMaxAccessUnit bounds a fuzzed access unit: an IDR of a 4K rung is a
// few hundred KiB.
const fuzzMaxAccessUnit = 1 << 20

// annexB joins NAL units with 4-byte start codes.
func annexB(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = append(b, 0, 0, 0, 1)
		b = append(b, n...)
	}
	return b
}

// FuzzH264 feeds access units (what an encoder or a relay peer hands the
// pipeline) to the Annex-B helpers: SplitAnnexB, ParameterSets, IsIDR and
// AnnexBExtradata. None may panic. SplitAnnexB returns NAL units in order,
// inside the input, none holding a start code, and they survive a round
// trip (joined with start codes, they split the same); ParameterSets
// returns the first SPS and PPS, IsIDR whether an IDR slice is there, and
// AnnexBExtradata fails exactly without both, or builds extradata that
// gives the same SPS and PPS back and holds no IDR.
func FuzzH264(f *testing.F) {
	sps := []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x6a, 0x02, 0x02, 0x02, 0x80}
	pps := []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
	sei := []byte{0x06, 0x05, 0x10, 0xdc, 0x45, 0xe9, 0xbd, 0xe6, 0xd9, 0x48, 0xb7, 0x96, 0x2c, 0xd8, 0x20, 0xd9, 0x23, 0xee, 0xef, 0x80}
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x33, 0xff, 0xfe, 0xf6, 0xf0, 0xfe, 0x05, 0x36, 0x56, 0x04, 0x50, 0x96, 0x7b, 0x3f, 0x53, 0xe1}
	slice := []byte{0x41, 0x9a, 0x24, 0x6c, 0x42, 0xbf, 0xfe, 0x38, 0x40, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x01}
	aud := []byte{0x09, 0xf0}
	f.Add(annexB(aud, sps, pps, sei, idr))
	f.Add(annexB(slice))
	f.Add(append([]byte{0, 0, 1}, append(append(sps, 0, 0, 1), append(pps, 0, 0, 1, 0x65, 0xb8)...)...)) // 3-byte start codes
	f.Add(annexB(sps, pps))
	f.Add([]byte{0, 0, 0, 1, 0x67, 0, 0, 1, 0x68, 0, 0, 0, 0, 1, 0x65, 0, 0, 0})
	f.Add([]byte{0, 0, 1})
	f.Add([]byte{0, 0, 1, 0, 0, 1})
	f.Add(idr) // no start code
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, au []byte) {
		if len(au) > fuzzMaxAccessUnit {
			return
		}
		nalus := SplitAnnexB(au)
		// Each NAL unit is a slice of au (at cap(au)-cap(n)), after a start
		// code and after the previous unit, and ends at the next start code
		// or at the end of au.
		prevEnd := 0
		for i, n := range nalus {
			if bytes.Contains(n, []byte{0, 0, 1}) {
				t.Fatalf("NAL unit %d holds a start code: %x", i, n)
			}
			if len(n) == 0 {
				continue
			}
			start := cap(au) - cap(n)
			end := start + len(n)
			if start < 3 || end > len(au) || &au[start] != &n[0] {
				t.Fatalf("NAL unit %d (%x) is not a slice of the input", i, n)
			}
			if start < prevEnd || !bytes.Equal(au[start-3:start], []byte{0, 0, 1}) {
				t.Fatalf("NAL unit %d at %d: not after a start code and after the previous unit (ends at %d)", i, start, prevEnd)
			}
			if rest := au[end:]; len(rest) > 0 && !bytes.HasPrefix(rest, []byte{0, 0, 1}) && !bytes.HasPrefix(rest, []byte{0, 0, 0, 1}) {
				t.Fatalf("NAL unit %d ends at %d, before %x", i, end, rest[:min(len(rest), 4)])
			}
			prevEnd = end
		}
		var nonEmpty [][]byte
		for _, n := range nalus {
			if len(n) > 0 {
				nonEmpty = append(nonEmpty, n)
			}
		}
		again := slices.DeleteFunc(SplitAnnexB(annexB(nonEmpty...)), func(n []byte) bool { return len(n) == 0 })
		if !slices.EqualFunc(again, nonEmpty, bytes.Equal) {
			t.Fatalf("round trip of %x: %x", nonEmpty, again)
		}

		var wantSPS, wantPPS []byte
		wantIDR := false
		for _, n := range nonEmpty {
			switch n[0] & 0x1f {
			case naluTypeSPS:
				if wantSPS == nil {
					wantSPS = n
				}
			case naluTypePPS:
				if wantPPS == nil {
					wantPPS = n
				}
			case naluTypeIDR:
				wantIDR = true
			}
		}
		gotSPS, gotPPS := ParameterSets(au)
		if !bytes.Equal(gotSPS, wantSPS) || !bytes.Equal(gotPPS, wantPPS) || (gotSPS == nil) != (wantSPS == nil) || (gotPPS == nil) != (wantPPS == nil) {
			t.Fatalf("ParameterSets = %x, %x; want %x, %x", gotSPS, gotPPS, wantSPS, wantPPS)
		}
		if IsIDR(au) != wantIDR {
			t.Fatalf("IsIDR = %v, want %v", !wantIDR, wantIDR)
		}

		extra, err := AnnexBExtradata(au)
		if (err != nil) != (wantSPS == nil || wantPPS == nil) {
			t.Fatalf("AnnexBExtradata error %v with SPS %x and PPS %x", err, wantSPS, wantPPS)
		}
		if err != nil {
			if extra != nil {
				t.Fatalf("AnnexBExtradata returned %x with error %v", extra, err)
			}
			return
		}
		if !bytes.Equal(extra, annexB(wantSPS, wantPPS)) {
			t.Fatalf("extradata %x, want start code, SPS %x, start code, PPS %x", extra, wantSPS, wantPPS)
		}
		if s, p := ParameterSets(extra); !bytes.Equal(s, wantSPS) || !bytes.Equal(p, wantPPS) {
			t.Fatalf("extradata %x gives back %x, %x; want %x, %x", extra, s, p, wantSPS, wantPPS)
		}
		if IsIDR(extra) {
			t.Fatalf("extradata %x holds an IDR", extra)
		}
	})
}
