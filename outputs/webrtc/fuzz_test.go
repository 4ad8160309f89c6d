package webrtc

import (
	"encoding/json"
	"errors"
	"net/netip"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/transport/v5/vnet"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
)

// The fuzz targets of what a WHEP viewer sends: the offer (POST body), the
// trickle ICE fragment (PATCH body), the request path and the data channel
// messages. Run one with
//
//	go test -run '^$' -fuzz '^FuzzInspectOffer$' -fuzztime 10s ./outputs/webrtc

// fuzzFirefoxOffer is the shape of a Firefox WHEP offer: H.264 in both
// packetization modes, Opus, a data channel, and gathered candidates of
// every kind (the server screens them before pion sees them).
const fuzzFirefoxOffer = `v=0
o=mozilla...THIS_IS_SDPARTA-99.0 4970441567934226069 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 7B:2B:E4:4F:0B:A9:1B:7C:7A:10:6B:12:F1:64:0C:7E:59:24:69:5F:54:4B:8E:4E:45:1C:0A:AF:C4:3C:8D:5B
a=group:BUNDLE 0 1 2
a=ice-options:trickle
a=msid-semantic:WMS *
m=video 9 UDP/TLS/RTP/SAVPF 126 97 120
c=IN IP4 0.0.0.0
a=recvonly
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1
a=ice-pwd:c7a9c1e4e6b1c2f1a4b5d6e7f8091a2b
a=ice-ufrag:1f3b5c7d
a=mid:0
a=rtcp-fb:126 nack
a=rtcp-fb:126 nack pli
a=rtcp-fb:126 ccm fir
a=rtcp-fb:126 goog-remb
a=rtcp-fb:126 transport-cc
a=rtcp-mux
a=rtpmap:126 H264/90000
a=rtpmap:97 H264/90000
a=rtpmap:120 VP8/90000
a=setup:actpass
a=candidate:0 1 UDP 2122252543 192.168.1.20 54321 typ host
a=candidate:1 1 UDP 2122187007 fe80::1c2d:3e4f:5a6b:7c8d 54322 typ host
a=candidate:2 1 TCP 2105524479 192.168.1.20 9 typ host tcptype active
a=candidate:3 1 TCP 2105458943 192.168.1.20 9 typ host tcptype passive
a=candidate:4 1 UDP 2122252543 127.0.0.1 54323 typ host
a=candidate:5 1 UDP 2122252543 3c1a4f0e-6f3d-4b8e-9b43-4d0f2a9e7c11.local 54324 typ host
a=candidate:6 1 UDP 1686052863 203.0.113.7 54321 typ srflx raddr 192.168.1.20 rport 54321
a=end-of-candidates
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 0.0.0.0
a=recvonly
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:c7a9c1e4e6b1c2f1a4b5d6e7f8091a2b
a=ice-ufrag:1f3b5c7d
a=mid:1
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000/1
a=setup:actpass
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=sendrecv
a=ice-pwd:c7a9c1e4e6b1c2f1a4b5d6e7f8091a2b
a=ice-ufrag:1f3b5c7d
a=mid:2
a=setup:actpass
a=sctp-port:5000
a=max-message-size:1073741823
`

// fuzzStreamProfiles are profile-level-ids a stream may announce: x264's
// High, Constrained Baseline and Main, and the zero value of a stream that
// has no rung yet.
var fuzzStreamProfiles = []profileLevel{{0x64, 0x00, 0x1f}, {0x42, 0xc0, 0x1e}, {0x4d, 0x40, 0x28}, {}}

// fuzzFilters are the candidate filters of a default server and of one
// that denies private ranges.
func fuzzFilters(f *testing.F) []candidateFilter {
	deny, err := newCandidateFilter([]string{"10.0.0.0/8", "192.168.0.0/16", "fd00::/8"})
	if err != nil {
		f.Fatal(err)
	}
	return []candidateFilter{{}, deny}
}

