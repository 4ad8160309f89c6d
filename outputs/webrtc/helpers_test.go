package webrtc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// A small ladder from a 640x360 test pattern: cheap enough to run several
// times in one test binary on two cores.
const (
	smallSource = transcode.LavfiPrefix + "testsrc2=size=640x360:rate=30[out0];sine=frequency=440:sample_rate=48000[out1]"
	smallLadder = `name: webrtc-test
gop: 1s
rungs:
  - {name: 360p, height: 360, bitrate: 700k, preset: ultrafast}
  - {name: 270p, height: 270, bitrate: 450k, preset: ultrafast}
  - {name: 180p, height: 180, bitrate: 250k, preset: ultrafast}
audio: {aac: {bitrate: 64k}, opus: {bitrate: 48k}}
`
)

func testLogger() *slog.Logger {
	if os.Getenv("PRISM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startJob starts a real-time transcode; it is closed when the test ends.
func startJob(t testing.TB, source, ladderYAML string) *transcode.Transcoder {
	t.Helper()
	l, err := ladder.Parse("test.yaml", []byte(ladderYAML))
	if err != nil {
		t.Fatal(err)
	}
	job, err := transcode.Start(context.Background(), transcode.Options{Input: source, Ladder: l, Realtime: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = job.Close() })
	return job
}

// testConfig is the default configuration on an ephemeral UDP port, without
// ICE-TCP.
func testConfig() Config {
	var c Config
	c.Defaults()
	c.UDPPort, c.TCPPort = 0, 0
	return c
}

// startServer serves job as stream "test" on an httptest server, with the
// player at /whep-player and any extra routes. Both are closed when the test
// ends.
func startServer(t testing.TB, job pipeline.Source, cfg Config, nw transport.Net, routes ...func(*http.ServeMux)) (*Server, *httptest.Server) {
	t.Helper()
	reg := &pipeline.Registry{}
	if err := reg.Add("test", job); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Streams: reg, Config: cfg, Log: testLogger(), Net: nw}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/whep/", srv)
	mux.Handle("/whep-player", PlayerHandler())
	for _, r := range routes {
		r(mux)
	}
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	testutil.Eventually(t, 5*time.Second, "the stream to be served", func() bool {
		_, err := srv.stream("test")
		return err == nil
	})
	return srv, hs
}

// viewerOptions configure a test viewer.
type viewerOptions struct {
	net         transport.Net // nil: the host's network
	decode      bool          // decode the video with FFmpeg
	dataChannel bool          // open the "prism" data channel
	countEvents bool          // only count "event" messages (load tests), keep none
	query       string        // appended to the POST URL, e.g. "?rung=180p"
	// firstPackets records when the first packet of each RTP timestamp
	// arrived (videoSink.firstSeen).
	firstPackets bool
}

// receivedFrame is one complete video frame as the viewer received it.
type receivedFrame struct {
	ts      uint32
	arrival time.Time // when its last packet arrived
	idr     bool
	width   int // decoded size (0 when not decoded)
	height  int
}

// videoSink reassembles H.264 frames from one RTP stream, in sequence-number
// order (across NACK retransmissions), and optionally decodes them.
type videoSink struct {
	decode       bool
	videoPackets atomic.Int64
	padding      atomic.Int64

	mu           sync.Mutex
	frames       []receivedFrame
	decodeErrors []string
	lost         int
	tsBackwards  int
	firstSeen    map[uint32]time.Time // RTP timestamp -> its first packet's arrival (firstPackets)
}

func (s *videoSink) snapshot() []receivedFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receivedFrame(nil), s.frames...)
}

// viewer is a real pion WHEP client: it negotiates over HTTP and feeds the
// video into a videoSink.
type viewer struct {
	*videoSink
	pc       *webrtc.PeerConnection
	location string
	opts     viewerOptions

	audioPackets atomic.Int64
	dc           *webrtc.DataChannel
	dcOpen       chan struct{}
	messages     []map[string]any // under videoSink.mu
	messageAt    []time.Time      // when each message arrived, under videoSink.mu
	events       atomic.Int64     // "event" messages, with countEvents

	wg sync.WaitGroup
}

// viewerEngine is the media engine, interceptors and settings of a test
// viewer: a browser-like peer with the default codecs and interceptors.
func viewerEngine(t testing.TB) (*webrtc.MediaEngine, *interceptor.Registry, webrtc.SettingEngine) {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	lf := pionLogs{log: testLogger()}
	if err := webrtc.RegisterDefaultInterceptorsWithOptions(me, ir, webrtc.WithInterceptorLoggerFactory(lf)); err != nil {
		t.Fatal(err)
	}
	return me, ir, webrtc.SettingEngine{LoggerFactory: lf}
}

