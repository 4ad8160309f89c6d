package webrtc

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
)

// BenchmarkViewers measures viewer density: a replayed clip of real ladder
// packets (smallLadder: 360p/270p/180p H.264 and Opus; no encoder in this
// process) served to PRISM_LOAD_VIEWERS (500) pion viewers, which run in a
// child process so that only the server's CPU is counted, for a steady
// window of PRISM_LOAD_SECONDS (20). One iteration is the whole run:
//
//	go test -run '^$' -bench '^BenchmarkViewers$' -benchtime 1x ./outputs/webrtc/
//
// It reports the server's CPU per viewer-second above the no-viewer
// baseline (the replay and the stream reader), viewers per core at that
// rate, the media bitrate per viewer, CPU per packet and the allocations per
// packet of the whole process in the window (pion's send and RTCP paths
// included).
func BenchmarkViewers(b *testing.B) {
	viewers, seconds := envInt(envLoadViewers, 500), envInt(envLoadSeconds, 20)
	if os.Getenv("PRISM_LOAD_NOBATCH") == "1" { // compare: one sendto per datagram
		udpBatching = false
		b.Cleanup(func() { udpBatching = true })
	}
	c := recordClip(b)
	src := c.replay(b)
	cfg := testConfig()
	cfg.MaxSessions = viewers + 10
	cfg.MaxSessionsPerIP = cfg.MaxSessions // every viewer comes from this host
	srv, hs := startServer(b, src, cfg, nil)
	baseline := cpuRate(3 * time.Second)

	var w *loadWindow
	for b.Loop() {
		w = runLoad(b, srv, hs.URL, viewers, seconds, func() uint64 { return 0 }, envInt(envLoadWarmup, 10))
	}
	if w.summary.Connected != viewers {
		b.Errorf("%d of %d viewers connected", w.summary.Connected, viewers)
	}
	// A starved server (a busy machine) drops units and serves fewer
	// packets per viewer, which makes each viewer look cheap.
	before := map[string]uint64{}
	for _, v := range w.stats0.Viewers {
		before[v.ID] = v.Dropped
	}
	var queueDrops uint64 // in the window
	for _, v := range w.stats1.Viewers {
		queueDrops += v.Dropped - before[v.ID]
	}
	if queueDrops > 0 || w.summary.FPSMedian < 25 {
		b.Errorf("not a steady state: viewer queues dropped %d units, median %.1f fps (is the machine busy?)",
			queueDrops, w.summary.FPSMedian)
	}
	packets, bytes, padding := w.sent()
	viewerSec := float64(w.summary.Connected) * w.seconds()
	cpu := (w.cores() - baseline) * w.seconds() // CPU seconds the viewers cost
	msPerViewerSec := cpu * 1000 / viewerSec
	b.ReportMetric(msPerViewerSec, "cpu-ms/viewer-s")
	b.ReportMetric(1000/msPerViewerSec, "viewers/core")
	b.ReportMetric(float64(bytes)*8/viewerSec/1000, "kbit/s/viewer")
	b.ReportMetric(float64(packets+padding)/viewerSec, "pkts/viewer-s")
	b.ReportMetric(cpu*1e6/float64(packets+padding), "cpu-us/pkt")
	b.ReportMetric(float64(w.mallocs1-w.mallocs0)/float64(packets+padding), "allocs/pkt")
	b.Logf("%d viewers joined in %s; window %.1f s; server %.3f cores, baseline %.3f cores; %d media + %d padding packets",
		w.summary.Connected, w.joined.Round(time.Millisecond), w.seconds(), w.cores(), baseline, packets, padding)
	w.log(b)
}

// benchUnits packetizes the clip's top rung and Opus track: real frames
// for the per-packet benchmarks.
func benchUnits(tb testing.TB) (video, audio []*unit) {
	tb.Helper()
	c := recordClip(tb)
	st := newStream("bench", replayTracks(c), &Config{}, testLogger())
	for i := range c.packets {
		p := c.packets[i]
		if u := st.pk.packetize(&p); u != nil {
			if u.video && u.rung == 0 {
				video = append(video, u)
			} else if !u.video {
				audio = append(audio, u)
			}
		}
	}
	st.reader.Close()
	return video, audio
}

// replayTracks is a source with the clip's tracks that publishes nothing.
func replayTracks(c *clip) pipeline.Source {
	return fake.NewSource(append([]pipeline.Track(nil), c.tracks...)...)
}

// sendPath is Prism's part of a packet's way to one viewer: the stream's
// dispatch into the viewer's queue, the session popping it and the
// forwarder rewriting it for the viewer's track.
type sendPath struct {
	st  *stream
	s   *session
	fwd *forwarder
	lat pipeline.Histogram
}

