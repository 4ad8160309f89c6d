package webrtc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The load test is opt-in: PRISM_LOAD=1 go test -run TestLoad -v -timeout 10m ./outputs/webrtc/
// It serves one ladder to PRISM_LOAD_VIEWERS (default 200) pion viewers for
// PRISM_LOAD_SECONDS (default 60). The viewers run in a child process (this
// test binary, TestLoadClients) so that the server's CPU time is measured
// apart from theirs.
const (
	envLoad        = "PRISM_LOAD"
	envLoadURL     = "PRISM_LOAD_URL"
	envLoadViewers = "PRISM_LOAD_VIEWERS"
	envLoadSeconds = "PRISM_LOAD_SECONDS"
	envLoadProfile = "PRISM_LOAD_PROFILE" // CPU profile of the steady window
	envLoadWarmup  = "PRISM_LOAD_WARMUP"  // seconds between every viewer having video and the window
	envLoadEvents  = "PRISM_LOAD_EVENTS"  // viewers open the data channel and count timed events
)

type loadSummary struct {
	Viewers      int     `json:"viewers"`
	Connected    int     `json:"connected"`
	FPSMin       float64 `json:"fps_min"`
	FPSMedian    float64 `json:"fps_median"`
	AudioPerSec  float64 `json:"audio_per_sec_median"`
	LostPackets  int     `json:"lost_packets"`
	TSBackwards  int     `json:"ts_backwards"`
	ClientCPUSec float64 `json:"client_cpu_seconds"`
	// Timed events each viewer received in the window (PRISM_LOAD_EVENTS).
	EventsMin   int64 `json:"events_min"`
	EventsTotal int64 `json:"events_total"`
}

func cpuSeconds(who int) float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestLoad(t *testing.T) {
	if os.Getenv(envLoad) != "1" {
		t.Skip("set PRISM_LOAD=1 to run the 200-viewer load test")
	}
	viewers, seconds := envInt(envLoadViewers, 200), envInt(envLoadSeconds, 60)
	job := startJob(t, smallSource, smallLadder)
	cfg := testConfig()
	cfg.MaxSessions = viewers + 10
	cfg.MaxSessionsPerIP = cfg.MaxSessions // every viewer comes from this host
	srv, hs := startServer(t, job, cfg, nil)

	// Baseline: the transcoder alone.
	time.Sleep(2 * time.Second)
	baseline := cpuRate(10 * time.Second)

	w := runLoad(t, srv, hs.URL, viewers, seconds, func() uint64 { return job.Stats().Dropped }, envInt(envLoadWarmup, 1))
	server := w.cores()
	t.Logf("%d viewers joined in %s; steady window %.0f s", w.summary.Connected, w.joined.Round(time.Millisecond), w.seconds())
	t.Logf("server process CPU: %.2f cores with viewers (%.1f CPU-s in the window), %.2f cores transcoder alone; "+
		"WebRTC per viewer %.2f ms CPU per second (%.3f %% of a core)",
		server, w.cpu1-w.cpu0, baseline, (server-baseline)/float64(viewers)*1000, (server-baseline)/float64(viewers)*100)
	w.log(t)
	if w.summary.Connected != viewers {
		t.Errorf("%d of %d viewers connected", w.summary.Connected, viewers)
	}
	if w.srcDrops1 != w.srcDrops0 {
		t.Errorf("the transcoder dropped %d frames while serving the viewers", w.srcDrops1-w.srcDrops0)
	}
}

// cpuRate measures this process's CPU use over d, in cores.
func cpuRate(d time.Duration) float64 {
	c0, t0 := cpuSeconds(syscall.RUSAGE_SELF), time.Now()
	time.Sleep(d)
	return (cpuSeconds(syscall.RUSAGE_SELF) - c0) / time.Since(t0).Seconds()
}

// loadWindow is what the server process saw during a load run's steady
// window: from every viewer having received video to the clients' summary.
type loadWindow struct {
	joined             time.Duration
	cpu0, cpu1         float64 // this process's CPU seconds
	wall0, wall1       time.Time
	mallocs0, mallocs1 uint64
	srcDrops0          uint64
	srcDrops1          uint64
	stats0, stats1     Stats
	summary            loadSummary
	peakGoroutines     int
}

func (w *loadWindow) seconds() float64 { return w.wall1.Sub(w.wall0).Seconds() }
func (w *loadWindow) cores() float64   { return (w.cpu1 - w.cpu0) / w.seconds() }

// sent sums what the server sent to its viewers in the window: media
// packets, their payload bytes and padding packets.
func (w *loadWindow) sent() (packets, bytes, padding uint64) {
	before := map[string]ViewerStats{}
	for _, v := range w.stats0.Viewers {
		before[v.ID] = v
	}
	for _, v := range w.stats1.Viewers {
		b := before[v.ID]
		packets += v.Packets - b.Packets
		bytes += v.Bytes - b.Bytes
		padding += v.Padding - b.Padding
	}
	return packets, bytes, padding
}

func (w *loadWindow) log(tb testing.TB) {
	tb.Helper()
	rungs := map[string]int{}
	var queueDrops uint64
	for _, v := range w.stats1.Viewers {
		rungs[v.Rung]++
		queueDrops += v.Dropped
	}
	var readerDrops uint64
	for _, s := range w.stats1.Streams {
		readerDrops += s.Dropped
	}
	tb.Logf("client process CPU: %.1f CPU-s total", w.summary.ClientCPUSec)
	tb.Logf("source dropped %d frames in the window; stream reader dropped %d packets; viewer queues dropped %d units",
		w.srcDrops1-w.srcDrops0, readerDrops, queueDrops)
	tb.Logf("viewers: fps min %.1f median %.1f; audio packets/s median %.1f; lost packets %d; rungs %v; switches %+v; peak goroutines %d",
		w.summary.FPSMin, w.summary.FPSMedian, w.summary.AudioPerSec, w.summary.LostPackets, rungs, w.stats1.Switches, w.peakGoroutines)
}