func newViewer(t testing.TB, opts viewerOptions) *viewer {
	t.Helper()
	me, ir, se := viewerEngine(t)
	if opts.net != nil {
		se.SetNet(opts.net)
	}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	return attachViewer(t, pc, opts)
}

// attachViewer adds recvonly video and audio (and the data channel) to pc
// and starts reading what arrives.
func attachViewer(t testing.TB, pc *webrtc.PeerConnection, opts viewerOptions) *viewer {
	t.Helper()
	var err error
	v := &viewer{videoSink: &videoSink{decode: opts.decode}, pc: pc, opts: opts, dcOpen: make(chan struct{})}
	if opts.firstPackets {
		v.firstSeen = map[uint32]time.Time{}
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	if opts.dataChannel {
		if v.dc, err = pc.CreateDataChannel("prism", nil); err != nil {
			t.Fatal(err)
		}
		v.dc.OnOpen(func() { close(v.dcOpen) })
		v.dc.OnMessage(func(m webrtc.DataChannelMessage) {
			if opts.countEvents {
				// A lone event says "type":"event" ("events" does not
				// match); each element of a frame's "events" begins with
				// its id.
				v.events.Add(int64(bytes.Count(m.Data, []byte(`"type":"event"`)) + bytes.Count(m.Data, []byte(`{"id":`))))
				return
			}
			var msg map[string]any
			_ = json.Unmarshal(m.Data, &msg)
			msgs := []map[string]any{msg}
			if burst, ok := msg["events"].([]any); ok && msg["type"] == "events" {
				msgs = msgs[:0]
				for _, e := range burst {
					if em, ok := e.(map[string]any); ok {
						// As the player page does: the frame's fields are
						// the message's.
						em["type"] = "event"
						for _, k := range []string{"rtp", "pts", "media_time", "pdt"} {
							if v, ok := msg[k]; ok {
								em[k] = v
							}
						}
						msgs = append(msgs, em)
					}
				}
			}
			now := time.Now()
			v.mu.Lock()
			for _, m := range msgs {
				v.messages = append(v.messages, m)
				v.messageAt = append(v.messageAt, now)
			}
			v.mu.Unlock()
		})
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			if tr.Kind() == webrtc.RTPCodecTypeAudio {
				for {
					if _, _, err := tr.ReadRTP(); err != nil {
						return
					}
					v.audioPackets.Add(1)
				}
			}
			v.read(tr)
		}()
	})
	return v
}

// connect POSTs the offer (after gathering, no trickle) and applies the answer.
func (v *viewer) connect(baseURL, stream string) (status int, body string, err error) {
	offer, err := v.pc.CreateOffer(nil)
	if err != nil {
		return 0, "", err
	}
	gathered := webrtc.GatheringCompletePromise(v.pc)
	if err := v.pc.SetLocalDescription(offer); err != nil {
		return 0, "", err
	}
	<-gathered
	resp, err := http.Post(baseURL+"/whep/"+stream+v.opts.query, mimeSDP, strings.NewReader(v.pc.LocalDescription().SDP))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, string(b), nil
	}
	v.location = baseURL + resp.Header.Get("Location")
	err = v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(b)})
	return resp.StatusCode, string(b), err
}

// mustConnect connects and fails the test unless the server answered 201.
func (v *viewer) mustConnect(t testing.TB, baseURL, stream string) {
	t.Helper()
	status, body, err := v.connect(baseURL, stream)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("WHEP POST: status %d, err %v: %s", status, err, body)
	}
}