func newSendPath(tb testing.TB, video, audio rtpWriter) *sendPath {
	tb.Helper()
	st := newStream("bench", replayTracks(recordClip(tb)), &Config{}, testLogger())
	tb.Cleanup(st.reader.Close)
	sp := &sendPath{st: st, s: &session{queue: newUnitQueue(256)}}
	sp.fwd = newForwarder(video, audio, 0)
	sp.fwd.onFrameSent = func(_ int64, ingest time.Time) {
		if !ingest.IsZero() {
			sp.lat.Observe(time.Since(ingest))
		}
	} // as newSession does
	sp.s.active.Store(true)
	sp.s.interest.Store(sp.fwd.interest())
	st.sessions[sp.s] = struct{}{}
	return sp
}

// send pushes u through dispatch, the queue and the forwarder.
func (sp *sendPath) send(u *unit) error {
	sp.st.dispatch(u)
	q, _ := sp.s.queue.pop()
	if q.u.video {
		return sp.fwd.onVideo(q)
	}
	return sp.fwd.onAudio(q.u)
}

// loopUnits returns the i-th unit of a looped sequence, its PTS moved on by
// whole loops so the forwarder sees time advance.
func loopUnits(units []*unit) func(i int) *unit {
	span := units[len(units)-1].pts - units[0].pts + 3000
	return func(i int) *unit {
		u := units[i%len(units)]
		if i >= len(units) && i%len(units) == 0 {
			for _, v := range units {
				v.pts += span
			}
		}
		return u
	}
}

type discardRTP struct{}

func (discardRTP) WriteRTP(*rtp.Packet) error { return nil }

// TestSendPathAllocs: Prism's per-packet work for a viewer (dispatch,
// queue, forwarder, latency histogram) allocates nothing.
func TestSendPathAllocs(t *testing.T) {
	video, audio := benchUnits(t)
	sp := newSendPath(t, discardRTP{}, discardRTP{})
	next := loopUnits(video)
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		if err := sp.send(next(i)); err != nil {
			t.Fatal(err)
		}
		if err := sp.send(audio[i%len(audio)]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per unit on Prism's send path, want 0", allocs)
	}
	if sp.fwd.frames == 0 {
		t.Fatal("no frame was forwarded")
	}
}

// BenchmarkSendPathPrism is Prism's part alone, to a discarding writer.
// One op is one RTP packet.
func BenchmarkSendPathPrism(b *testing.B) {
	video, _ := benchUnits(b)
	sp := newSendPath(b, discardRTP{}, discardRTP{})
	benchSend(b, sp, video)
}

// BenchmarkSendPath goes as deep as one process can without a peer: Prism's
// part, then a real pion TrackLocalStaticRTP bound to the session's real
// interceptor chain (congestion control, transport-cc stamping, NACK
// buffer, sender reports), SRTP (AES-256-GCM, what pion peers negotiate)
// and a UDP socket on loopback. What is left out is pion's DTLS/ICE/UDP-mux
// glue between SRTP and the socket, and the RTCP each packet causes; the
// viewers benchmark covers both. One op is one RTP packet.
func BenchmarkSendPath(b *testing.B) {
	video, _ := benchUnits(b)
	for _, batched := range []bool{false, true} {
		name := "sendto"
		if batched {
			name = "sendmmsg" // batchConn, what the server's shared socket uses
		}
		b.Run(name, func(b *testing.B) {
			track := pionTrack(b, batched)
			sp := newSendPath(b, track, discardRTP{})
			benchSend(b, sp, video)
		})
	}
}

func benchSend(b *testing.B, sp *sendPath, video []*unit) {
	next := loopUnits(video)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuSeconds(syscall.RUSAGE_SELF)
	sent := uint64(0)
	for i := 0; int(sp.fwd.packets) < b.N; i++ {
		if err := sp.send(next(i)); err != nil {
			b.Fatal(err)
		}
		sent = sp.fwd.packets
	}
	b.StopTimer()
	// CPU of the whole process (the batching flusher included), which a
	// loaded machine disturbs less than the wall time.
	b.ReportMetric((cpuSeconds(syscall.RUSAGE_SELF)-cpu0)*1e9/float64(sent), "cpu-ns/op")
	b.ReportMetric(float64(sp.fwd.bytes)/float64(sent), "payload-B/op")
}

