package webrtc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestHostileClients: clients that stall their bodies, open many sessions
// or send many (or aimed) ICE candidates, over real sockets, cannot lock
// viewers out, and a real viewer next to them plays.
func TestHostileClients(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)

	t.Run("stalled bodies hold no slot", func(t *testing.T) {
		cfg := testConfig() // max_sessions 500, as in production
		cfg.OfferTimeout = 3 * time.Second
		srv, hs := startServer(t, job, cfg, nil)
		addr := hs.Listener.Addr().String()
		n := cfg.MaxSessions + 10
		opened := time.Now()
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			// The headers announce a body that never comes.
			if _, err := fmt.Fprintf(c, "POST /whep/test HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: 4000\r\n\r\nv=0\r\n", addr, mimeSDP); err != nil {
				t.Fatal(err)
			}
		}
		testutil.Eventually(t, cfg.OfferTimeout, fmt.Sprintf("%d stalled bodies waited for", n), func() bool {
			return srv.Stats().Reading == n
		})

		v := newViewer(t, viewerOptions{})
		defer v.close(true)
		v.mustConnect(t, hs.URL, "test")
		if st := srv.Stats(); st.Reading != n || st.Sessions != 1 {
			t.Fatalf("after the viewer's 201: %d bodies being read, %d sessions; want %d and 1 (too slow a machine?)", st.Reading, st.Sessions, n)
		}
		testutil.Eventually(t, 10*time.Second, "the viewer's first frame", func() bool { return len(v.snapshot()) > 0 })

		for i, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(cfg.OfferTimeout + 10*time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("stalled request %d: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "webrtc.offer_timeout") {
				t.Fatalf("stalled request %d: %d %q, want 408 naming webrtc.offer_timeout", i, resp.StatusCode, body)
			}
			if i == 0 {
				if d := time.Since(opened); d < cfg.OfferTimeout {
					t.Errorf("408 after %s, before offer_timeout %s", d, cfg.OfferTimeout)
				}
			}
		}
		st := srv.Stats()
		if st.Reading != 0 || st.Rejected["offer_timeout"] != uint64(n) || st.Sessions != 1 {
			t.Errorf("reading %d, rejected %v, sessions %d: want 0, %d offer_timeout, 1", st.Reading, st.Rejected, st.Sessions, n)
		}
	})

	t.Run("per-address and per-stream caps", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxSessionsPerIP, cfg.MaxSessionsPerStream = 2, 3
		srv, hs := startServer(t, job, cfg, nil)
		offer := crlf(chromeOffer)
		a, b, c := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
		var first string
		for i, ca := range []struct {
			client *http.Client
			status int
			msg    string
		}{
			{a, 201, ""},
			{a, 201, ""},
			{a, 503, "webrtc.max_sessions_per_ip"},
			{b, 201, ""},
			{c, 503, "webrtc.max_sessions_per_stream"},
		} {
			resp, body := send(t, ca.client, http.MethodPost, hs.URL+"/whep/test", mimeSDP, offer)
			if resp.StatusCode != ca.status || !strings.Contains(body, ca.msg) {
				t.Fatalf("offer %d: %d %q, want %d with %q", i+1, resp.StatusCode, body, ca.status, ca.msg)
			}
			if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
				t.Errorf("offer %d: 503 without Retry-After", i+1)
			}
			if i == 0 {
				first = hs.URL + resp.Header.Get("Location")
			}
		}
		// An ended session gives its address and its stream a slot back.
		if resp, _ := send(t, a, http.MethodDelete, first, "", ""); resp.StatusCode != 200 {
			t.Fatalf("DELETE: %d", resp.StatusCode)
		}
		if resp, body := send(t, a, http.MethodPost, hs.URL+"/whep/test", mimeSDP, offer); resp.StatusCode != 201 {
			t.Fatalf("offer after DELETE: %d %q", resp.StatusCode, body)
		}
		st := srv.Stats()
		if st.Sessions != 3 || st.Rejected["max_sessions_per_ip"] != 1 || st.Rejected["max_sessions_per_stream"] != 1 {
			t.Errorf("%d sessions, rejected %v", st.Sessions, st.Rejected)
		}
	})

	t.Run("candidate cap", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxCandidates = 20
		srv, hs := startServer(t, job, cfg, nil)

		// An offer with more candidates than a session may have.
		var extra strings.Builder
		for i := range cfg.MaxCandidates + 1 {
			fmt.Fprintf(&extra, "a=candidate:%d 1 udp 2130706431 203.0.113.%d 40000 typ host\n", i, i+1)
		}
		status, body := postSDP(t, hs.URL+"/whep/test", mimeSDP, []byte(crlf(withCandidates(chromeOffer, extra.String()))))
		if status != http.StatusBadRequest || !strings.Contains(body, "webrtc.max_candidates") {
			t.Fatalf("offer with %d candidates: %d %q, want 400 naming webrtc.max_candidates", cfg.MaxCandidates+1, status, body)
		}

		v := newViewer(t, viewerOptions{})
		defer v.close(true)
		v.mustConnect(t, hs.URL, "test")
		testutil.Eventually(t, 10*time.Second, "the viewer's first frame", func() bool { return len(v.snapshot()) > 0 })
		inOffer := strings.Count(v.pc.LocalDescription().SDP, "a=candidate:")
		if inOffer >= cfg.MaxCandidates {
			t.Fatalf("the viewer offered %d candidates, the test needs fewer than %d", inOffer, cfg.MaxCandidates)
		}
		// Up to the cap, ignored candidates included; then one more.
		var frag strings.Builder
		frag.WriteString("a=mid:0\r\n")
		for i := range cfg.MaxCandidates - inOffer {
			ip := fmt.Sprintf("203.0.113.%d", i+1)
			if i%2 == 1 {
				ip = fmt.Sprintf("127.0.0.%d", i+1)
			}
			fmt.Fprintf(&frag, "a=candidate:%d 1 udp 2130706431 %s 40000 typ host\r\n", 100+i, ip)
		}
		client := &http.Client{}
		if resp, body := send(t, client, http.MethodPatch, v.location, mimeTrickleICE, frag.String()); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH up to the cap: %d %q", resp.StatusCode, body)
		}
		one := "a=mid:0\r\na=candidate:999 1 udp 2130706431 203.0.113.200 40000 typ host\r\n"
		resp, body := send(t, client, http.MethodPatch, v.location, mimeTrickleICE, one)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "webrtc.max_candidates") {
			t.Fatalf("PATCH beyond the cap: %d %q, want 429 naming webrtc.max_candidates", resp.StatusCode, body)
		}
		// The session keeps working.
		frames := len(v.snapshot())
		testutil.Eventually(t, 5*time.Second, "30 more frames after the refused PATCH", func() bool { return len(v.snapshot()) >= frames+30 })
		if st := srv.Stats(); st.Sessions != 1 || len(st.Ended) != 0 {
			t.Errorf("%d sessions, ended %v: the refused PATCH must not end the session", st.Sessions, st.Ended)
		}
	})

	t.Run("aimed candidates are ignored", func(t *testing.T) {
		cfg := testConfig()
		cfg.TCPPort = freeTCPPort(t)
		cfg.DenyCandidateCIDRs = []string{"198.51.100.0/24"}
		srv, hs := startServer(t, job, cfg, nil)
		dialed := tcpTrap(t)

		denied := []string{"127.0.0.1", "169.254.10.20", "0.0.0.0", "224.0.0.251", "255.255.255.255", "198.51.100.7"}
		var inOffer strings.Builder
		for i, ip := range denied {
			fmt.Fprintf(&inOffer, "a=candidate:%d 1 udp 2130706431 %s 40000 typ host\n", i, ip)
		}
		inOffer.WriteString("a=candidate:50 1 udp 2130706431 203.0.113.5 40000 typ host\n")
		resp, answer := send(t, &http.Client{}, http.MethodPost, hs.URL+"/whep/test", mimeSDP, crlf(withCandidates(chromeOffer, inOffer.String())))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST: %d %q", resp.StatusCode, answer)
		}
		location := hs.URL + resp.Header.Get("Location")

		var frag strings.Builder
		frag.WriteString("a=mid:0\r\n")
		for i, ip := range denied {
			fmt.Fprintf(&frag, "a=candidate:%d 1 udp 2130706431 %s 40001 typ host\r\n", 60+i, ip)
		}
		fmt.Fprintf(&frag, "a=candidate:70 1 tcp 1518280447 %s %d typ host tcptype passive\r\n", dialed.addr.Addr(), dialed.addr.Port())
		fmt.Fprintf(&frag, "a=candidate:71 1 tcp 1518280447 %s %d typ host tcptype so\r\n", dialed.addr.Addr(), dialed.addr.Port())
		frag.WriteString("a=candidate:72 1 udp 2130706431 viewer.local 40001 typ host\r\n")
		frag.WriteString("a=candidate:73 1 udp 2130706431 203.0.113.6 40001 typ host\r\n")
		if resp, body := send(t, &http.Client{}, http.MethodPatch, location, mimeTrickleICE, frag.String()); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH: %d %q", resp.StatusCode, body)
		}

		sess := onlySession(t, srv)
		// pion adds remote candidates asynchronously: wait for the two
		// allowed ones, then no other may be there.
		testutil.Eventually(t, 5*time.Second, "the allowed candidates to be added", func() bool {
			got := remoteCandidates(sess.pc)
			return got["203.0.113.5:40000/udp"] && got["203.0.113.6:40001/udp"]
		})
		if got := remoteCandidates(sess.pc); len(got) != 2 {
			t.Errorf("remote candidates %v: want only the two allowed ones", got)
		}
		select {
		case c := <-dialed.conns:
			t.Errorf("the server dialed the viewer's passive TCP candidate (from %s)", c.RemoteAddr())
		default:
		}
	})
}

