package inputs

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckInput(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "metadata.example":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		case "cam.example":
			return []netip.Addr{netip.MustParseAddr("192.0.2.10")}, nil
		}
		return nil, errors.New("no such host")
	}
	ctx := context.Background()
	for _, c := range []struct {
		input, want string // want "" = allowed
	}{
		{"rtmp://cam.example/live/x", ""},
		{"srt://192.0.2.11:9000?streamid=read:x", ""},
		{"https://cam.example/hls/index.m3u8", ""},
		{"rtsp://10.0.0.5/stream1", ""}, // private ranges are legitimate sources
		{"lavfi:testsrc2", "allow_lavfi"},
		{"/etc/passwd", "allow_files"},
		{"file:///etc/passwd", "allow_files"},
		{"tcp://0.0.0.0:9000?listen=1", "scheme"},
		{"rtmp://0.0.0.0/live/x?listen=1", "listen"},
		{"srt://192.0.2.11:9000?mode=listener", "mode"},
		{"http://169.254.169.254/latest/meta-data", "denied range"},
		{"http://metadata.example/x", "denied range"},
		{"http://[fe80::1]/x", "denied range"},
		{"rtmp://nowhere.example/x", "does not resolve"},
		{"gopher://cam.example/x", "scheme"},
		{"concat:a|b", "scheme"},
		{"pipe:0", "scheme"},
		{"data:text/plain,x", "scheme"},
	} {
		err := p.CheckInput(ctx, c.input)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.input, err)
		case c.want != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want a refusal naming %q", c.input, err, c.want)
		}
	}
	lavfi, _ := New(Config{AllowLavfi: true, AllowCIDRs: []string{"192.0.2.0/24"}})
	lavfi.Resolve = p.Resolve
	if err := lavfi.CheckInput(ctx, "lavfi:testsrc2"); err != nil {
		t.Errorf("allowed lavfi: %v", err)
	}
	if err := lavfi.CheckInput(ctx, "rtsp://10.0.0.5/x"); err == nil || !strings.Contains(err.Error(), "allow_cidrs") {
		t.Errorf("outside allow_cidrs: %v", err)
	}
}

func TestCheckLadder(t *testing.T) {
	p, _ := New(Config{})
	isPath := func(s string) bool { return strings.ContainsAny(s, "/") }
	if err := p.CheckLadder("/dev/zero", "", isPath); !errors.Is(err, ErrRefused) {
		t.Errorf("a path: %v", err)
	}
	if err := p.CheckLadder("default", "", isPath); err != nil {
		t.Errorf("a shipped name: %v", err)
	}
	if err := p.CheckLadder("mine.yaml", "name: x\nrungs: []\n", isPath); err != nil {
		t.Errorf("inline, with a path as its label: %v", err)
	}
	if err := p.CheckLadder("x", strings.Repeat("a", 65<<10), isPath); err == nil {
		t.Error("an oversized inline ladder")
	}
	if err := p.CheckLadder("x", strings.Repeat("[", 100), isPath); err == nil {
		t.Error("deep nesting")
	}
}

func TestValidate(t *testing.T) {
	c := Config{Schemes: []string{"RTMP", "file"}, DenyCIDRs: []string{"10.0.0.0/33"}, MaxLadderYAML: 10}
	err := c.Validate()
	for _, want := range []string{"schemes[0]", "schemes[1]", "deny_cidrs[0]", "max_ladder_yaml"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %s in %v", want, err)
		}
	}
	var d Config
	d.Defaults()
	if err := d.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