// close DELETEs the session (when asked) and closes the peer connection.
func (v *viewer) close(deleteSession bool) {
	if deleteSession && v.location != "" {
		req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	_ = v.pc.Close()
	v.wg.Wait()
}

// read reassembles frames in sequence-number order until the track ends. A
// packet missing for 300 ms (its NACK retransmission did not come) is lost:
// the frame is dropped and frames are skipped until the next IDR, as a
// browser would.
func (s *videoSink) read(tr *webrtc.TrackRemote) {
	var dec *h264Decoder
	if s.decode {
		var err error
		if dec, err = newH264Decoder(); err != nil {
			s.mu.Lock()
			s.decodeErrors = append(s.decodeErrors, err.Error())
			s.mu.Unlock()
			return
		}
		defer dec.close()
	}
	var (
		started    bool
		next       uint16
		pending    = map[uint16]*rtp.Packet{}
		missingAt  time.Time
		depack     = &codecs.H264Packet{}
		cur        []byte
		curTS      uint32
		haveFrame  bool
		broken     bool
		waitIDR    bool
		lastTS     uint32
		haveLastTS bool
	)
	finish := func(now time.Time) {
		defer func() { cur, haveFrame, broken = nil, false, false }()
		if broken || len(cur) == 0 {
			return
		}
		idr := pipeline.IsIDR(cur)
		if waitIDR && !idr {
			return
		}
		waitIDR = false
		f := receivedFrame{ts: curTS, arrival: now, idr: idr}
		if dec != nil {
			w, h, err := dec.decode(cur)
			if err != nil {
				s.mu.Lock()
				s.decodeErrors = append(s.decodeErrors, fmt.Sprintf("ts %d: %v", curTS, err))
				s.mu.Unlock()
			}
			f.width, f.height = w, h
		}
		s.mu.Lock()
		if haveLastTS && int32(curTS-lastTS) <= 0 {
			s.tsBackwards++
		}
		lastTS, haveLastTS = curTS, true
		s.frames = append(s.frames, f)
		s.mu.Unlock()
	}
	consume := func(p *rtp.Packet, now time.Time) {
		if len(p.Payload) == 0 {
			s.padding.Add(1)
			return
		}
		s.videoPackets.Add(1)
		if haveFrame && p.Timestamp != curTS {
			broken = true // the previous frame never saw its marker
			finish(now)
		}
		if !haveFrame {
			cur, curTS, haveFrame = nil, p.Timestamp, true
		}
		out, err := depack.Unmarshal(p.Payload)
		if err != nil {
			broken = true
		}
		cur = append(cur, out...)
		if p.Marker {
			finish(now)
		}
	}
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		now := time.Now()
		if s.firstSeen != nil && len(p.Payload) > 0 {
			s.mu.Lock()
			if _, ok := s.firstSeen[p.Timestamp]; !ok {
				s.firstSeen[p.Timestamp] = now
			}
			s.mu.Unlock()
		}
		if !started {
			started, next = true, p.SequenceNumber
		}
		if int16(p.SequenceNumber-next) < 0 {
			continue // duplicate or hopelessly late
		}
		pending[p.SequenceNumber] = p
		for {
			for q, ok := pending[next]; ok; q, ok = pending[next] {
				delete(pending, next)
				consume(q, now)
				next++
				missingAt = time.Time{}
			}
			if len(pending) == 0 {
				break
			}
			if missingAt.IsZero() {
				missingAt = now
			}
			if now.Sub(missingAt) < 300*time.Millisecond && len(pending) < 1000 {
				break
			}
			// Give up on the gap: resume at the oldest packet we have.
			oldest := next
			for d := uint16(1); ; d++ {
				if _, ok := pending[next+d]; ok {
					oldest = next + d
					break
				}
			}
			s.mu.Lock()
			s.lost += int(oldest - next)
			s.mu.Unlock()
			next, missingAt = oldest, time.Time{}
			broken, waitIDR = true, true
			depack = &codecs.H264Packet{}
		}
	}
}

// h264Decoder decodes Annex-B access units with FFmpeg, failing on any
// bitstream error instead of concealing it.
type h264Decoder struct {
	cc    *astiav.CodecContext
	pkt   *astiav.Packet
	frame *astiav.Frame
}

func newH264Decoder() (*h264Decoder, error) {
	codec := astiav.FindDecoder(astiav.CodecIDH264)
	if codec == nil {
		return nil, errors.New("no H.264 decoder in this FFmpeg")
	}
	cc := astiav.AllocCodecContext(codec)
	cc.SetThreadCount(1) // one frame in, one frame out: no frame-threading delay
	cc.SetErrorRecognitionFlags(astiav.NewErrorRecognitionFlags(astiav.ErrorRecognitionFlagExplode,
		astiav.ErrorRecognitionFlagBitstream, astiav.ErrorRecognitionFlagCRCCheck))
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("open H.264 decoder: %w", err)
	}
	return &h264Decoder{cc: cc, pkt: astiav.AllocPacket(), frame: astiav.AllocFrame()}, nil
}

// decode returns the size of the picture the access unit produced.
func (d *h264Decoder) decode(au []byte) (w, h int, err error) {
	if err := d.pkt.FromData(au); err != nil {
		return 0, 0, err
	}
	defer d.pkt.Unref()
	if err := d.cc.SendPacket(d.pkt); err != nil {
		return 0, 0, fmt.Errorf("send packet: %w", err)
	}
	for {
		err := d.cc.ReceiveFrame(d.frame)
		if errors.Is(err, astiav.ErrEagain) {
			return w, h, nil
		}
		if err != nil {
			return w, h, fmt.Errorf("receive frame: %w", err)
		}
		w, h = d.frame.Width(), d.frame.Height()
		d.frame.Unref()
	}
}

func (d *h264Decoder) close() {
	d.frame.Free()
	d.pkt.Free()
	d.cc.Free()
}

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func sortDurations(d []time.Duration) []time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d
}

// postSDP sends body to the WHEP endpoint and returns status and body.
func postSDP(t testing.TB, url, contentType string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