// TestICETCPIsPassiveOnly: the server's pion settings never dial a viewer's
// "tcptype passive" candidate, which pion's defaults do (the control), and
// drop loopback candidates even when added past the WHEP handler's filter.
func TestICETCPIsPassiveOnly(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	cfg := testConfig()
	cfg.TCPPort = freeTCPPort(t)
	filter, err := newCandidateFilter(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := openNetwork(&cfg, nil, filter, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	passiveAt := func(tr *trap) string {
		return fmt.Sprintf("candidate:1 1 tcp 1518280447 %s %d typ host tcptype passive", tr.addr.Addr(), tr.addr.Port())
	}
	// The control gets its own trap: pion dials a passive candidate more
	// than once, and a late dial of the control's must not count against
	// the server's settings (CI saw one 60 ms into the second half).
	controlTrap := tcpTrap(t)
	control := n.settings
	control.DisableActiveTCP(false)
	pc := answeringPeer(t, control)
	start := time.Now()
	if err := pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: passiveAt(controlTrap)}); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	select {
	case c := <-controlTrap.conns:
		took = time.Since(start)
		_ = c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("control: pion with active ICE-TCP did not dial the passive candidate; this test cannot tell")
	}
	_ = pc.Close()

	dialed := tcpTrap(t)
	pc = answeringPeer(t, n.settings)
	defer pc.Close()
	for _, c := range []string{passiveAt(dialed), "candidate:2 1 udp 2130706431 127.0.0.1 40000 typ host",
		"candidate:3 1 udp 2130706431 203.0.113.9 40000 typ host"} {
		if err := pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the allowed candidate to be added", func() bool {
		return remoteCandidates(pc)["203.0.113.9:40000/udp"]
	})
	if got := remoteCandidates(pc); got["127.0.0.1:40000/udp"] {
		t.Errorf("remote candidates %v: the loopback one must be dropped", got)
	}
	// A dial would come as fast as the control's: give it ten times as long.
	select {
	case c := <-dialed.conns:
		t.Errorf("the server's settings dialed the passive candidate (from %s)", c.RemoteAddr())
	case <-time.After(min(max(10*took, 500*time.Millisecond), 3*time.Second)):
	}
}

