package whip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

type outPkt struct {
	seq  uint16
	lost bool
}

func pushAll(r *reorder, now time.Time, seqs ...uint16) []outPkt {
	var out []outPkt
	for _, s := range seqs {
		r.push(&rtp.Packet{Header: rtp.Header{SequenceNumber: s}}, now, func(p *rtp.Packet, lost bool) {
			out = append(out, outPkt{p.SequenceNumber, lost})
		})
	}
	return out
}

func TestReorder(t *testing.T) {
	t0 := time.Unix(0, 0)
	r := newReorder(200, 300*time.Millisecond)
	// Reordered across the wrap, with a duplicate: in order, nothing lost.
	got := pushAll(r, t0, 65534, 0, 65535, 1, 1, 2)
	want := []outPkt{{65534, false}, {65535, false}, {0, false}, {1, false}, {2, false}}
	if !equal(got, want) || r.dropped != 1 {
		t.Fatalf("reordered: %v (dropped %d), want %v", got, r.dropped, want)
	}
	// A gap waits, then is given up on once the packet after it has waited.
	if got := pushAll(r, t0, 4, 5); len(got) != 0 {
		t.Fatalf("gap released early: %v", got)
	}
	got = pushAll(r, t0.Add(time.Second), 6)
	if want := []outPkt{{4, true}, {5, false}, {6, false}}; !equal(got, want) {
		t.Fatalf("gap: %v, want %v", got, want)
	}
	// A late retransmission of the skipped packet is dropped.
	if got := pushAll(r, t0.Add(time.Second), 3); len(got) != 0 {
		t.Fatalf("late packet emitted: %v", got)
	}
	// A jump far ahead starts over, as a loss.
	if got := pushAll(r, t0.Add(time.Second), 5000); !equal(got, []outPkt{{5000, true}}) {
		t.Fatalf("jump: %v", got)
	}
	// A sender that restarted its numbering far behind is followed after a
	// run of late packets.
	var seqs []uint16
	for i := range reorderLateReset + 2 {
		seqs = append(seqs, uint16(100+i))
	}
	got = pushAll(r, t0.Add(time.Second), seqs...)
	if len(got) != 3 || got[0].seq != 100+reorderLateReset-1 || !got[0].lost {
		t.Fatalf("restart: %v", got)
	}
	// The packet budget releases a gap without waiting.
	r = newReorder(10, time.Hour)
	seqs = nil
	for i := range 12 {
		seqs = append(seqs, uint16(2+i))
	}
	got = pushAll(r, t0, append([]uint16{0}, seqs...)...)
	if len(got) != 13 || !got[1].lost || got[1].seq != 2 {
		t.Fatalf("budget: %v", got)
	}
}

func equal(a, b []outPkt) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// testSeq numbers the packets pkt makes, consecutively.
var testSeq uint16

func pkt(ts uint32, marker bool, payload ...byte) *rtp.Packet {
	testSeq++
	return &rtp.Packet{Header: rtp.Header{SequenceNumber: testSeq, Timestamp: ts, Marker: marker}, Payload: payload}
}

func stapA(nalus ...[]byte) []byte {
	out := []byte{24}
	for _, n := range nalus {
		out = binary.BigEndian.AppendUint16(out, uint16(len(n)))
		out = append(out, n...)
	}
	return out
}

// fuA fragments one NAL unit into n FU-A payloads.
func fuA(nalu []byte, n int) [][]byte {
	body := nalu[1:]
	step := (len(body) + n - 1) / n
	var out [][]byte
	for i := 0; i < len(body); i += step {
		h := nalu[0] & 0x1f
		if i == 0 {
			h |= 0x80
		}
		if i+step >= len(body) {
			h |= 0x40
		}
		out = append(out, append([]byte{nalu[0]&0xe0 | 28, h}, body[i:min(i+step, len(body))]...))
	}
	return out
}