// FuzzInspectOffer feeds offers to what POST does with its body before it
// spends a PeerConnection: inspectOffer, then the candidate screening.
// inspectOffer must never panic; its errors wrap exactly one of ErrBadOffer
// and ErrUnsupportedOffer; an accepted offer has Opus and an H.264 format
// chooseProfileLevel can answer with. screenOffer's errors wrap
// ErrTooManyCandidates or ErrBadOffer; otherwise it counts every candidate
// line, keeps every other line in order, keeps only candidates the filter
// uses, is idempotent, and does not change what inspectOffer sees.
func FuzzInspectOffer(f *testing.F) {
	for _, offer := range []string{chromeOffer, fuzzFirefoxOffer} {
		f.Add(crlf(offer))
		f.Add(offer)
	}
	f.Add(crlf(strings.ReplaceAll(chromeOffer, "a=mid:1\n", "a=mid:1\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\n")))
	f.Add(crlf(strings.ReplaceAll(chromeOffer, "m=audio 9", "m=audio 0")))
	f.Add("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
	f.Add("")
	filters := fuzzFilters(f)
	f.Fuzz(func(t *testing.T, offer string) {
		if len(offer) > maxOfferBytes { // readBody's cap: nothing larger gets here
			return
		}
		info, err := inspectOffer(offer)
		bad, unsupported := errors.Is(err, ErrBadOffer), errors.Is(err, ErrUnsupportedOffer)
		switch {
		case err == nil:
			if !info.opus || len(info.h264) == 0 {
				t.Fatalf("accepted an offer without Opus or H.264 mode 1: %+v", info)
			}
			for _, st := range fuzzStreamProfiles {
				p, ok := chooseProfileLevel(st, info.h264)
				if !ok || p[2] != st[2] {
					t.Fatalf("chooseProfileLevel(%s, %v) = %s, %v: want the stream's level", st, info.h264, p, ok)
				}
				if !slices.ContainsFunc(info.h264, func(o profileLevel) bool { return o[0] == p[0] && o[1] == p[1] }) {
					t.Fatalf("chooseProfileLevel(%s, %v) = %s: not an offered profile", st, info.h264, p)
				}
			}
		case bad == unsupported:
			t.Fatalf("error %q wraps neither or both of ErrBadOffer and ErrUnsupportedOffer", err)
		}
		// A default server's limit, and a low one with a deny list.
		checkScreenOffer(t, filters[0], offer, 50, info, err)
		checkScreenOffer(t, filters[1], offer, 2, info, err)
	})
}

func isCandidateLine(line string) bool {
	return strings.HasPrefix(strings.TrimRight(line, "\r\n"), "a=candidate:")
}

func checkScreenOffer(t *testing.T, fl candidateFilter, offer string, limit int, info offerInfo, inspectErr error) {
	t.Helper()
	lines := strings.SplitAfter(offer, "\n")
	inOffer := 0
	for _, l := range lines {
		if isCandidateLine(l) {
			inOffer++
		}
	}
	screened, n, err := fl.screenOffer(offer, limit)
	if err != nil {
		tooMany, bad := errors.Is(err, ErrTooManyCandidates), errors.Is(err, ErrBadOffer)
		switch {
		case tooMany == bad:
			t.Fatalf("screenOffer error %q wraps neither or both of ErrTooManyCandidates and ErrBadOffer", err)
		case tooMany && (n != limit+1 || inOffer <= limit):
			t.Fatalf("too many candidates with %d counted, %d in the offer, limit %d", n, inOffer, limit)
		case bad && n > limit:
			t.Fatalf("bad candidate reported as candidate %d, beyond the limit %d", n, limit)
		}
		return
	}
	if n != inOffer || n > limit {
		t.Fatalf("screenOffer counted %d candidates, the offer has %d, limit %d", n, inOffer, limit)
	}
	kept := strings.SplitAfter(screened, "\n")
	others := func(ls []string) string {
		return strings.Join(slices.DeleteFunc(slices.Clone(ls), isCandidateLine), "")
	}
	if others(lines) != others(kept) {
		t.Fatalf("screenOffer changed lines other than candidates:\n%q\n%q", offer, screened)
	}
	for _, l := range kept {
		if !isCandidateLine(l) {
			continue
		}
		attr := strings.TrimPrefix(strings.TrimRight(l, "\r\n"), "a=")
		c, err := ice.UnmarshalCandidate(attr)
		if err != nil {
			t.Fatalf("kept a candidate that does not parse: %q: %v", l, err)
		}
		if why := fl.refuse(c); why != "" {
			t.Fatalf("kept a candidate the filter refuses (%s): %q", why, l)
		}
	}
	again, n2, err := fl.screenOffer(screened, limit)
	if err != nil || again != screened || n2 > n {
		t.Fatalf("screening twice: %q, %d, %v; want %q, at most %d", again, n2, err, screened, n)
	}
	if inspectErr == nil {
		// info.h264 is in map order (rtpmaps): compare it as a set.
		info2, err := inspectOffer(screened)
		if err != nil || !sameOfferInfo(info, info2) {
			t.Fatalf("the screened offer inspects as %+v, %v; the offer as %+v", info2, err, info)
		}
	}
}

func sameOfferInfo(a, b offerInfo) bool {
	sorted := func(p []profileLevel) []profileLevel {
		p = slices.Clone(p)
		slices.SortFunc(p, func(x, y profileLevel) int { return strings.Compare(x.String(), y.String()) })
		return p
	}
	a.h264, b.h264 = sorted(a.h264), sorted(b.h264)
	return reflect.DeepEqual(a, b)
}

// FuzzTrickleFragment feeds PATCH bodies to parseSDPFrag and what patch
// does with its result (ice.UnmarshalCandidate, the candidate filter). It
// must never panic; errors name the line in one line of text; a fragment
// it accepts has only "candidate:" attributes as candidates and survives a
// round trip (written back as a fragment, it parses the same); the filter
// never lets a loopback, link-local, multicast or unspecified address, or
// a TCP candidate the server would have to dial, through.
func FuzzTrickleFragment(f *testing.F) {
	f.Add("a=ice-ufrag:Zm9v\r\na=ice-pwd:YmFyYmFyYmFyYmFyYmFyYmFyYmFy\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n" +
		"a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n" +
		"a=candidate:2 1 udp 1694498815 198.51.100.7 61000 typ srflx raddr 192.168.1.20 rport 50000\r\n")
	f.Add("a=mid:0\na=candidate:3 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active\na=candidate:4 1 tcp 1518280447 192.0.2.1 40000 typ host tcptype passive\n")
	f.Add("a=ice-ufrag:other\r\na=mid:0\r\na=candidate:5 1 udp 2130706431 127.0.0.1 50000 typ host\r\n")
	f.Add("a=candidate:6 1 udp 2130706431 fe80::1%eth0 50000 typ host\r\na=candidate:7 1 udp 2130706431 ::ffff:127.0.0.1 1 typ host\r\n")
	f.Add("a=candidate:8 1 udp 2130706431 0f2a9e7c-1d3b-4c5e-8f90-a1b2c3d4e5f6.local 50000 typ host\r\n")
	f.Add("a=candidate:9 1 udp 16777215 203.0.113.9 3478 typ relay raddr 0.0.0.0 rport 0 generation 0 ufrag Zm9v network-cost 999\r\n")
	f.Add("a=end-of-candidates\r\n")
	f.Add("this is not SDP\r\n")
	f.Add("")
	filters := fuzzFilters(f)
	f.Fuzz(func(t *testing.T, body string) {
		if len(body) > maxOfferBytes { // readBody's cap
			return
		}
		frag, err := parseSDPFrag(body)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "not an SDP fragment line: ") || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error %q: want one line naming the bad line", msg)
			}
			return
		}
		for _, c := range frag.candidates {
			if !strings.HasPrefix(c, "candidate:") {
				t.Fatalf("candidate %q lacks the candidate: prefix", c)
			}
		}
		if strings.Contains(frag.ufrag+frag.mid+strings.Join(frag.candidates, ""), "\n") {
			t.Fatalf("a value spans lines: %+v", frag)
		}
		var b strings.Builder
		if frag.ufrag != "" {
			b.WriteString("a=ice-ufrag:" + frag.ufrag + "\r\n")
		}
		if frag.mid != "" {
			b.WriteString("a=mid:" + frag.mid + "\r\n")
		}
		for _, c := range frag.candidates {
			b.WriteString("a=" + c + "\r\n")
		}
		again, err := parseSDPFrag(b.String())
		if err != nil || !reflect.DeepEqual(again, frag) {
			t.Fatalf("round trip of %+v: %+v, %v", frag, again, err)
		}
		for _, c := range frag.candidates {
			cand, err := ice.UnmarshalCandidate(c)
			if err != nil {
				continue // patch answers 400
			}
			for _, fl := range filters {
				checkRefuse(t, fl, cand)
			}
		}
	})
}

