package webrtc

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/testutil"
)

// whipReceiver is a real pion WHIP endpoint: it answers one publish, demuxes
// the simulcast streams by RID and decodes each.
type whipReceiver struct {
	t       *testing.T
	token   string
	mu      sync.Mutex
	pc      *webrtc.PeerConnection
	rids    map[string]*videoSink
	audio   atomic.Int64
	deleted atomic.Bool
	wg      sync.WaitGroup
}

func (wr *whipReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/whip":
		if r.Header.Get("Authorization") != "Bearer "+wr.token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		offer, _ := io.ReadAll(r.Body)
		answer, err := wr.answer(string(offer))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", mimeSDP)
		w.Header().Set("Location", "/whip/session")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, answer)
	case r.Method == http.MethodDelete && r.URL.Path == "/whip/session":
		wr.deleted.Store(true)
		w.WriteHeader(http.StatusOK)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

func (wr *whipReceiver) answer(offer string) (string, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return "", err
	}
	ir := &interceptor.Registry{}
	// Includes the mid and rid header extensions simulcast needs.
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return "", err
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	wr.mu.Lock()
	wr.pc = pc
	wr.mu.Unlock()
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		wr.wg.Add(1)
		go func() {
			defer wr.wg.Done()
			if tr.Kind() == webrtc.RTPCodecTypeAudio {
				for {
					if _, _, err := tr.ReadRTP(); err != nil {
						return
					}
					wr.audio.Add(1)
				}
			}
			sink := &videoSink{decode: true}
			wr.mu.Lock()
			wr.rids[tr.RID()] = sink
			wr.mu.Unlock()
			sink.read(tr)
		}()
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	<-gathered
	return pc.LocalDescription().SDP, nil
}

func (wr *whipReceiver) sinks() map[string]*videoSink {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	out := map[string]*videoSink{}
	for k, v := range wr.rids {
		out[k] = v
	}
	return out
}

func (wr *whipReceiver) close() {
	wr.mu.Lock()
	pc := wr.pc
	wr.mu.Unlock()
	if pc != nil {
		_ = pc.Close()
	}
	wr.wg.Wait()
}

// TestPublisherSimulcast publishes a three-rung ladder over WHIP to a pion
// receiver: it gets one stream per RID, each decoding at its rung's size,
// plus Opus; Close deletes the WHIP session.
func TestPublisherSimulcast(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)
	recv := &whipReceiver{t: t, token: "s3cret", rids: map[string]*videoSink{}}
	hs := httptest.NewServer(recv)
	defer func() {
		recv.close()
		hs.CloseClientConnections()
		hs.Close()
		http.DefaultClient.CloseIdleConnections()
	}()

	// A wrong token is refused with the endpoint's answer in the error.
	bad := &Publisher{URL: hs.URL + "/whip", Token: "wrong", Source: job, Log: testLogger()}
	if err := bad.Start(context.Background()); !errors.Is(err, ErrWHIP) {
		t.Fatalf("wrong token: %v, want ErrWHIP", err)
	}

	p := &Publisher{URL: hs.URL + "/whip", Token: "s3cret", Source: job, Log: testLogger()}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{"360p": {640, 360}, "270p": {480, 270}, "180p": {320, 180}}
	testutil.Eventually(t, 10*time.Second, "60 frames on every RID", func() bool {
		s := recv.sinks()
		if len(s) != 3 {
			return false
		}
		for rid := range want {
			if s[rid] == nil || len(s[rid].snapshot()) < 60 {
				return false
			}
		}
		return true
	})
	for rid, sink := range recv.sinks() {
		frames := sink.snapshot()
		sink.mu.Lock()
		errs, lost := sink.decodeErrors, sink.lost
		sink.mu.Unlock()
		decoded := 0
		for _, f := range frames {
			if f.width == 0 && f.height == 0 {
				continue // not out of the decoder (yet): no size to check
			}
			decoded++
			if [2]int{f.width, f.height} != want[rid] {
				t.Fatalf("RID %s: frame %dx%d, want %v", rid, f.width, f.height, want[rid])
			}
		}
		if decoded < len(frames)/2 {
			t.Errorf("RID %s: only %d of %d frames decoded", rid, decoded, len(frames))
		}
		if len(errs) > 0 || lost > 0 {
			t.Errorf("RID %s: decode errors %v, lost %d", rid, errs, lost)
		}
		t.Logf("RID %s: %d frames of %dx%d", rid, len(frames), want[rid][0], want[rid][1])
	}
	if recv.audio.Load() < 50 {
		t.Errorf("%d audio packets", recv.audio.Load())
	}
	select {
	case <-p.Done():
		t.Fatalf("publisher ended early: %v", p.Err())
	default:
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !recv.deleted.Load() {
		t.Error("Close did not DELETE the WHIP session")
	}
}
