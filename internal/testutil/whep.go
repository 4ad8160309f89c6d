package testutil

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pion/webrtc/v4"
)

// WHEPViewer is a pion WHEP client that counts the RTP packets it receives.
type WHEPViewer struct {
	Video, Audio atomic.Int64
	pc           *webrtc.PeerConnection
	session      string // the session's resource URL (Location)
}

// Stop ends the session as a player does: DELETE on its resource, then
// the peer connection closed.
func (v *WHEPViewer) Stop(t testing.TB) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, v.session, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("WHEP DELETE %s: %d", v.session, resp.StatusCode)
	}
	_ = v.pc.Close()
}

// StartWHEPViewer plays url (a /whep/<stream> endpoint) until the test ends.
func StartWHEPViewer(t testing.TB, url string) *WHEPViewer {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &WHEPViewer{pc: pc}
	t.Cleanup(func() { _ = pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		count := &v.Audio
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			count = &v.Video
		}
		for { // ends when the peer connection closes
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			count.Add(1)
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	resp, err := http.Post(url, "application/sdp", strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP %s: %d %s", url, resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	if loc, err := resp.Location(); err == nil {
		v.session = loc.String()
	}
	return v
}
