package ladder

import (
	"strings"
	"testing"
)

func TestParseBitrate(t *testing.T) {
	tests := []struct {
		in   string
		want Bitrate
	}{
		{"800000", 800_000},
		{"2500k", 2_500_000},
		{"2500K", 2_500_000},
		{"2.5M", 2_500_000},
		{"2.5m", 2_500_000},
		{"1.1M", 1_100_000},
		{"5Mbps", 5_000_000},
		{"2500kbps", 2_500_000},
		{"800000bps", 800_000},
		{" 5 Mbps ", 5_000_000},
		{"128k", 128_000},
		{"0", 0},
		{"0.5k", 500},
		{"9223372036854775807", 9223372036854775807},
	}
	for _, tt := range tests {
		got, err := ParseBitrate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseBitrate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseBitrateErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty bitrate"},
		{"-5k", `invalid bitrate "-5k": must not be negative`},
		{"abc", `invalid bitrate "abc" (want e.g. 2500k, 2.5M or 800000)`},
		{"5G", `invalid bitrate "5G"`},
		{"1e6", `invalid bitrate "1e6"`},
		{"k", `invalid bitrate "k"`},
		{"1..5k", `invalid bitrate "1..5k"`},
		{"+5k", `invalid bitrate "+5k"`},
		{"1.0005k", "not a whole number of bits per second"},
		{"9223372036854775808", "out of range"},
		{"99999999999999M", "out of range"},
		{strings.Repeat("9", 100), "too long"},
	}
	for _, tt := range tests {
		_, err := ParseBitrate(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseBitrate(%q) error = %v; want it to contain %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestBitrateString(t *testing.T) {
	tests := []struct {
		in   Bitrate
		want string
	}{
		{2_500_000, "2500k"},
		{5_000_000, "5M"},
		{5_350_000, "5350k"},
		{128_000, "128k"},
		{800_001, "800001"},
		{0, "0"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Bitrate(%d).String() = %q; want %q", int64(tt.in), got, tt.want)
		}
		back, err := ParseBitrate(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseBitrate(%q) = %d, %v; want the round trip to give %d", tt.in.String(), back, err, tt.in)
		}
	}
}

func TestBitrateText(t *testing.T) {
	var b Bitrate
	if err := b.UnmarshalText([]byte("2.5M")); err != nil || b != 2_500_000 {
		t.Fatalf("UnmarshalText(2.5M) = %d, %v", b, err)
	}
	text, _ := b.MarshalText()
	if string(text) != "2500k" {
		t.Fatalf("MarshalText = %q; want 2500k", text)
	}
	if err := b.UnmarshalText([]byte("fast")); err == nil {
		t.Fatal("UnmarshalText(fast) succeeded")
	}
}
