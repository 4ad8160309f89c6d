package ladder

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that YAML writes as "1s", "500ms" or a plain
// number of seconds (2, 0.5, "2").
type Duration time.Duration

// String prints the duration the way time.Duration does ("1s", "500ms").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler using ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDuration parses a Go duration ("1s", "500ms") or a plain number of
// seconds ("2", "0.5").
func ParseDuration(s string) (Duration, error) {
	text := strings.TrimSpace(s)
	if seconds, err := strconv.ParseFloat(text, 64); err == nil && isPlainNumber(text) {
		return durationFromSeconds(seconds)
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 1s, 500ms or 2)", clip(text))
	}
	return Duration(d), nil
}

// isPlainNumber keeps ParseFloat's extras ("inf", "0x1p3", "1_000") out of
// the seconds syntax.
func isPlainNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return s != "" && strings.Trim(s, "0123456789.") == ""
}

func durationFromSeconds(seconds float64) (Duration, error) {
	ns := seconds * float64(time.Second)
	if math.IsNaN(ns) || math.IsInf(ns, 0) || math.Abs(ns) >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid duration %v seconds: out of range", seconds)
	}
	return Duration(math.Round(ns)), nil
}