func checkRefuse(t *testing.T, fl candidateFilter, c ice.Candidate) {
	t.Helper()
	why := fl.refuse(c)
	if why != "" {
		return
	}
	if c.NetworkType().IsTCP() && c.TCPType() != ice.TCPTypeActive {
		t.Fatalf("used a %s TCP candidate: the server would dial %s", c.TCPType(), c.Address())
	}
	addr, err := netip.ParseAddr(c.Address())
	if err != nil {
		t.Fatalf("used a candidate whose address %q is not an IP address", c.Address())
	}
	addr = addr.Unmap().WithZone("")
	if addr.IsLoopback() || addr.IsLinkLocalUnicast() || addr.IsMulticast() || addr.IsUnspecified() || addr == broadcast4 {
		t.Fatalf("used candidate address %s", addr)
	}
	for _, p := range fl.deny {
		if p.Contains(addr) {
			t.Fatalf("used candidate address %s in denied %s", addr, p)
		}
	}
}

// FuzzWHEPPath feeds request paths to splitWHEPPath. It must never panic;
// stream and session hold no '/', a session comes with a stream; what it
// splits it splits the same under any mount point; and the Location that
// POST answers (the request path plus the session ID) leads PATCH and
// DELETE back to the same stream and session.
func FuzzWHEPPath(f *testing.F) {
	for _, p := range []string{
		"/whep/demo", "/whep/demo/", "/whep/demo/0123456789abcdef0123456789abcdef",
		"/api/v1/whep/cam1", "/whep/", "/whep", "/whep/demo/a/b", "/whep//demo", "/", "",
		"/whep/demo/whep/x", "/prefix/whep/demo?rung=360p",
	} {
		f.Add(p)
	}
	const id = "0123456789abcdef0123456789abcdef" // randomID's shape
	f.Fuzz(func(t *testing.T, p string) {
		if len(p) > 1<<20 { // net/http's default header limit bounds the request line
			return
		}
		stream, session := splitWHEPPath(p)
		if strings.Contains(stream, "/") || strings.Contains(session, "/") {
			t.Fatalf("splitWHEPPath(%q) = %q, %q: a part holds '/'", p, stream, session)
		}
		if stream == "" {
			if session != "" {
				t.Fatalf("splitWHEPPath(%q) = %q, %q: a session without a stream", p, stream, session)
			}
			return
		}
		for _, mount := range []string{"/whep/", "/api/v1/whep/"} {
			again := mount + stream
			if session != "" {
				again += "/" + session
			}
			if s, id := splitWHEPPath(again); s != stream || id != session {
				t.Fatalf("splitWHEPPath(%q) = %q, %q; but splitWHEPPath(%q) = %q, %q", p, stream, session, again, s, id)
			}
		}
		// post: Location is the request path with the session ID appended.
		// The handler is mounted at .../whep/, and ServeMux hands it clean
		// paths (a trailing '/' kept).
		clean := strings.HasPrefix(p, "/") && (path.Clean(p) == p || path.Clean(p)+"/" == p)
		clean = clean && strings.Contains(p, "/whep/")
		if session == "" && clean && pipeline.ValidName(stream) {
			loc := strings.TrimSuffix(p, "/") + "/" + id
			if s, sid := splitWHEPPath(loc); s != stream || sid != id {
				t.Fatalf("POST %s creates %s, which splits as %q, %q: want %q, %q", p, loc, s, sid, stream, id)
			}
		}
	})
}