func TestH264Depacketizer(t *testing.T) {
	sps, pps := []byte{0x67, 1, 2, 3}, []byte{0x68, 4, 5}
	idr := append([]byte{0x65}, bytes.Repeat([]byte{9}, 3000)...)
	p1 := []byte{0x41, 7, 7, 7}
	var frames []frame
	emit := func(f frame) { frames = append(frames, f) }
	d := &h264Depacketizer{}
	d.push(pkt(1000, false, stapA(sps, pps)...), false, emit)
	frags := fuA(idr, 3)
	for i, f := range frags {
		d.push(pkt(1000, i == len(frags)-1, f...), false, emit)
	}
	d.push(pkt(4000, false), false, emit) // padding
	d.push(pkt(4000, true, p1...), false, emit)
	if len(frames) != 2 || frames[0].broken || !frames[0].keyframe || frames[1].keyframe || frames[1].ts != 4000 {
		t.Fatalf("frames: %+v", frames)
	}
	if want := annexB(sps, pps, idr); !bytes.Equal(frames[0].data, want) {
		t.Fatalf("IDR AU: % x...", frames[0].data[:20])
	}
	if !bytes.Equal(frames[1].data, annexB(p1)) {
		t.Fatalf("P AU: % x", frames[1].data)
	}

	// A missing middle fragment breaks the picture; the next one is whole.
	// (The reorder reports the gap; the depacketizer sees it even if not.)
	frames = nil
	d.push(pkt(7000, false, frags[0]...), false, emit)
	testSeq++
	d.push(pkt(7000, true, frags[2]...), false, emit)
	d.push(pkt(10000, true, p1...), false, emit)
	if len(frames) != 2 || !frames[0].broken || frames[0].data != nil || frames[1].broken {
		t.Fatalf("missing fragment: %+v", frames)
	}
	// Loss reported by the reorder breaks the picture in progress and the
	// one after the gap (it may have lost its head).
	frames = nil
	d.push(pkt(13000, false, frags[0]...), false, emit)
	d.push(pkt(16000, true, p1...), true, emit)
	d.push(pkt(19000, true, p1...), false, emit)
	if len(frames) != 3 || !frames[0].broken || !frames[1].broken || frames[2].broken {
		t.Fatalf("loss: %+v", frames)
	}
	// A lost marker: the timestamp change ends the picture.
	frames = nil
	d.push(pkt(22000, false, p1...), false, emit)
	d.push(pkt(25000, true, p1...), false, emit)
	if len(frames) != 2 || frames[0].broken || frames[0].ts != 22000 {
		t.Fatalf("lost marker: %+v", frames)
	}
	// Malformed: STAP-A overrun, FU-A without start, FU-B, a huge picture.
	frames = nil
	d.push(pkt(28000, true, 24, 0, 200, 1), false, emit)
	d.push(pkt(31000, true, 28, 0x45, 1), false, emit)
	d.push(pkt(34000, true, 29, 0x85, 1), false, emit)
	big := append([]byte{0x41}, make([]byte, 1100)...)
	for i := 0; i <= maxFrameBytes/1100; i++ {
		d.push(pkt(37000, false, big...), false, emit)
	}
	d.push(pkt(37000, true, p1...), false, emit)
	if len(frames) != 4 {
		t.Fatalf("malformed: %d frames", len(frames))
	}
	for i, f := range frames {
		if !f.broken {
			t.Fatalf("malformed frame %d not broken", i)
		}
	}
}

func TestVP8Depacketizer(t *testing.T) {
	key := []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2, 3}
	var frames []frame
	emit := func(f frame) { frames = append(frames, f) }
	d := &vp8Depacketizer{}
	d.push(pkt(1, false, append([]byte{0x10}, key[:6]...)...), false, emit) // S=1, PID=0
	d.push(pkt(1, true, append([]byte{0x00}, key[6:]...)...), false, emit)
	d.push(pkt(2, true, 0x00, 0x01, 0x02), false, emit) // no start: broken
	d.push(pkt(3, true, 0x10, 0x01, 0x02, 0x03), false, emit)
	if len(frames) != 3 || !frames[0].keyframe || !bytes.Equal(frames[0].data, key) || !frames[1].broken || frames[2].keyframe || frames[2].broken {
		t.Fatalf("frames: %+v", frames)
	}
	if w, h, ok := vp8Size(frames[0].data); !ok || w != 320 || h != 240 {
		t.Fatalf("size %dx%d %v", w, h, ok)
	}
}

