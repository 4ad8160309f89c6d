package pipeline

import "fmt"

// H.264 Annex-B helpers shared by the transcoder, the file writer and the
// outputs. NAL unit types Prism cares about:
const (
	naluTypeIDR = 5
	naluTypeSPS = 7
	naluTypePPS = 8
)

// SplitAnnexB returns the NAL units of an Annex-B access unit, without start
// codes. The returned slices share b's memory.
func SplitAnnexB(b []byte) [][]byte {
	var nalus [][]byte
	start := -1
	for i := 0; i+2 < len(b); {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				if end > start && b[end-1] == 0 { // 4-byte start code
					end--
				}
				nalus = append(nalus, b[start:end])
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 && start < len(b) {
		nalus = append(nalus, b[start:])
	}
	return nalus
}

// ParameterSets returns the first SPS and PPS of an Annex-B access unit.
func ParameterSets(au []byte) (sps, pps []byte) {
	for _, n := range SplitAnnexB(au) {
		if len(n) == 0 {
			continue
		}
		switch n[0] & 0x1f {
		case naluTypeSPS:
			if sps == nil {
				sps = n
			}
		case naluTypePPS:
			if pps == nil {
				pps = n
			}
		}
	}
	return sps, pps
}

// IsIDR reports whether an Annex-B access unit holds an IDR slice.
func IsIDR(au []byte) bool {
	for _, n := range SplitAnnexB(au) {
		if len(n) > 0 && n[0]&0x1f == naluTypeIDR {
			return true
		}
	}
	return false
}

// AnnexBExtradata builds Annex-B codec extradata (start code, SPS, start
// code, PPS) from the parameter sets of a keyframe, as muxers accept it.
func AnnexBExtradata(keyframe []byte) ([]byte, error) {
	sps, pps := ParameterSets(keyframe)
	if sps == nil || pps == nil {
		return nil, fmt.Errorf("keyframe carries no SPS/PPS")
	}
	out := make([]byte, 0, 8+len(sps)+len(pps))
	out = append(out, 0, 0, 0, 1)
	out = append(out, sps...)
	out = append(out, 0, 0, 0, 1)
	return append(out, pps...), nil
}
