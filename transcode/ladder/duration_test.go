package ladder

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "1s", want: time.Second},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "2", want: 2 * time.Second},
		{in: "0.5", want: 500 * time.Millisecond},
		{in: "1m30s", want: 90 * time.Second},
		{in: "-1s", want: -time.Second}, // parses; Validate rejects it
		{in: "", wantErr: true},
		{in: "soon", wantErr: true},
		{in: "inf", wantErr: true},
		{in: "1e400", wantErr: true},
		{in: "99999999999", wantErr: true}, // seconds: overflows int64 nanoseconds
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && time.Duration(got) != tt.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v (error: %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("250ms")); err != nil || time.Duration(d) != 250*time.Millisecond {
		t.Fatalf("UnmarshalText(250ms) = %v, %v", d, err)
	}
	if text, _ := d.MarshalText(); string(text) != "250ms" {
		t.Fatalf("MarshalText = %q; want 250ms", text)
	}
}