// fuzzMaxDCMessage bounds a fuzzed data channel message; pion refuses to
// send more than the peer's max-message-size (64 KiB by default).
const fuzzMaxDCMessage = 16 << 10

// FuzzDataChannelMessage sends messages over a real data channel (two pion
// PeerConnections on pion's virtual network) to a session's onDataChannel.
// It must never panic; a message is either a pin, handed to the session's
// run loop exactly as named, when it is JSON with "type":"pin" and a
// non-empty "rung", or answered with the documented error message (an
// action, with an error saying why it was refused: this session has no
// sink), never both and never neither.
func FuzzDataChannelMessage(f *testing.F) {
	for _, m := range []string{
		`{"type":"pin","rung":"360p"}`, `{"type":"pin","rung":"auto"}`, `{"type":"pin","rung":"4k"}`,
		`{"type":"pin"}`, `{"type":"rungs"}`, `{"Type":"pin","RUNG":"180p"}`, `{"type":"pin","rung":"360p","x":1}`,
		`{"type":"pin","rung":""}`, `{"type":"pin","rung":3}`, `[]`, `null`, `"pin"`, `{`, "",
		`{"type":"action","data":{"bid":1},"rtp":90000}`, `{"type":"action","rtp":-1}`, `{"type":"action"}`,
	} {
		f.Add([]byte(m))
	}
	sess, dc, replies := fuzzDataChannel(f)
	wantError := errorMessage{Type: "error", Error: unknownMessage}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzMaxDCMessage {
			return
		}
		select {
		case r := <-replies:
			t.Fatalf("a reply nobody asked for: %s", r)
		case p := <-sess.pins:
			t.Fatalf("a pin nobody sent: %q", p)
		default:
		}
		var msg clientMessage
		err := json.Unmarshal(data, &msg)
		isPin := err == nil && msg.Type == "pin" && msg.Rung != ""
		action := isAction(data, &msg, err)
		if err := dc.Send(data); err != nil {
			t.Fatalf("send %q: %v", data, err)
		}
		select {
		case p := <-sess.pins:
			if !isPin || p != msg.Rung {
				t.Fatalf("message %q pinned %q", data, p)
			}
		case r := <-replies:
			var got errorMessage
			if isPin || json.Unmarshal(r, &got) != nil || got.Type != "error" || (!action && got != wantError) ||
				(action && !strings.HasPrefix(got.Error, ErrActionRefused.Error())) {
				t.Fatalf("message %q answered with %s", data, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %q: neither a pin nor an answer within 10s", data)
		}
	})
}

