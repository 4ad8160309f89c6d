package whip

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// TestMain is testutil.QuietMain plus removing the clips made for the run.
func TestMain(m *testing.M) {
	if os.Getenv("PRISM_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	code := m.Run()
	if mediaCache.dir != "" {
		_ = os.RemoveAll(mediaCache.dir)
	}
	os.Exit(code)
}

// framePace is how often the test publishers send a video frame: twice
// real time (RTP timestamps still say 30 fps), to keep the suite short.
const framePace = time.Second / 60

// mediaCache holds the clips made with the FFmpeg CLI, once per binary.
var mediaCache struct {
	sync.Mutex
	dir   string
	paths map[string]string
}

// clip makes (once) a file with ffmpeg args and returns its path.
func clip(t testing.TB, name string, args ...string) string {
	t.Helper()
	mediaCache.Lock()
	defer mediaCache.Unlock()
	if p, ok := mediaCache.paths[name]; ok {
		return p
	}
	if mediaCache.dir == "" {
		dir, err := os.MkdirTemp("", "whip-test-")
		if err != nil {
			t.Fatal(err)
		}
		mediaCache.dir, mediaCache.paths = dir, map[string]string{}
	}
	p := filepath.Join(mediaCache.dir, name)
	testutil.FFmpeg(t, append(args, p)...)
	mediaCache.paths[name] = p
	return p
}

// h264Clip is a 3 s testsrc2 clip in Annex-B; gop 0 means one IDR only.
func h264Clip(t testing.TB, w, h, gop int) string {
	size := strconv.Itoa(w) + "x" + strconv.Itoa(h)
	args := []string{"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=30", "-t", "3",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"}
	if gop > 0 {
		args = append(args, "-g", strconv.Itoa(gop))
	} else {
		args = append(args, "-g", "1000", "-x264-params", "scenecut=0")
	}
	args = append(args, "-bsf:v", "h264_mp4toannexb", "-f", "h264")
	return clip(t, fmt.Sprintf("h264_%s_g%d.h264", size, gop), args...)
}

func opusClip(t testing.TB) string {
	// One Opus packet per Ogg page, so a page is a sample.
	return clip(t, "sine.ogg", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3",
		"-c:a", "libopus", "-b:a", "48k", "-page_duration", "20000", "-f", "ogg")
}

// accessUnit is one H.264 picture of a clip: its NAL units.
type accessUnit struct {
	nalus [][]byte
	idr   bool
}

func (a accessUnit) annexB() []byte {
	var b bytes.Buffer
	for _, n := range a.nalus {
		b.Write([]byte{0, 0, 0, 1})
		b.Write(n)
	}
	return b.Bytes()
}

// readH264 splits an Annex-B file into access units: a picture starts at
// a parameter set, an AUD, or a slice with first_mb_in_slice 0 (its first
// bit, ue(v) 0, is set) after the previous picture's slices.
func readH264(t testing.TB, path string) []accessUnit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := h264reader.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var aus []accessUnit
	var cur accessUnit
	sawVCL := false
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) || nal == nil {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		typ := nal.Data[0] & 0x1f
		vcl := typ >= 1 && typ <= 5
		if sawVCL && (!vcl || len(nal.Data) > 1 && nal.Data[1]&0x80 != 0) {
			aus = append(aus, cur)
			cur, sawVCL = accessUnit{}, false
		}
		cur.nalus = append(cur.nalus, append([]byte(nil), nal.Data...))
		if vcl {
			sawVCL = true
			cur.idr = cur.idr || typ == 5
		}
	}
	if sawVCL {
		aus = append(aus, cur)
	}
	if len(aus) < 30 || !aus[0].idr {
		t.Fatalf("%s: %d access units, first IDR %v", path, len(aus), len(aus) > 0 && aus[0].idr)
	}
	return aus
}

// vclHash identifies a picture by its slices, whatever parameter sets or
// SEI travel with it.
func vclHash(nalus [][]byte) [32]byte {
	h := sha256.New()
	for _, n := range nalus {
		if typ := n[0] & 0x1f; typ >= 1 && typ <= 5 {
			h.Write(n)
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func readOgg(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	for {
		page, _, err := r.ParseNextPage()
		if err != nil {
			break
		}
		if bytes.HasPrefix(page, []byte("OpusTags")) || len(page) == 0 {
			continue
		}
		pkts = append(pkts, page)
	}
	if len(pkts) < 50 {
		t.Fatalf("%s: %d Opus packets", path, len(pkts))
	}
	return pkts
}

// vp8Clip returns the frames of a 2 s VP8 clip and its size. The IVF
// muxer (read with pion's ivfreader) is used when the FFmpeg build has it;
// otherwise image2 writes one file per frame.
func vp8Clip(t testing.TB, w, h int) (frames [][]byte, width, height int) {
	t.Helper()
	args := []string{"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=30", w, h), "-t", "2",
		"-c:v", "libvpx", "-deadline", "realtime", "-g", "15", "-b:v", "500k"}
	out, err := exec.Command(testutil.Tool(t, "ffmpeg"), "-hide_banner", "-muxers").Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte(" ivf ")) {
		return readIVF(t, clip(t, "vp8.ivf", append(args, "-f", "ivf")...))
	}
	pattern := clip(t, "vp8_%04d.vp8", append(args, "-f", "image2")...)
	names, err := filepath.Glob(strings.Replace(pattern, "%04d", "*", 1))
	if err != nil || len(names) < 30 {
		t.Fatalf("VP8 frames: %d, %v", len(names), err)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, b)
	}
	return frames, w, h
}