// pionTrack is a video track bound the way pion's RTPSender binds one, with
// the interceptors senderInterceptors configures, writing through SRTP to
// a loopback UDP socket nobody reads (the kernel drops what overflows).
func pionTrack(tb testing.TB, batched bool) *webrtc.TrackLocalStaticRTP {
	tb.Helper()
	caps := videoCapability(profileLevel{0x42, 0xe0, 0x1f})
	me, err := mediaEngine(caps)
	if err != nil {
		tb.Fatal(err)
	}
	ir, err := senderInterceptors(me, pionLogs{log: testLogger()},
		&bweOptions{initial: 1_000_000, min: 100_000, max: 4_000_000}, func(*bwe) {})
	if err != nil {
		tb.Fatal(err)
	}
	chain, err := ir.Build("bench")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = chain.Close() })

	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sink.Close() })
	var conn net.Conn
	if batched {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		conn = &packetConnTo{PacketConn: newBatchConn(pc), to: sink.LocalAddr()}
	} else if conn, err = net.DialUDP("udp4", nil, sink.LocalAddr().(*net.UDPAddr)); err != nil {
		tb.Fatal(err)
	}
	key, salt := make([]byte, 32), make([]byte, 12)
	sess, err := srtp.NewSessionSRTP(conn, &srtp.Config{Profile: srtp.ProtectionProfileAeadAes256Gcm, LoggerFactory: pionLogs{log: testLogger()},
		Keys: srtp.SessionKeys{LocalMasterKey: key, LocalMasterSalt: salt, RemoteMasterKey: key, RemoteMasterSalt: salt}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sess.Close() })
	ws, err := sess.OpenWriteStream()
	if err != nil {
		tb.Fatal(err)
	}

	const ssrc, twccID = 0x1234, 3
	params := webrtc.RTPCodecParameters{RTPCodecCapability: caps, PayloadType: ptH264}
	var feedback []interceptor.RTCPFeedback
	for _, f := range append(caps.RTCPFeedback, webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBNACK},
		webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"}) {
		feedback = append(feedback, interceptor.RTCPFeedback{Type: f.Type, Parameter: f.Parameter})
	}
	info := &interceptor.StreamInfo{
		ID: "bench", Attributes: interceptor.Attributes{}, SSRC: ssrc, PayloadType: ptH264,
		RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{URI: sdp.TransportCCURI, ID: twccID}},
		MimeType:            caps.MimeType, ClockRate: caps.ClockRate, SDPFmtpLine: caps.SDPFmtpLine, RTCPFeedback: feedback,
	}
	w := chain.BindLocalStream(info, interceptor.RTPWriterFunc(
		func(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
			return ws.WriteRTP(h, payload)
		}))
	track, err := webrtc.NewTrackLocalStaticRTP(caps, "video", "bench")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := track.Bind(&benchTrackContext{params: params, ssrc: ssrc, w: w}); err != nil {
		tb.Fatal(err)
	}
	return track
}

// benchTrackContext is what pion's RTPSender hands TrackLocal.Bind: the
// negotiated codec and the stream's interceptor chain as writer.
type benchTrackContext struct {
	params webrtc.RTPCodecParameters
	ssrc   webrtc.SSRC
	w      interceptor.RTPWriter
}

func (c *benchTrackContext) CodecParameters() []webrtc.RTPCodecParameters {
	return []webrtc.RTPCodecParameters{c.params}
}

func (c *benchTrackContext) HeaderExtensions() []webrtc.RTPHeaderExtensionParameter { return nil }
func (c *benchTrackContext) SSRC() webrtc.SSRC                                      { return c.ssrc }
func (c *benchTrackContext) SSRCRetransmission() webrtc.SSRC                        { return 0 }
func (c *benchTrackContext) SSRCForwardErrorCorrection() webrtc.SSRC                { return 0 }
func (c *benchTrackContext) WriteStream() webrtc.TrackLocalWriter                   { return c }
func (c *benchTrackContext) ID() string                                             { return "bench" }
func (c *benchTrackContext) RTCPReader() interceptor.RTCPReader                     { return nil }

func (c *benchTrackContext) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	return c.w.Write(h, payload, nil)
}

func (c *benchTrackContext) Write(b []byte) (int, error) {
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		return 0, err
	}
	return c.WriteRTP(&p.Header, p.Payload)
}

// packetConnTo is a PacketConn as the net.Conn SRTP writes to: every
// datagram to one address.
type packetConnTo struct {
	net.PacketConn
	to net.Addr
}

func (c *packetConnTo) Read(b []byte) (int, error) {
	n, _, err := c.ReadFrom(b)
	return n, err
}

func (c *packetConnTo) Write(b []byte) (int, error) { return c.WriteTo(b, c.to) }
func (c *packetConnTo) RemoteAddr() net.Addr        { return c.to }