// fuzzDataChannel connects a viewer PeerConnection to a server one whose
// data channels go to a session's onDataChannel, as newSession wires them,
// and returns the session, the viewer's open channel and what arrives on
// it after the rungs announcement.
func fuzzDataChannel(f *testing.F) (*session, *webrtc.DataChannel, <-chan []byte) {
	f.Helper()
	logs := pionLogs{log: testLogger()}
	router, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "10.0.0.0/24", LoggerFactory: logs})
	if err != nil {
		f.Fatal(err)
	}
	newPC := func(ip string) *webrtc.PeerConnection {
		nw, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		if err != nil {
			f.Fatal(err)
		}
		if err := router.AddNet(nw); err != nil {
			f.Fatal(err)
		}
		se := webrtc.SettingEngine{LoggerFactory: logs}
		se.SetNet(nw)
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			f.Fatal(err)
		}
		return pc
	}
	serverPC, viewerPC := newPC("10.0.0.1"), newPC("10.0.0.2")
	if err := router.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		_ = viewerPC.Close()
		_ = serverPC.Close()
		_ = router.Stop()
	})

	sess := &session{
		id:   "fuzz",
		st:   &stream{name: "fuzz", rungs: []rung{{track: pipeline.Track{Name: "360p", Width: 640, Height: 360, Bitrate: 700_000}}}},
		pins: make(chan string, 1),
	}
	serverPC.OnDataChannel(sess.onDataChannel)
	dc, err := viewerPC.CreateDataChannel("prism", nil)
	if err != nil {
		f.Fatal(err)
	}
	replies := make(chan []byte, 16)
	dc.OnMessage(func(m webrtc.DataChannelMessage) { replies <- m.Data })

	// Full gathering, no trickle: the offer and the answer carry every candidate.
	gathered := func(pc *webrtc.PeerConnection, sd webrtc.SessionDescription) webrtc.SessionDescription {
		f.Helper()
		done := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(sd); err != nil {
			f.Fatal(err)
		}
		<-done
		return *pc.LocalDescription()
	}
	offer, err := viewerPC.CreateOffer(nil)
	if err != nil {
		f.Fatal(err)
	}
	if err := serverPC.SetRemoteDescription(gathered(viewerPC, offer)); err != nil {
		f.Fatal(err)
	}
	answer, err := serverPC.CreateAnswer(nil)
	if err != nil {
		f.Fatal(err)
	}
	if err := viewerPC.SetRemoteDescription(gathered(serverPC, answer)); err != nil {
		f.Fatal(err)
	}
	select {
	case r := <-replies:
		var m rungsMessage
		if err := json.Unmarshal(r, &m); err != nil || m.Type != "rungs" || len(m.Rungs) != 1 {
			f.Fatalf("first message %s: want the rungs", r)
		}
	case <-time.After(20 * time.Second):
		f.Fatal("the data channel did not open within 20s")
	}
	return sess, dc, replies
}
