package webrtc

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/internal/testutil"
)

// freeTCPPort returns a port that was free a moment ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestICENetworking: all sessions share the one UDP port; with nat_1to1_ips
// the answer offers the public address instead of the host's; a viewer that
// can only use TCP plays over the ICE-TCP port; a viewer that closes without
// DELETE loses its session.
func TestICENetworking(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	job := startJob(t, smallSource, smallLadder)

	cfg := testConfig()
	cfg.NAT1To1IPs = []string{"203.0.113.7"}
	natSrv, natHS := startServer(t, job, cfg, nil)
	port := natSrv.UDPAddr().(*net.UDPAddr).Port
	status, answer := postSDP(t, natHS.URL+"/whep/test", mimeSDP, []byte(crlf(chromeOffer)))
	if status != http.StatusCreated {
		t.Fatalf("POST: %d %s", status, answer)
	}
	var cands []string
	for _, l := range strings.Split(answer, "\r\n") {
		if strings.HasPrefix(l, "a=candidate:") {
			cands = append(cands, l)
		}
	}
	if len(cands) == 0 {
		t.Fatalf("no candidates in the answer:\n%s", answer)
	}
	for _, c := range cands {
		f := strings.Fields(c)
		if f[4] != "203.0.113.7" || f[5] != strconv.Itoa(port) || f[7] != "host" {
			t.Errorf("candidate %q: want host 203.0.113.7 on the shared port %d", c, port)
		}
	}

	cfg = testConfig()
	cfg.TCPPort = freeTCPPort(t)
	tcpSrv, hs := startServer(t, job, cfg, nil)
	v := newTCPViewer(t)
	v.mustConnect(t, hs.URL, "test")
	testutil.Eventually(t, 10*time.Second, "30 frames over ICE-TCP", func() bool { return len(v.snapshot()) >= 30 })
	pair, err := selectedPair(v.pc)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Local.Protocol != webrtc.ICEProtocolTCP || pair.Remote.Port != uint16(cfg.TCPPort) {
		t.Errorf("selected pair %s: want TCP to port %d", pair, cfg.TCPPort)
	}
	checkClean(t, v)

	// A viewer that goes away without DELETE ends its session too.
	v.close(false)
	testutil.Eventually(t, 15*time.Second, "the abandoned session to end", func() bool { return tcpSrv.Stats().Sessions == 0 })
	t.Logf("abandoned session ended: %v", tcpSrv.Stats().Ended)
}

// newTCPViewer is a viewer limited to ICE-TCP (active candidates).
func newTCPViewer(t *testing.T) *viewer {
	t.Helper()
	me, ir, se := viewerEngine(t)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir),
		webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	return attachViewer(t, pc, viewerOptions{decode: true})
}

func selectedPair(pc *webrtc.PeerConnection) (*webrtc.ICECandidatePair, error) {
	return pc.GetReceivers()[0].Transport().ICETransport().GetSelectedCandidatePair()
}