func readIVF(t testing.TB, path string) (frames [][]byte, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, hdr, err := ivfreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	for {
		fr, _, err := r.ParseNextFrame()
		if err != nil {
			break
		}
		frames = append(frames, fr)
	}
	return frames, int(hdr.Width), int(hdr.Height)
}

// loopback keeps ICE on 127.0.0.1 over UDP, for the server and the test
// publishers alike.
func loopback() webrtc.SettingEngine {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return se
}

// collector is a session the test handler admitted, and what a reader of
// it received.
type collector struct {
	sess *ingest.Session
	done chan struct{}

	mu      sync.Mutex
	packets []*pipeline.Packet
}

func (c *collector) snapshot() []*pipeline.Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*pipeline.Packet(nil), c.packets...)
}

func (c *collector) count(track int) int {
	n := 0
	for _, p := range c.snapshot() {
		if p.Track == track {
			n++
		}
	}
	return n
}

// handler admits publishers with the bearer token "secret", refuses
// stream "busy" as taken, and reads every admitted session.
type handler struct {
	t     testing.TB
	calls atomic.Int64
	mu    sync.Mutex
	reqs  []ingest.Request
	colls []*collector
	wg    sync.WaitGroup
}

func newHandler(t testing.TB) *handler {
	h := &handler{t: t}
	t.Cleanup(h.wg.Wait) // the readers end with their sessions
	return h
}

func (h *handler) Publish(_ context.Context, req ingest.Request) (*ingest.Session, error) {
	h.calls.Add(1)
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.mu.Unlock()
	switch {
	case req.Key != "secret":
		return nil, fmt.Errorf("bad bearer token: %w", ingest.ErrUnauthorized)
	case req.Stream == "busy":
		return nil, fmt.Errorf("stream busy: %w", ingest.ErrConflict)
	}
	sess := ingest.NewSession(req)
	c := &collector{sess: sess, done: make(chan struct{})}
	r := sess.Subscribe(pipeline.Lossless())
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(c.done)
		for {
			p, err := r.Read(context.Background())
			if err != nil {
				return
			}
			c.mu.Lock()
			c.packets = append(c.packets, p)
			c.mu.Unlock()
		}
	}()
	h.mu.Lock()
	h.colls = append(h.colls, c)
	h.mu.Unlock()
	return sess, nil
}

func (h *handler) last() *collector {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.colls) == 0 {
		return nil
	}
	return h.colls[len(h.colls)-1]
}

func (h *handler) lastRequest() ingest.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reqs[len(h.reqs)-1]
}

// startServer serves a WHIP server at /whip/ on an httptest server; both
// close when the test ends.
func startServer(t testing.TB, h ingest.Handler, mod ...func(*Server)) (*Server, string) {
	t.Helper()
	srv := &Server{Handler: h, Settings: loopback(), Log: testutil.Logger(t), PLIInterval: 200 * time.Millisecond, TrackWait: time.Second}
	for _, m := range mod {
		m(srv)
	}
	if err := srv.Initialize(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/whip/", srv)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	return srv, hs.URL
}

// client is a pion publisher.
type client struct {
	t         testing.TB
	pc        *webrtc.PeerConnection
	base      string
	location  string
	etag      string
	connected chan struct{}
	gone      chan struct{} // the connection closed or failed
	plis      atomic.Int64
	nacks     atomic.Int64
	pli       chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// newClient builds a publisher with pion's default codecs and interceptors
// (as a browser offers many codecs, the server picks).
func newClient(t testing.TB) *client {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		t.Fatal(err)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(loopback()))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, pc: pc, connected: make(chan struct{}), gone: make(chan struct{}), pli: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	var once, goneOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			once.Do(func() { close(c.connected) })
		case webrtc.PeerConnectionStateClosed, webrtc.PeerConnectionStateFailed:
			goneOnce.Do(func() { close(c.gone) })
		}
	})
	t.Cleanup(c.close)
	return c
}

func (c *client) close() {
	c.cancel()
	_ = c.pc.Close()
	c.wg.Wait()
}

// readRTCP counts the PLIs and NACKs a sender receives.
func (c *client) readRTCP(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			pkts, _, err := read()
			if err != nil {
				return
			}
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.PictureLossIndication:
					c.plis.Add(1)
					select {
					case c.pli <- struct{}{}:
					default:
					}
				case *rtcp.TransportLayerNack:
					c.nacks.Add(1)
				}
			}
		}
	}()
}

