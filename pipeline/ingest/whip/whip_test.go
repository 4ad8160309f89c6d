package whip

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// A pion publisher sends H.264 (x264, 640x360) and Opus like a browser:
// the session carries both tracks, starts at a keyframe with its parameter
// sets, and DELETE ends it cleanly.
func TestPublishH264Opus(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	aus := readH264(t, h264Clip(t, 640, 360, 30))
	opus := readOgg(t, opusClip(t))
	h := newHandler(t)
	_, base := startServer(t, h)

	c := newClient(t)
	vt := c.addSample(h264Capability, "video")
	at := c.addSample(opusCapability, "audio")
	c.publish(base+"/whip/live?quality=high", "secret")
	req := h.lastRequest()
	if req.Protocol != ingest.WHIP || req.Stream != "live" || req.Key != "secret" || req.Remote == nil || req.Query.Get("quality") != "high" {
		t.Fatalf("request: %+v", req)
	}
	samples := make([][]byte, len(aus))
	for i, au := range aus {
		samples[i] = au.annexB()
	}
	c.loop(vt, samples, time.Second/30, framePace, 0)
	c.loop(at, opus, 20*time.Millisecond, 20*time.Millisecond, 0)

	col := h.last()
	testutil.Eventually(t, 15*time.Second, "60 video packets", func() bool { return col.count(0) >= 60 })
	testutil.Eventually(t, 5*time.Second, "audio packets", func() bool { return col.count(1) >= 20 })
	if got := c.delete(); got != http.StatusOK {
		t.Fatalf("DELETE: %d", got)
	}
	select {
	case <-col.sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("DELETE did not end the session")
	}
	if err := col.sess.Err(); err != nil {
		t.Fatalf("session ended with %v, want nil after DELETE", err)
	}

	tracks := col.sess.Tracks()
	if len(tracks) != 2 {
		t.Fatalf("tracks: %+v", tracks)
	}
	v, a := tracks[0], tracks[1]
	if v.Kind != pipeline.KindVideo || v.Codec != pipeline.CodecH264 || v.Width != 640 || v.Height != 360 || v.ClockRate != 90000 {
		t.Fatalf("video track: %+v", v)
	}
	if sps, pps := pipeline.ParameterSets(v.Extradata); sps == nil || pps == nil {
		t.Fatalf("video extradata is not Annex-B SPS+PPS: %x", v.Extradata)
	}
	if a.Kind != pipeline.KindAudio || a.Codec != pipeline.CodecOpus || a.ClockRate != 48000 || a.SampleRate != 48000 || a.Channels != 2 ||
		!bytes.HasPrefix(a.Extradata, []byte("OpusHead")) {
		t.Fatalf("audio track: %+v", a)
	}
	pkts := col.snapshot()
	checkMonotonic(t, pkts)
	vp := video(pkts)
	if !vp[0].Keyframe {
		t.Fatal("the first video packet is not a keyframe")
	}
	known := map[[32]byte]bool{}
	for _, au := range aus {
		known[vclHash(au.nalus)] = true
	}
	keyframes := 0
	for i, p := range vp {
		if !bytes.HasPrefix(p.Data, []byte{0, 0, 0, 1}) {
			t.Fatalf("video packet %d is not Annex-B: % x", i, p.Data[:min(8, len(p.Data))])
		}
		nalus := pipeline.SplitAnnexB(p.Data)
		if !known[vclHash(nalus)] {
			t.Fatalf("video packet %d is not one of the clip's pictures", i)
		}
		if p.Keyframe != pipeline.IsIDR(p.Data) {
			t.Fatalf("video packet %d: Keyframe %v, IDR %v", i, p.Keyframe, pipeline.IsIDR(p.Data))
		}
		if p.Keyframe {
			keyframes++
			if sps, pps := pipeline.ParameterSets(p.Data); sps == nil || pps == nil {
				t.Fatalf("keyframe %d lacks in-band SPS/PPS", i)
			}
		}
	}
	if c.plis.Load() == 0 {
		t.Fatal("no PLI reached the publisher")
	}
	testutil.Report(t, "H.264+Opus: %d video packets (%d keyframes), %d audio, %d PLIs at the publisher",
		len(vp), keyframes, len(pkts)-len(vp), c.plis.Load())
}

