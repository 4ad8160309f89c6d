package webrtc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
)

// ridRE is the RID grammar of RFC 8851 (kept to 16 characters, as browsers do).
var ridRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

// Publisher pushes a running ladder to another WebRTC server over WHIP
// (RFC 9725): one simulcast video track with one RID per rung (the rung's
// name when it is a valid RID, else r0, r1, ... best first) and the Opus
// track. Each rung is packetized once; the receiver picks layers itself.
// Set the fields, then Start; Close ends the publish.
type Publisher struct {
	URL    string          // WHIP endpoint
	Token  string          // bearer token, sent when not empty
	Source pipeline.Source // the ladder to publish
	// Rungs limits the publish to these rungs (by name); empty means all.
	Rungs []string
	// ICEServers for this peer connection (STUN and TURN).
	ICEServers []ICEServer
	// Client sends the WHIP requests; nil means http.DefaultClient.
	Client *http.Client
	// KeyframeMinInterval thins the keyframe requests passed on to Source
	// to one per reason per interval (the source's keyframe budget spaces
	// the IDRs); 0 means 100ms.
	KeyframeMinInterval time.Duration
	// Log receives the publisher's logs; nil means slog.Default().
	Log *slog.Logger
	// Net is the network ICE runs on; nil means the host's.
	Net transport.Net

	pc       *webrtc.PeerConnection
	location string
	reader   *pipeline.Reader
	kf       *keyframeLimiter
	tracks   []*webrtc.TrackLocalStaticRTP // per rung, best first
	rids     []string
	audio    *webrtc.TrackLocalStaticRTP
	pk       *packetizer
	midExt   uint8
	ridExt   uint8
	mid      string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	err      error
	// connected is set once DTLS is up: pion drops what is written before
	// SRTP is ready, which would cut a frame in half.
	connected atomic.Bool
}