func TestTimeline(t *testing.T) {
	epoch := time.Unix(100, 0)
	tl := timeline{rate: 90000}
	var got []int64
	for _, ts := range []uint32{4294967000, 4294967295, 200, 100, 3200} {
		got = append(got, tl.pts(ts, epoch.Add(time.Second), epoch))
	}
	// 1 s after the epoch is 90000; the wrap continues; a step back is
	// clamped to keep the track increasing.
	want := []int64{90000, 90295, 90496, 90497, 93496}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pts %v, want %v", got, want)
		}
	}
}

const chromeLikeOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=ice-ufrag:abcd\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96 102 103\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n" +
	"a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n" +
	"a=rtpmap:103 H264/90000\r\na=fmtp:103 packetization-mode=0\r\n" +
	"a=rid:h send\r\na=rid:m send\r\na=rid:l send\r\na=simulcast:send h,h2;~m;l\r\n"

func TestInspectOffer(t *testing.T) {
	info, err := inspectOffer(chromeLikeOffer)
	if err != nil {
		t.Fatal(err)
	}
	if info.videoMid != "1" || !info.audio || info.topRID != "h" || strings.Join(info.rids, ",") != "h,m,l" || info.iceUfrag != "abcd" {
		t.Fatalf("info: %+v", info)
	}
	for _, tc := range []struct {
		name, from, to string
		want           error
		msg            string
	}{
		{"mode 0 only", "a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;", "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=0;", ErrUnsupportedOffer, "packetization-mode=1"},
		{"receive only", "a=mid:1\r\na=sendonly", "a=mid:1\r\na=recvonly", ErrUnsupportedOffer, "no H.264 or VP8"},
		{"too many layers", "a=simulcast:send h,h2;~m;l", "a=simulcast:send a;b;c;d;e;f;g;h;i", ErrUnsupportedOffer, "simulcast layers"},
		{"not SDP", "v=0", "x=0", ErrBadOffer, ""},
	} {
		_, err := inspectOffer(strings.Replace(chromeLikeOffer, tc.from, tc.to, 1))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	many := chromeLikeOffer + strings.Repeat("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n", maxMediaSections)
	if _, err := inspectOffer(many); !errors.Is(err, ErrUnsupportedOffer) {
		t.Errorf("many sections: %v", err)
	}
}

func TestParseSDPFrag(t *testing.T) {
	f, err := parseSDPFrag("a=ice-ufrag:u\r\na=ice-pwd:p\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n" +
		"a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n")
	if err != nil || f.ufrag != "u" || f.mid != "0" || len(f.candidates) != 1 || !strings.HasPrefix(f.candidates[0], "candidate:1 ") {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err := parseSDPFrag("hello"); err == nil {
		t.Fatal("garbage accepted")
	}
}

// An IDR sent without its parameter sets (they came in an earlier access
// unit) gets them prepended, and the track is described from the SPS.
func TestH264KeyframeGetsParameterSets(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	aus := readH264(t, h264Clip(t, 320, 180, 0))
	var sps, pps, idr []byte
	for _, n := range aus[0].nalus {
		switch n[0] & 0x1f {
		case 7:
			sps = n
		case 8:
			pps = n
		case 5:
			idr = n
		}
	}
	v := &videoReceiver{codec: pipeline.CodecH264}
	if _, _, ok := v.h264(frame{data: annexB(idr), keyframe: true}); ok {
		t.Fatal("an IDR without any parameter sets was accepted")
	}
	if _, _, ok := v.h264(frame{data: annexB(sps, pps, aus[1].nalus[0])}); !ok {
		t.Fatal("a P picture with parameter sets refused")
	}
	data, track, ok := v.h264(frame{data: annexB(idr), keyframe: true})
	if !ok || !bytes.Equal(data, annexB(sps, pps, idr)) {
		t.Fatalf("keyframe not completed: ok %v, % x...", ok, data[:min(16, len(data))])
	}
	if track.Width != 320 || track.Height != 180 || track.Codec != pipeline.CodecH264 || !bytes.Equal(track.Extradata, annexB(sps, pps)) {
		t.Fatalf("track %+v", track)
	}
	testutil.Report(t, "IDR without SPS/PPS: %d bytes in, %d out; track %dx%d at %.0f fps", len(annexB(idr)), len(data), track.Width, track.Height, track.FPS)
}