// offer creates the offer with every candidate.
func (c *client) offer() string {
	c.t.Helper()
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		c.t.Fatal(err)
	}
	<-gathered
	return c.pc.LocalDescription().SDP
}

// publish POSTs the offer and applies the answer; it fails the test unless
// the server answers 201 with Location and ETag.
func (c *client) publish(url, token string) {
	c.t.Helper()
	c.publishOffer(url, token, c.offer())
}

func (c *client) publishOffer(url, token, offer string) {
	c.t.Helper()
	resp, body := post(c.t, url, token, "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("POST %s: %s: %s", url, resp.Status, body)
	}
	c.location, c.etag = resp.Header.Get("Location"), resp.Header.Get("ETag")
	if !strings.HasPrefix(c.location, "/whip/") || c.etag == "" || resp.Header.Get("Content-Type") != "application/sdp" ||
		resp.Header.Get("Accept-Patch") != "application/trickle-ice-sdpfrag" {
		c.t.Fatalf("201 headers: %v", resp.Header)
	}
	c.base = url[:strings.Index(url, "/whip/")]
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-c.connected:
	case <-time.After(10 * time.Second):
		c.t.Fatal("the publisher did not connect")
	}
}

// delete ends the publish with DELETE.
func (c *client) delete() int {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, c.base+c.location, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// addSample adds a sendonly track written with WriteSample.
func (c *client) addSample(capability webrtc.RTPCodecCapability, kind string) *webrtc.TrackLocalStaticSample {
	c.t.Helper()
	tr, err := webrtc.NewTrackLocalStaticSample(capability, kind, "test")
	if err != nil {
		c.t.Fatal(err)
	}
	tc, err := c.pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		c.t.Fatal(err)
	}
	c.readRTCP(tc.Sender().ReadRTCP)
	return tr
}

// loop sends samples at pace until the test ends (or n samples when n > 0).
func (c *client) loop(tr *webrtc.TrackLocalStaticSample, samples [][]byte, d, pace time.Duration, n int) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for i := 0; n <= 0 || i < n; i++ {
			select {
			case <-c.ctx.Done():
				return
			case <-tick.C:
			}
			if err := tr.WriteSample(media.Sample{Data: samples[i%len(samples)], Duration: d}); err != nil {
				return
			}
		}
	}()
}

var (
	h264Capability = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}
	opusCapability = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	vp8Capability  = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
)

func post(t testing.TB, url, token, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(b)
}

// rtpSender packetizes H.264 access units onto a TrackLocalStaticRTP,
// stamping the mid and rid header extensions when set (pion does not for
// simulcast tracks), and can leave packets out (loss that no NACK can
// repair: they never reach the NACK responder's history).
type rtpSender struct {
	track     *webrtc.TrackLocalStaticRTP
	pk        rtp.Packetizer
	midExt    uint8
	ridExt    uint8
	mid, rid  string
	drop      func() bool
	sent, cut int
}

func newRTPSender(track *webrtc.TrackLocalStaticRTP) *rtpSender {
	return &rtpSender{track: track, pk: rtp.NewPacketizer(1200, 0, 0, &codecs.H264Payloader{}, rtp.NewRandomSequencer(), 90000)}
}

func (s *rtpSender) write(au []byte, samples uint32) error {
	for _, p := range s.pk.Packetize(au, samples) {
		if s.midExt != 0 {
			_ = p.SetExtension(s.midExt, []byte(s.mid))
			_ = p.SetExtension(s.ridExt, []byte(s.rid))
		}
		if s.drop != nil && s.drop() {
			s.cut++
			continue
		}
		s.sent++
		if err := s.track.WriteRTP(p); err != nil {
			return err
		}
	}
	return nil
}

// headerExtensionIDs returns the negotiated ids of the mid and rid
// extensions of a sender.
func headerExtensionIDs(t testing.TB, s *webrtc.RTPSender) (mid, rid uint8) {
	for _, h := range s.GetParameters().HeaderExtensions {
		switch h.URI {
		case sdp.SDESMidURI:
			mid = uint8(h.ID)
		case sdp.SDESRTPStreamIDURI:
			rid = uint8(h.ID)
		}
	}
	if mid == 0 || rid == 0 {
		t.Fatal("the answer lacks the mid/rid header extensions")
	}
	return mid, rid
}

// checkMonotonic fails unless every track's timestamps strictly increase.
func checkMonotonic(t testing.TB, pkts []*pipeline.Packet) {
	t.Helper()
	last := map[int]int64{}
	for i, p := range pkts {
		if prev, ok := last[p.Track]; ok && p.PTS <= prev {
			t.Fatalf("packet %d of track %d: PTS %d after %d", i, p.Track, p.PTS, prev)
		}
		if p.DTS != p.PTS {
			t.Fatalf("packet %d: DTS %d != PTS %d", i, p.DTS, p.PTS)
		}
		last[p.Track] = p.PTS
	}
}

func video(pkts []*pipeline.Packet) []*pipeline.Packet {
	var out []*pipeline.Packet
	for _, p := range pkts {
		if p.Track == 0 {
			out = append(out, p)
		}
	}
	return out
}