// Start negotiates with the WHIP endpoint and starts sending. It returns
// once the answer is applied; media flows when ICE and DTLS complete.
func (p *Publisher) Start(ctx context.Context) error {
	if p.Source == nil || p.URL == "" {
		return fmt.Errorf("%w: Publisher needs URL and Source", ErrWHIP)
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	if p.Client == nil {
		p.Client = http.DefaultClient
	}
	if p.KeyframeMinInterval == 0 {
		p.KeyframeMinInterval = 100 * time.Millisecond
	}
	rungs, opus, err := p.selectTracks()
	if err != nil {
		return err
	}
	p.done = make(chan struct{})
	p.kf = newKeyframeLimiter(p.Source.RequestKeyframe, p.KeyframeMinInterval)
	if err := p.negotiate(ctx, rungs, opus); err != nil {
		p.kf.stop()
		if p.pc != nil {
			_ = p.pc.Close()
		}
		return err
	}

	rungOf := map[int]int{}
	ids := []int{}
	for i, tr := range rungs {
		rungOf[tr.ID] = i
		ids = append(ids, tr.ID)
	}
	if opus != nil {
		ids = append(ids, opus.ID)
	}
	p.pk = newPacketizer(rungOf, len(rungs), opus)
	p.reader = p.Source.Subscribe(pipeline.WithTracks(ids...), pipeline.WithBufferSize(streamReaderBuffer),
		pipeline.WithName("whip:"+p.URL), pipeline.WithKeyframeRequest(func(int) { p.kf.request(keyReasonDrop) }))
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go p.run(runCtx)
	for _, s := range p.pc.GetSenders() {
		if s.Track() == nil {
			continue
		}
		if s.Track().Kind() == webrtc.RTPCodecTypeVideo {
			for _, rid := range p.rids {
				p.wg.Add(1)
				go p.readRTCP(func() ([]rtcp.Packet, error) { pk, _, err := s.ReadSimulcastRTCP(rid); return pk, err })
			}
		} else {
			p.wg.Add(1)
			go p.readRTCP(func() ([]rtcp.Packet, error) { pk, _, err := s.ReadRTCP(); return pk, err })
		}
	}
	p.Log.Info("webrtc: publishing over WHIP", "url", p.URL, "rids", p.rids)
	return nil
}

// selectTracks returns the rungs to publish, best first, and the Opus track.
func (p *Publisher) selectTracks() ([]pipeline.Track, *pipeline.Track, error) {
	var rungs []pipeline.Track
	var opus *pipeline.Track
	for _, tr := range p.Source.Tracks() {
		switch {
		case tr.Kind == pipeline.KindVideo && tr.Codec == pipeline.CodecH264:
			if len(p.Rungs) == 0 || slices.Contains(p.Rungs, tr.Name) {
				rungs = append(rungs, tr)
			}
		case tr.Kind == pipeline.KindAudio && tr.Codec == pipeline.CodecOpus && opus == nil:
			opus = &tr
		}
	}
	for _, name := range p.Rungs {
		if !slices.ContainsFunc(rungs, func(t pipeline.Track) bool { return t.Name == name }) {
			return nil, nil, fmt.Errorf("%w %q", ErrUnknownRung, name)
		}
	}
	if len(rungs) == 0 {
		return nil, nil, fmt.Errorf("%w: the job has no H.264 rung", ErrWHIP)
	}
	slices.SortStableFunc(rungs, func(a, b pipeline.Track) int { return int(b.Bitrate - a.Bitrate) })
	return rungs, opus, nil
}

func (p *Publisher) negotiate(ctx context.Context, rungs []pipeline.Track, opus *pipeline.Track) error {
	video := videoCapability(newH264Params(rungs).stream())
	me, err := mediaEngine(video)
	if err != nil {
		return err
	}
	// pion announces the RIDs but does not stamp the mid and rid header
	// extensions on packets; run does, and receivers need them to tell the
	// simulcast streams apart.
	if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
		return fmt.Errorf("webrtc: simulcast extensions: %w", err)
	}
	lf := pionLogs{log: p.Log}
	ir, err := senderInterceptors(me, lf, nil, nil)
	if err != nil {
		return err
	}
	se := webrtc.SettingEngine{LoggerFactory: lf}
	if p.Net != nil {
		se.SetNet(p.Net)
	}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	var servers []webrtc.ICEServer
	for _, s := range p.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if p.pc, err = api.NewPeerConnection(webrtc.Configuration{ICEServers: servers, BundlePolicy: webrtc.BundlePolicyMaxBundle}); err != nil {
		return fmt.Errorf("webrtc: new peer connection: %w", err)
	}
	p.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			p.connected.Store(true)
			p.kf.request(keyReasonJoin) // the receiver's first frames need an IDR on every RID
		case webrtc.PeerConnectionStateFailed:
			p.fail(errors.New("ICE connection failed"))
		}
	})
	var sender *webrtc.RTPSender
	for i, tr := range rungs {
		rid := tr.Name
		if !ridRE.MatchString(rid) || slices.Contains(p.rids, rid) {
			rid = fmt.Sprintf("r%d", i)
		}
		t, err := webrtc.NewTrackLocalStaticRTP(video, "video", "prism", webrtc.WithRTPStreamID(rid))
		if err != nil {
			return fmt.Errorf("webrtc: track %s: %w", rid, err)
		}
		if i == 0 {
			tc, err := p.pc.AddTransceiverFromTrack(t, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
			if err != nil {
				return fmt.Errorf("webrtc: add video: %w", err)
			}
			sender = tc.Sender()
		} else if err := sender.AddEncoding(t); err != nil {
			return fmt.Errorf("webrtc: add encoding %s: %w", rid, err)
		}
		p.tracks = append(p.tracks, t)
		p.rids = append(p.rids, rid)
	}
	if p.audio, err = webrtc.NewTrackLocalStaticRTP(audioCapability(), "audio", "prism"); err != nil {
		return fmt.Errorf("webrtc: audio track: %w", err)
	}
	if _, err := p.pc.AddTransceiverFromTrack(p.audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		return fmt.Errorf("webrtc: add audio: %w", err)
	}
	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("webrtc: offer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("webrtc: set offer: %w", err)
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
	case <-ctx.Done():
		return ctx.Err()
	}
	answer, err := p.post(ctx, p.pc.LocalDescription().SDP)
	if err != nil {
		return err
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("%w: applying the answer: %w", ErrWHIP, err)
	}
	for _, tc := range p.pc.GetTransceivers() {
		if tc.Sender() == sender {
			p.mid = tc.Mid()
		}
	}
	for _, h := range sender.GetParameters().HeaderExtensions {
		switch h.URI {
		case sdp.SDESMidURI:
			p.midExt = uint8(h.ID)
		case sdp.SDESRTPStreamIDURI:
			p.ridExt = uint8(h.ID)
		}
	}
	if p.midExt == 0 || p.ridExt == 0 {
		return fmt.Errorf("%w: the answer did not accept the mid and rid header extensions simulcast needs", ErrWHIP)
	}
	return nil
}

