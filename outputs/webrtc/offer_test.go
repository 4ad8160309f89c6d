package webrtc

import (
	"errors"
	"strings"
	"testing"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// chromeOffer is a Chrome WHEP offer (recvonly video and audio, a data
// channel), shared with the process-level tests.
const chromeOffer = testutil.ChromeOffer

func TestInspectOffer(t *testing.T) {
	info, err := inspectOffer(crlf(chromeOffer))
	if err != nil {
		t.Fatal(err)
	}
	var plids []string
	for _, p := range info.h264 {
		plids = append(plids, p.String())
	}
	if strings.Join(plids, ",") == "" || !info.opus || !info.dataChannel || info.iceUfrag != "Zm9v" {
		t.Fatalf("info %+v", info)
	}
	for _, want := range []string{"42001f", "42e01f", "64001f"} {
		if !strings.Contains(strings.Join(plids, ","), want) {
			t.Errorf("offered profiles %v lack %s", plids, want)
		}
	}
	if strings.Contains(strings.Join(plids, ","), "4d001f") {
		t.Errorf("packetization-mode=0 format %v must not count", plids)
	}

	for _, ca := range []struct {
		name string
		sdp  string
		want error
		msg  string
	}{
		{"garbage", "hello", ErrBadOffer, ""},
		{"empty", "", ErrBadOffer, ""},
		{"no media", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", ErrBadOffer, "no media"},
		{"vp8 only", strings.NewReplacer("H264", "H265").Replace(chromeOffer), ErrUnsupportedOffer, "no H.264"},
		{"mode 0 only", strings.ReplaceAll(chromeOffer, "packetization-mode=1", "packetization-mode=0"), ErrUnsupportedOffer, "packetization-mode=1"},
		{"no audio", chromeOffer[:strings.Index(chromeOffer, "m=audio")], ErrUnsupportedOffer, "no Opus"},
		{"pcmu audio", strings.ReplaceAll(chromeOffer, "opus/48000/2", "PCMU/8000"), ErrUnsupportedOffer, "no Opus"},
		{"sendonly", strings.ReplaceAll(chromeOffer, "a=recvonly", "a=sendonly"), ErrUnsupportedOffer, "no H.264"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			_, err := inspectOffer(crlf(ca.sdp))
			if !errors.Is(err, ca.want) || !strings.Contains(err.Error(), ca.msg) {
				t.Fatalf("got %v, want %v containing %q", err, ca.want, ca.msg)
			}
		})
	}
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func TestChooseProfileLevel(t *testing.T) {
	chrome := []profileLevel{{0x42, 0x00, 0x1f}, {0x42, 0xe0, 0x1f}, {0x4d, 0x00, 0x1f}, {0x64, 0x00, 0x1f}}
	firefox := []profileLevel{{0x42, 0xe0, 0x1f}, {0x42, 0x00, 0x1f}}
	for _, ca := range []struct {
		stream  profileLevel
		offered []profileLevel
		want    string
	}{
		{profileLevel{0x64, 0x00, 0x28}, chrome, "640028"},  // same profile: the stream's level
		{profileLevel{0x4d, 0x40, 0x1f}, chrome, "4d001f"},  // x264 Main sets a constraint flag the offer lacks
		{profileLevel{0x64, 0x00, 0x1f}, firefox, "42e01f"}, // no High offered: Constrained Baseline label
		{profileLevel{0x64, 0x00, 0x1e}, []profileLevel{{0x42, 0x00, 0x1f}}, "42001e"},
		{profileLevel{0x42, 0xc0, 0x1e}, chrome, "42e01e"}, // x264 ultrafast writes Constrained Baseline
	} {
		got, ok := chooseProfileLevel(ca.stream, ca.offered)
		if !ok || got.String() != ca.want {
			t.Errorf("stream %s, offered %v: got %s, want %s", ca.stream, ca.offered, got, ca.want)
		}
	}
	if _, ok := chooseProfileLevel(profileLevel{0x64, 0, 0x1f}, nil); ok {
		t.Error("nothing offered must not match")
	}
}

func TestH264ParamsFromSPS(t *testing.T) {
	h := newH264Params([]pipeline.Track{{Height: 720, Profile: "high"}, {Height: 360, Profile: "main"}})
	if got := h.stream().String(); got != "64001f" {
		t.Fatalf("guessed %s, want 64001f (High, level of the 720p rung)", got)
	}
	// x264's SPS for the 720p rung says level 3.2 (0x20).
	h.observe(0, []byte{0, 0, 0, 1, 0x67, 0x64, 0x00, 0x20, 0xac, 0, 0, 1, 0x68, 0xee, 0, 0, 1, 0x65, 0x88})
	if got := h.stream().String(); got != "640020" {
		t.Fatalf("after the SPS: %s, want 640020", got)
	}
}

func TestPacketizerSharesOneTimelineAndFitsTheMTU(t *testing.T) {
	opus := pipeline.Track{ID: 9, ClockRate: 48000}
	p := newPacketizer(map[int]int{3: 0, 4: 1}, 2, &opus)
	idr := append([]byte{0, 0, 0, 1, 0x67, 0x64, 0, 0x1f, 0xac, 0, 0, 0, 1, 0x68, 0xee, 0x3c, 0x80, 0, 0, 0, 1, 0x65},
		make([]byte, 5000)...)
	for i := 22; i < len(idr); i++ {
		idr[i] = byte(i) | 1 // no start codes inside
	}
	a := p.packetize(&pipeline.Packet{Track: 3, Data: idr, PTS: 90000, Keyframe: true})
	b := p.packetize(&pipeline.Packet{Track: 4, Data: idr[:800], PTS: 90000, Keyframe: true})
	if a == nil || b == nil || a.rung != 0 || b.rung != 1 {
		t.Fatalf("units %+v %+v", a, b)
	}
	if a.packets[0].Timestamp != b.packets[0].Timestamp {
		t.Fatal("two rungs' frames at one PTS must share the RTP timestamp")
	}
	if a.packets[0].Payload[0]&0x1f != 24 {
		t.Fatalf("first packet NAL type %d, want STAP-A (SPS+PPS)", a.packets[0].Payload[0]&0x1f)
	}
	for i, pk := range a.packets {
		if len(pk.Payload) > rtpPayloadMTU {
			t.Fatalf("packet %d: %d bytes of payload", i, len(pk.Payload))
		}
		if pk.Marker != (i == len(a.packets)-1) {
			t.Fatalf("packet %d: marker %v", i, pk.Marker)
		}
		if i > 0 && pk.SequenceNumber != a.packets[i-1].SequenceNumber+1 {
			t.Fatal("sequence numbers not consecutive")
		}
	}
	next := p.packetize(&pipeline.Packet{Track: 3, Data: []byte{0, 0, 0, 1, 0x41, 1, 2}, PTS: 93000})
	if next.packets[0].Timestamp-a.packets[0].Timestamp != 3000 {
		t.Fatal("timestamps must advance with the PTS")
	}
	au := p.packetize(&pipeline.Packet{Track: 9, Data: []byte{1, 2, 3}, PTS: 960})
	if au == nil || au.video || au.packets[0].Marker || len(au.packets) != 1 {
		t.Fatalf("opus unit %+v", au)
	}
	if p.packetize(&pipeline.Packet{Track: 5, Data: []byte{1}}) != nil {
		t.Fatal("tracks not carried (AAC) must be skipped")
	}
}