func TestCandidateFilter(t *testing.T) {
	f, err := newCandidateFilter([]string{"198.51.100.0/24", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []struct {
		candidate, why string
	}{
		{"candidate:1 1 udp 1 203.0.113.1 9 typ host", ""},
		{"candidate:1 1 udp 1 10.1.2.3 9 typ host", ""}, // LAN viewers
		{"candidate:1 1 udp 1 192.168.1.5 9 typ srflx raddr 0.0.0.0 rport 0", ""},
		{"candidate:1 1 tcp 1 203.0.113.1 9 typ host tcptype active", ""},
		{"candidate:1 1 udp 1 127.0.0.1 9 typ host", "loopback"},
		{"candidate:1 1 udp 1 ::1 9 typ host", "loopback"},
		{"candidate:1 1 udp 1 ::ffff:127.0.0.1 9 typ host", "loopback"},
		{"candidate:1 1 udp 1 169.254.169.254 80 typ host", "link-local"},
		{"candidate:1 1 udp 1 fe80::1 9 typ host", "link-local"},
		{"candidate:1 1 udp 1 0.0.0.0 9 typ host", "unspecified"},
		{"candidate:1 1 udp 1 239.1.1.1 9 typ host", "multicast"},
		{"candidate:1 1 udp 1 ff02::1 9 typ host", "multicast"},
		{"candidate:1 1 udp 1 255.255.255.255 9 typ host", "broadcast"},
		{"candidate:1 1 udp 1 198.51.100.77 9 typ relay raddr 0.0.0.0 rport 0", "webrtc.deny_candidate_cidrs"},
		{"candidate:1 1 udp 1 2001:db8::1 9 typ host", "webrtc.deny_candidate_cidrs"},
		{"candidate:1 1 tcp 1 203.0.113.1 9 typ host tcptype passive", "does not dial"},
		{"candidate:1 1 tcp 1 203.0.113.1 9 typ host tcptype so", "does not dial"},
		{"candidate:1 1 udp 1 abcd.local 9 typ host", "not an IP"},
	} {
		c, err := ice.UnmarshalCandidate(ca.candidate)
		if err != nil {
			t.Fatalf("%s: %v", ca.candidate, err)
		}
		if why := f.refuse(c); (ca.why == "") != (why == "") || !strings.Contains(why, ca.why) {
			t.Errorf("%s: refused for %q, want %q", ca.candidate, why, ca.why)
		}
	}

	offer := crlf(withCandidates(chromeOffer, "a=candidate:1 1 udp 1 203.0.113.1 9 typ host\na=candidate:2 1 udp 1 127.0.0.1 9 typ host\n"))
	screened, n, err := f.screenOffer(offer, 2)
	if err != nil || n != 2 || !strings.Contains(screened, "203.0.113.1") || strings.Contains(screened, "127.0.0.1 9") ||
		strings.Count(screened, "\r\n") != strings.Count(offer, "\r\n")-1 {
		t.Errorf("screenOffer: %d candidates, %v:\n%s", n, err, screened)
	}
	if _, _, err := f.screenOffer(offer, 1); !errors.Is(err, ErrTooManyCandidates) {
		t.Errorf("screenOffer over the limit: %v", err)
	}
	if _, _, err := f.screenOffer(crlf(withCandidates(chromeOffer, "a=candidate:garbage\n")), 5); !errors.Is(err, ErrBadOffer) {
		t.Errorf("screenOffer of a bad candidate: %v", err)
	}
	if _, err := newCandidateFilter([]string{"10.0.0.0/33"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad CIDR: %v", err)
	}
}

// withCandidates inserts candidate lines into the first media section of an
// offer (with "\n" line ends, before crlf).
func withCandidates(offer, lines string) string {
	i := strings.Index(offer, "a=mid:0\n")
	return offer[:i] + lines + offer[i:]
}

// clientFrom is an HTTP client whose connections come from ip, a loopback
// address: the server sees a different client per address.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func send(t *testing.T, c *http.Client, method, url, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func onlySession(t *testing.T, srv *Server) *session {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(srv.sessions))
	}
	for _, s := range srv.sessions {
		return s
	}
	return nil
}

// remoteCandidates are the remote candidates pion holds, as "ip:port/proto".
func remoteCandidates(pc *webrtc.PeerConnection) map[string]bool {
	out := map[string]bool{}
	for _, s := range pc.GetStats() {
		if c, ok := s.(webrtc.ICECandidateStats); ok && c.Type == webrtc.StatsTypeRemoteCandidate {
			out[fmt.Sprintf("%s:%d/%s", c.IP, c.Port, c.Protocol)] = true
		}
	}
	return out
}

// trap is a TCP listener on the host's own (non-loopback) address that
// reports every connection made to it.
type trap struct {
	addr  netip.AddrPort
	conns chan net.Conn
}

func tcpTrap(t *testing.T) *trap {
	t.Helper()
	var host netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			host, _ = netip.AddrFromSlice(n.IP.To4())
			break
		}
	}
	if !host.IsValid() {
		t.Skip("no non-loopback IPv4 address to aim a candidate at")
	}
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(host, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	tr := &trap{addr: ln.Addr().(*net.TCPAddr).AddrPort(), conns: make(chan net.Conn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case tr.conns <- c:
			default:
				_ = c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for {
			select {
			case c := <-tr.conns:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return tr
}

// answeringPeer is a PeerConnection on settings that has answered
// chromeOffer, so that its ICE agent runs and takes remote candidates.
func answeringPeer(t *testing.T, settings webrtc.SettingEngine) *webrtc.PeerConnection {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(settings)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: crlf(chromeOffer)}); err != nil {
		t.Fatal(err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case <-gathered:
	case <-ctx.Done():
		t.Fatal("gathering did not complete")
	}
	return pc
}