// A VP8 publisher: the track has the keyframe header's size, and the
// keyframe flag follows the VP8 frame tag.
func TestPublishVP8(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	frames, w, hgt := vp8Clip(t, 320, 240)
	h := newHandler(t)
	_, base := startServer(t, h)
	c := newClient(t)
	vt := c.addSample(vp8Capability, "video")
	c.publish(base+"/whip/vp8", "secret")
	c.loop(vt, frames, time.Second/30, framePace, 0)

	col := h.last()
	testutil.Eventually(t, 15*time.Second, "40 VP8 frames", func() bool { return col.count(0) >= 40 })
	c.close()
	select {
	case <-col.sess.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("closing the publisher did not end the session")
	}
	if !errors.Is(col.sess.Err(), ErrConnection) {
		t.Fatalf("session error %v, want ErrConnection", col.sess.Err())
	}
	tracks := col.sess.Tracks()
	if len(tracks) != 1 || tracks[0].Codec != pipeline.CodecVP8 || tracks[0].Width != w || tracks[0].Height != hgt || w != 320 || hgt != 240 {
		t.Fatalf("tracks %+v, clip %dx%d", tracks, w, hgt)
	}
	pkts := col.snapshot()
	checkMonotonic(t, pkts)
	known := map[string]bool{}
	for _, f := range frames {
		known[string(f)] = true
	}
	keyframes := 0
	for i, p := range pkts {
		if !known[string(p.Data)] {
			t.Fatalf("frame %d (%d bytes) is not one of the clip's", i, len(p.Data))
		}
		if want := p.Data[0]&1 == 0; p.Keyframe != want {
			t.Fatalf("frame %d: Keyframe %v, frame tag says %v", i, p.Keyframe, want)
		}
		if p.Keyframe {
			keyframes++
		}
	}
	if !pkts[0].Keyframe || keyframes < 2 {
		t.Fatalf("first frame keyframe %v, %d keyframes", pkts[0].Keyframe, keyframes)
	}
	testutil.Report(t, "VP8 %dx%d: %d frames, %d keyframes", w, hgt, len(pkts), keyframes)
}

