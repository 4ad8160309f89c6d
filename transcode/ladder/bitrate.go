package ladder

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Bitrate is a rate in bits per second. In YAML it is an integer (bps) or a
// string with an optional decimal unit: "800000", "2500k", "2.5M", "5Mbps".
type Bitrate int64

// String prints the shortest exact form: "5M", "2500k" or "800001".
func (b Bitrate) String() string {
	switch {
	case b != 0 && b%1_000_000 == 0:
		return strconv.FormatInt(int64(b/1_000_000), 10) + "M"
	case b != 0 && b%1000 == 0:
		return strconv.FormatInt(int64(b/1000), 10) + "k"
	default:
		return strconv.FormatInt(int64(b), 10)
	}
}

// MarshalText implements encoding.TextMarshaler.
func (b Bitrate) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler using ParseBitrate.
func (b *Bitrate) UnmarshalText(text []byte) error {
	v, err := ParseBitrate(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// maxBitrateText bounds the input so that pathological strings cannot make
// the exact (big.Rat) arithmetic expensive.
const maxBitrateText = 32

// ParseBitrate parses "800000", "2500k", "2.5M" or "5Mbps" (k/K = 1000,
// m/M = 1e6; an optional "bps" suffix). The result must be a whole,
// non-negative number of bits per second.
func ParseBitrate(s string) (Bitrate, error) {
	text := strings.TrimSpace(s)
	if text == "" {
		return 0, fmt.Errorf("empty bitrate (want e.g. 2500k, 2.5M or 800000)")
	}
	if len(text) > maxBitrateText {
		return 0, fmt.Errorf("invalid bitrate %q: too long", clip(text))
	}
	if strings.HasPrefix(text, "-") {
		return 0, fmt.Errorf("invalid bitrate %q: must not be negative", text)
	}
	number, unit := splitBitrateUnit(text)
	multiplier, ok := bitrateUnits[unit]
	if !ok || !isDecimal(number) {
		return 0, fmt.Errorf("invalid bitrate %q (want e.g. 2500k, 2.5M or 800000)", text)
	}
	// Exact arithmetic so that "1.1M" is 1100000 and not 1100000.0000000002.
	value, ok := new(big.Rat).SetString(number)
	if !ok {
		return 0, fmt.Errorf("invalid bitrate %q (want e.g. 2500k, 2.5M or 800000)", text)
	}
	value.Mul(value, new(big.Rat).SetInt64(multiplier))
	if !value.IsInt() {
		return 0, fmt.Errorf("invalid bitrate %q: not a whole number of bits per second", text)
	}
	if !value.Num().IsInt64() {
		return 0, fmt.Errorf("invalid bitrate %q: out of range", text)
	}
	return Bitrate(value.Num().Int64()), nil
}

var bitrateUnits = map[string]int64{
	"": 1, "k": 1000, "K": 1000, "m": 1_000_000, "M": 1_000_000,
}

// splitBitrateUnit splits "2.5 Mbps" into "2.5" and "M".
func splitBitrateUnit(text string) (number, unit string) {
	if len(text) > 3 && strings.EqualFold(text[len(text)-3:], "bps") {
		text = text[:len(text)-3]
	}
	end := len(text)
	for end > 0 && (text[end-1] < '0' || text[end-1] > '9') && text[end-1] != '.' {
		end--
	}
	return text[:end], strings.TrimSpace(text[end:])
}

// isDecimal accepts "25", "2.5" and "2." but not "", ".", "1e6" or "+1".
func isDecimal(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// bitrateFromFloat converts a YAML float such as 2.5e6 to a Bitrate.
func bitrateFromFloat(f float64) (Bitrate, error) {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, fmt.Errorf("invalid bitrate %v", f)
	case f < 0:
		return 0, fmt.Errorf("invalid bitrate %v: must not be negative", f)
	case f != math.Trunc(f):
		return 0, fmt.Errorf("invalid bitrate %v: not a whole number of bits per second", f)
	case f >= math.MaxInt64:
		return 0, fmt.Errorf("invalid bitrate %v: out of range", f)
	}
	return Bitrate(f), nil
}
