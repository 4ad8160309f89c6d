package webrtc

import (
	"testing"
	"time"

	"github.com/pion/transport/v5/vnet"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestABRUnderConstraint runs server and viewer on pion's virtual network,
// with a token-bucket queue in front of the viewer (its downlink). Below the
// top rung's bitrate the server must move the viewer down within 5 s; when
// the limit is lifted it must come back up within 10 s; every frame the
// viewer assembles decodes without error, across both switches.
func TestABRUnderConstraint(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t))
	const (
		unlimited = 50_000_000
		limited   = 650_000 // below 360p (700k + 48k audio), above 270p (450k + 48k)
	)
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "10.0.0.0/24", LoggerFactory: pionLogs{log: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	serverNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{"10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	viewerNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{"10.0.0.2"}})
	if err != nil {
		t.Fatal(err)
	}
	// 40 KB of queue: about half a second at the limited rate, then drops.
	shaper := vnet.NewTBFQueue(unlimited, 5000, 40_000)
	downlink, err := vnet.NewQueue(viewerNet, shaper)
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.AddNet(serverNet); err != nil {
		t.Fatal(err)
	}
	if err := wan.AddNet(downlink); err != nil {
		t.Fatal(err)
	}
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = downlink.Close()
		_ = wan.Stop()
	})

	job := startJob(t, smallSource, smallLadder)
	srv, hs := startServer(t, job, testConfig(), serverNet)
	v := newViewer(t, viewerOptions{net: viewerNet, decode: true})
	defer v.close(false)
	v.mustConnect(t, hs.URL, "test")

	heightNow := func() int {
		f := v.snapshot()
		if len(f) == 0 {
			return 0
		}
		return f[len(f)-1].height
	}
	testutil.Eventually(t, 10*time.Second, "360p frames", func() bool { return heightNow() == 360 })
	time.Sleep(2 * time.Second) // settle on the top rung (not a wait for a condition: a steady phase)

	shaper.SetRate(limited)
	limitedAt := time.Now()
	testutil.Eventually(t, 5*time.Second, "a move below 360p", func() bool { h := heightNow(); return h > 0 && h < 360 })
	down := time.Since(limitedAt)
	testutil.Report(t, "limit %d kbit/s: down to %dp after %s (stats %+v)", limited/1000, heightNow(), down.Round(time.Millisecond),
		srv.Stats().Switches)
	time.Sleep(8 * time.Second) // run constrained: a probe for 360p, if any, fails and backs off

	shaper.SetRate(unlimited)
	liftedAt := time.Now()
	testutil.Eventually(t, 10*time.Second, "a move back to 360p", func() bool { return heightNow() == 360 })
	up := time.Since(liftedAt)
	st := srv.Stats()
	testutil.Report(t, "limit lifted: back to 360p after %s; switches %+v; viewer %+v", up.Round(time.Millisecond), st.Switches, st.Viewers[0])

	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.decodeErrors) > 0 || v.tsBackwards > 0 {
		t.Errorf("decode errors %v, timestamps backwards %d", v.decodeErrors, v.tsBackwards)
	}
	t.Logf("viewer lost %d packets (drops at the shaper), %d frames, %d padding packets", v.lost, len(v.frames), v.padding.Load())
	if st.Switches.Down == 0 || st.Switches.Up == 0 {
		t.Errorf("switch stats %+v: want moves both ways", st.Switches)
	}
}