// runLoad runs the viewers in a child process (this test binary,
// TestLoadClients) against url and measures the steady window.
func runLoad(tb testing.TB, srv *Server, url string, viewers, seconds int, srcDropped func() uint64, warmup int) *loadWindow {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadClients$", "-test.v", "-test.timeout=0")
	cmd.Env = append(os.Environ(), envLoadURL+"="+url, envLoadViewers+"="+strconv.Itoa(viewers),
		envLoadSeconds+"="+strconv.Itoa(seconds), envLoadWarmup+"="+strconv.Itoa(warmup), envLoad+"=",
		envLoadEvents+"="+os.Getenv(envLoadEvents))
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	joinStart := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	w := &loadWindow{}
	var ms runtime.MemStats
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "LOAD READY":
			w.joined = time.Since(joinStart)
			w.stats0 = srv.Stats()
			w.srcDrops0 = srcDropped()
			runtime.ReadMemStats(&ms)
			w.mallocs0 = ms.Mallocs
			startProfile(tb)
			w.cpu0, w.wall0 = cpuSeconds(syscall.RUSAGE_SELF), time.Now()
		case strings.HasPrefix(line, "LOAD SUMMARY "):
			w.cpu1, w.wall1 = cpuSeconds(syscall.RUSAGE_SELF), time.Now()
			stopProfile()
			runtime.ReadMemStats(&ms)
			w.mallocs1 = ms.Mallocs
			w.srcDrops1 = srcDropped()
			w.stats1 = srv.Stats()
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "LOAD SUMMARY ")), &w.summary); err != nil {
				tb.Fatal(err)
			}
		case strings.HasPrefix(line, "LOAD TICK"):
			w.peakGoroutines = max(w.peakGoroutines, runtime.NumGoroutine())
		}
	}
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("client process: %v", err)
	}
	if w.wall1.IsZero() || w.wall0.IsZero() {
		tb.Fatal("the client process did not report")
	}
	return w
}

// startProfile writes a CPU profile of the steady window alone (not the
// joins) to $PRISM_LOAD_PROFILE, when set.
func startProfile(tb testing.TB) {
	path := os.Getenv(envLoadProfile)
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatal(err)
	}
	profileFile = f
}

var profileFile *os.File

func stopProfile() {
	if profileFile != nil {
		pprof.StopCPUProfile()
		_ = profileFile.Close()
		profileFile = nil
	}
}

// TestLoadClients is the client side of TestLoad, run in a child process.
func TestLoadClients(t *testing.T) {
	url := os.Getenv(envLoadURL)
	if url == "" {
		t.Skip("run by TestLoad")
	}
	n, seconds := envInt(envLoadViewers, 200), envInt(envLoadSeconds, 60)
	vs := make([]*viewer, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16) // joins in flight
	var mu sync.Mutex
	connected := 0
	for i := range vs {
		withEvents := os.Getenv(envLoadEvents) == "1"
		vs[i] = newViewer(t, viewerOptions{dataChannel: withEvents, countEvents: withEvents})
		wg.Add(1)
		sem <- struct{}{}
		go func(v *viewer) {
			defer wg.Done()
			defer func() { <-sem }()
			if status, body, err := v.connect(url, "test"); err != nil || status != 201 {
				t.Errorf("join: %d %v %s", status, err, body)
				return
			}
			mu.Lock()
			connected++
			mu.Unlock()
		}(vs[i])
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "load clients: %d of %d joined\n", connected, n)
	deadline := time.Now().Add(30 * time.Second)
	for _, v := range vs {
		for len(v.snapshot()) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Warm up: the server's per-viewer buffers (NACK history) fill, the
	// bandwidth estimates and rungs settle.
	warm := time.NewTimer(time.Duration(envInt(envLoadWarmup, 1)) * time.Second)
	<-warm.C
	start := make([]int, n)
	startAudio, startEvents := make([]int64, n), make([]int64, n)
	for i, v := range vs {
		start[i], startAudio[i], startEvents[i] = len(v.snapshot()), v.audioPackets.Load(), v.events.Load()
	}
	c0 := cpuSeconds(syscall.RUSAGE_SELF)
	t0 := time.Now()
	fmt.Println("LOAD READY")
	for range seconds {
		time.Sleep(time.Second)
		fmt.Println("LOAD TICK")
	}
	el := time.Since(t0).Seconds()
	s := loadSummary{Viewers: n, Connected: connected, ClientCPUSec: cpuSeconds(syscall.RUSAGE_SELF) - c0}
	fps := make([]float64, n)
	aps := make([]float64, n)
	s.EventsMin = -1
	for i, v := range vs {
		ev := v.events.Load() - startEvents[i]
		s.EventsTotal += ev
		if s.EventsMin < 0 || ev < s.EventsMin {
			s.EventsMin = ev
		}
		fps[i] = float64(len(v.snapshot())-start[i]) / el
		aps[i] = float64(v.audioPackets.Load()-startAudio[i]) / el
		v.mu.Lock()
		s.LostPackets += v.lost
		s.TSBackwards += v.tsBackwards
		v.mu.Unlock()
	}
	sort.Float64s(fps)
	sort.Float64s(aps)
	s.FPSMin, s.FPSMedian, s.AudioPerSec = fps[0], fps[n/2], aps[n/2]
	b, _ := json.Marshal(s)
	fmt.Println("LOAD SUMMARY " + string(b))
	for _, v := range vs {
		v.close(true)
	}
}
