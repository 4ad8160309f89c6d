package pipeline

import (
	"bytes"
	"testing"
)

func TestAnnexB(t *testing.T) {
	au := []byte{0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 1, 0x68, 4, 0, 0, 0, 1, 0x65, 5, 6}
	nalus := SplitAnnexB(au)
	if len(nalus) != 3 || !bytes.Equal(nalus[0], []byte{0x67, 1, 2, 3}) || !bytes.Equal(nalus[1], []byte{0x68, 4}) {
		t.Fatalf("%x", nalus)
	}
	sps, pps := ParameterSets(au)
	if sps[0] != 0x67 || pps[0] != 0x68 || !IsIDR(au) {
		t.Error("parameter sets or IDR not found")
	}
	x, err := AnnexBExtradata(au)
	if err != nil || !bytes.Equal(x, []byte{0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 0, 1, 0x68, 4}) {
		t.Errorf("%x %v", x, err)
	}
	if _, err := AnnexBExtradata([]byte{0, 0, 1, 0x41, 9}); err == nil {
		t.Error("no error for a frame without parameter sets")
	}
}