// A simulcast publisher with three RIDs, best first as browsers list them:
// the session carries only the top layer.
func TestPublishSimulcast(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	layers := []struct {
		rid  string
		w, h int
	}{{"h", 640, 360}, {"m", 320, 180}, {"l", 160, 90}}
	h := newHandler(t)
	_, base := startServer(t, h)
	c := newClient(t)
	var senders []*rtpSender
	var sender *webrtc.RTPSender
	var clips [][]accessUnit
	for i, l := range layers {
		clips = append(clips, readH264(t, h264Clip(t, l.w, l.h, 30)))
		tr, err := webrtc.NewTrackLocalStaticRTP(h264Capability, "video", "test", webrtc.WithRTPStreamID(l.rid))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			tc, err := c.pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
			if err != nil {
				t.Fatal(err)
			}
			sender = tc.Sender()
		} else if err := sender.AddEncoding(tr); err != nil {
			t.Fatal(err)
		}
		senders = append(senders, newRTPSender(tr))
	}
	offer := c.offer()
	if !bytes.Contains([]byte(offer), []byte("a=simulcast:send h;m;l")) {
		t.Fatalf("the offer is not simulcast:\n%s", offer)
	}
	c.publishOffer(base+"/whip/sim", "secret", offer)
	midExt, ridExt := headerExtensionIDs(t, sender)
	mid := c.pc.GetTransceivers()[0].Mid()
	for i, s := range senders {
		s.midExt, s.ridExt, s.mid, s.rid = midExt, ridExt, mid, layers[i].rid
	}
	for _, l := range layers {
		c.readRTCP(func() ([]rtcp.Packet, interceptor.Attributes, error) { return sender.ReadSimulcastRTCP(l.rid) })
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		tick := time.NewTicker(framePace)
		defer tick.Stop()
		// The low layers start first: arrival order must not pick the source.
		for i := 0; ; i++ {
			select {
			case <-c.ctx.Done():
				return
			case <-tick.C:
			}
			for j := len(senders) - 1; j >= 0; j-- {
				if j == 0 && i < 10 {
					continue
				}
				if err := senders[j].write(clips[j][i%len(clips[j])].annexB(), 3000); err != nil {
					return
				}
			}
		}
	}()
	col := h.last()
	testutil.Eventually(t, 15*time.Second, "60 video packets", func() bool { return col.count(0) >= 60 })
	// The node kicks the publisher: Session.Close closes its connection.
	_ = col.sess.Close()
	select {
	case <-c.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("Session.Close did not close the publisher's connection")
	}
	<-col.done
	if err := col.sess.Err(); err != nil {
		t.Fatalf("kicked session: %v", err)
	}
	tracks := col.sess.Tracks()
	if len(tracks) != 1 || tracks[0].Width != 640 || tracks[0].Height != 360 {
		t.Fatalf("tracks: %+v, want the 640x360 layer only", tracks)
	}
	top := map[[32]byte]bool{}
	for _, au := range clips[0] {
		top[vclHash(au.nalus)] = true
	}
	pkts := col.snapshot()
	checkMonotonic(t, pkts)
	for i, p := range pkts {
		if !top[vclHash(pipeline.SplitAnnexB(p.Data))] {
			t.Fatalf("packet %d is not a picture of the top layer", i)
		}
	}
	testutil.Report(t, "simulcast h/m/l: %d packets, all from the 640x360 layer", len(pkts))
}