// post sends the offer and returns the answer; it records the session URL.
func (p *Publisher) post(ctx context.Context, offer string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader([]byte(offer)))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrWHIP, err)
	}
	req.Header.Set("Content-Type", mimeSDP)
	if p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.Token)
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrWHIP, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOfferBytes))
	if err != nil {
		return "", fmt.Errorf("%w: reading the answer: %w", ErrWHIP, err)
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("%w: %s answered %s: %.200s", ErrWHIP, p.URL, resp.Status, body)
	}
	loc, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("%w: 201 without a usable Location: %w", ErrWHIP, err)
	}
	p.location = loc.String()
	return string(body), nil
}

// run forwards the job's packets: each rung to its RID, Opus to the audio track.
func (p *Publisher) run(ctx context.Context) {
	defer p.wg.Done()
	defer p.kf.stop()
	// A RID starts at a keyframe after the connection is up, so the
	// receiver's first packet begins a decodable frame.
	started := make([]bool, len(p.tracks))
	for {
		pkt, err := p.reader.Read(ctx)
		if err != nil {
			if errors.Is(err, pipeline.ErrClosed) {
				p.fail(errors.New("the job ended"))
			}
			return
		}
		u := p.pk.packetize(pkt)
		if u == nil || !p.connected.Load() {
			continue
		}
		if u.video && !started[u.rung] {
			if !u.keyframe {
				continue
			}
			started[u.rung] = true
		}
		if !u.video {
			for _, rp := range u.packets {
				_ = p.audio.WriteRTP(rp)
			}
			continue
		}
		for _, rp := range u.packets {
			out := rtp.Packet{Header: rp.Header, Payload: rp.Payload}
			out.Extensions = nil
			_ = out.SetExtension(p.midExt, []byte(p.mid))
			_ = out.SetExtension(p.ridExt, []byte(p.rids[u.rung]))
			if err := p.tracks[u.rung].WriteRTP(&out); errors.Is(err, io.ErrClosedPipe) {
				p.fail(err)
				return
			}
		}
	}
}

func (p *Publisher) readRTCP(read func() ([]rtcp.Packet, error)) {
	defer p.wg.Done()
	for {
		pkts, err := read()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			switch pk.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.kf.request(keyReasonPLI)
			}
		}
	}
}

// fail records why the publish ended and marks it done.
func (p *Publisher) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.once.Do(func() { close(p.done) })
}

// Done is closed when the publish fails or the job ends (see Err); Close
// must still be called.
func (p *Publisher) Done() <-chan struct{} { return p.done }

// Err says why Done was closed.
func (p *Publisher) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close ends the publish: it stops sending, deletes the WHIP session and
// closes the peer connection.
func (p *Publisher) Close() error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	var derr error
	if p.location != "" {
		derr = p.deleteSession()
	}
	p.reader.Close()
	err := p.pc.Close()
	p.wg.Wait()
	p.once.Do(func() { close(p.done) })
	return errors.Join(derr, err)
}

func (p *Publisher) deleteSession() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	u, err := url.Parse(p.location)
	if err != nil {
		return fmt.Errorf("%w: Location %q: %w", ErrWHIP, p.location, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWHIP, err)
	}
	if p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.Token)
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: DELETE %s: %w", ErrWHIP, p.location, err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%w: DELETE %s: %s", ErrWHIP, p.location, resp.Status)
	}
	return nil
}