// 5% of the video packets never reach the wire (no NACK can repair them):
// every access unit the session gets is whole, each run from a keyframe is
// consecutive pictures of the clip, and the PLIs bring keyframes back.
func TestLossWaitsForKeyframe(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	// One IDR at the start only: any later keyframe is one a PLI asked for.
	aus := readH264(t, h264Clip(t, 320, 180, 0))
	h := newHandler(t)
	_, base := startServer(t, h)
	c := newClient(t)
	tr, err := webrtc.NewTrackLocalStaticRTP(h264Capability, "video", "test")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	c.readRTCP(tc.Sender().ReadRTCP)
	c.publish(base+"/whip/lossy", "secret")
	s := newRTPSender(tr)
	rng := rand.New(rand.NewPCG(1, 2))
	var pliIDRs, wraps int
	started := false
	s.drop = func() bool { return started && rng.Float64() < 0.05 }
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		tick := time.NewTicker(framePace)
		defer tick.Stop()
		// An encoder answering PLIs: its next picture is the clip's IDR.
		next := 0
		for n := 0; n < 6*len(aus); n++ {
			select {
			case <-c.ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case <-c.pli:
				if s.cut > 0 && next != 0 { // the PLI at start is not for a loss
					next = 0
					pliIDRs++
				}
			default:
			}
			if err := s.write(aus[next].annexB(), 3000); err != nil {
				return
			}
			started = true
			if next = (next + 1) % len(aus); next == 0 {
				wraps++
			}
		}
	}()
	col := h.last()
	testutil.Eventually(t, 20*time.Second, "60 AUs and 4 keyframe runs despite the loss", func() bool {
		k, pkts := 0, video(col.snapshot())
		for _, p := range pkts {
			if p.Keyframe {
				k++
			}
		}
		return k >= 4 && len(pkts) >= 60
	})
	c.cancel()
	<-sending
	if got := c.delete(); got != http.StatusOK {
		t.Fatalf("DELETE: %d", got)
	}
	<-col.done
	index := map[[32]byte]int{}
	for i, au := range aus {
		index[vclHash(au.nalus)] = i
	}
	pkts := video(col.snapshot())
	checkMonotonic(t, pkts)
	prev, keyframes := -1, 0
	for i, p := range pkts {
		nalus := pipeline.SplitAnnexB(p.Data)
		for _, n := range nalus {
			if n[0]&0x80 != 0 || n[0]&0x1f == 0 || n[0]&0x1f > 23 {
				t.Fatalf("AU %d: bad NAL header %#x", i, n[0])
			}
		}
		idx, ok := index[vclHash(nalus)]
		switch {
		case !ok:
			t.Fatalf("AU %d (%d bytes) is not a whole picture of the clip: a fragment is missing", i, len(p.Data))
		case p.Keyframe:
			if idx != 0 {
				t.Fatalf("AU %d is a keyframe but picture %d", i, idx)
			}
			keyframes++
		case idx != prev+1:
			t.Fatalf("AU %d is picture %d after picture %d: a picture is missing in a keyframe run", i, idx, prev)
		}
		prev = idx
	}
	// The first keyframe and those of the clip's wraps came unasked.
	if !pkts[0].Keyframe || pliIDRs == 0 || keyframes < 2+wraps {
		t.Fatalf("first is keyframe %v; %d keyframes, %d sent for PLIs, %d wraps", pkts[0].Keyframe, keyframes, pliIDRs, wraps)
	}
	testutil.Report(t, "5%% loss: %d RTP packets sent, %d cut; the publisher got %d PLIs and %d NACKs and sent %d IDRs for them; "+
		"the session got %d whole AUs in %d keyframe runs",
		s.sent, s.cut, c.plis.Load(), c.nacks.Load(), pliIDRs, len(pkts), keyframes)
}

// A publisher that never sends a keyframe (and ignores the PLIs) is ended
// with ErrNoKeyframe; the server keeps no trace of it.
func TestNoKeyframeEnds(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	aus := readH264(t, h264Clip(t, 320, 180, 0))
	var pictures [][]byte
	for _, au := range aus[1:] {
		pictures = append(pictures, au.annexB())
	}
	h := newHandler(t)
	srv, base := startServer(t, h, func(s *Server) { s.KeyframeTimeout = 1500 * time.Millisecond })
	c := newClient(t)
	vt := c.addSample(h264Capability, "video")
	c.publish(base+"/whip/nokey", "secret")
	c.loop(vt, pictures, time.Second/30, framePace, 0)
	col := h.last()
	select {
	case <-col.sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
	if !errors.Is(col.sess.Err(), ErrNoKeyframe) || col.sess.Tracks() != nil || len(col.snapshot()) != 0 {
		t.Fatalf("session: err %v, tracks %v, %d packets", col.sess.Err(), col.sess.Tracks(), len(col.snapshot()))
	}
	select {
	case <-c.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher's connection stayed up")
	}
	testutil.Eventually(t, 5*time.Second, "the session to be forgotten", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.sessions) == 0
	})
	if c.plis.Load() == 0 {
		t.Fatal("no PLI asked for the missing keyframe")
	}
	testutil.Report(t, "no keyframe: ended with %q after %d PLIs", col.sess.Err(), c.plis.Load())
}

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct{ path, stream, id string }{
		{"/whip/live", "live", ""},
		{"/whip/live/", "live", ""},
		{"/whip/live/abc", "live", "abc"},
		{"/api/whip/live/abc", "live", "abc"},
		{"/whip/", "", ""},
		{"/whip/a/b/c", "", ""},
	} {
		s, id, _ := splitPath(tc.path)
		if s != tc.stream || id != tc.id {
			t.Errorf("%s: %q %q", tc.path, s, id)
		}
	}
}
