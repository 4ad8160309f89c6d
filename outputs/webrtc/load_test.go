package webrtc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
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
	c0, t0 := cpuSeconds(syscall.RUSAGE_SELF), time.Now()
	time.Sleep(10 * time.Second)
	baseline := (cpuSeconds(syscall.RUSAGE_SELF) - c0) / time.Since(t0).Seconds()

	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadClients$", "-test.v", "-test.timeout=0")
	cmd.Env = append(os.Environ(), envLoadURL+"="+hs.URL, envLoadViewers+"="+strconv.Itoa(viewers),
		envLoadSeconds+"="+strconv.Itoa(seconds), envLoad+"=")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	joinStart := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var (
		c1, c2         float64
		w1, w2         time.Time
		d1, d2         uint64
		joined         time.Duration
		summary        loadSummary
		peakGoroutines int
		st             Stats
	)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "LOAD READY":
			joined = time.Since(joinStart)
			c1, w1, d1 = cpuSeconds(syscall.RUSAGE_SELF), time.Now(), job.Stats().Dropped
		case strings.HasPrefix(line, "LOAD SUMMARY "):
			c2, w2, d2 = cpuSeconds(syscall.RUSAGE_SELF), time.Now(), job.Stats().Dropped
			st = srv.Stats()
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "LOAD SUMMARY ")), &summary); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "LOAD TICK"):
			peakGoroutines = max(peakGoroutines, runtime.NumGoroutine())
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client process: %v", err)
	}
	if w2.IsZero() || w1.IsZero() {
		t.Fatal("the client process did not report")
	}
	window := w2.Sub(w1).Seconds()
	server := (c2 - c1) / window
	rungs := map[string]int{}
	var queueDrops uint64
	for _, v := range st.Viewers {
		rungs[v.Rung]++
		queueDrops += v.Dropped
	}
	var readerDrops uint64
	for _, s := range st.Streams {
		readerDrops += s.Dropped
	}
	t.Logf("%d viewers joined in %s; steady window %.0f s", summary.Connected, joined.Round(time.Millisecond), window)
	t.Logf("server process CPU: %.2f cores with viewers (%.1f CPU-s in the window), %.2f cores transcoder alone; "+
		"WebRTC per viewer %.2f ms CPU per second (%.3f %% of a core)",
		server, c2-c1, baseline, (server-baseline)/float64(viewers)*1000, (server-baseline)/float64(viewers)*100)
	t.Logf("client process CPU: %.1f CPU-s total", summary.ClientCPUSec)
	t.Logf("transcoder dropped %d frames in the window; stream reader dropped %d packets; viewer queues dropped %d units",
		d2-d1, readerDrops, queueDrops)
	t.Logf("viewers: fps min %.1f median %.1f; audio packets/s median %.1f; lost packets %d; rungs %v; switches %+v; peak goroutines %d",
		summary.FPSMin, summary.FPSMedian, summary.AudioPerSec, summary.LostPackets, rungs, st.Switches, peakGoroutines)
	if summary.Connected != viewers {
		t.Errorf("%d of %d viewers connected", summary.Connected, viewers)
	}
	if d2 != d1 {
		t.Errorf("the transcoder dropped %d frames while serving the viewers", d2-d1)
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
		vs[i] = newViewer(t, viewerOptions{})
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
	deadline := time.Now().Add(30 * time.Second)
	for _, v := range vs {
		for len(v.snapshot()) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	start := make([]int, n)
	startAudio := make([]int64, n)
	for i, v := range vs {
		start[i], startAudio[i] = len(v.snapshot()), v.audioPackets.Load()
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
	for i, v := range vs {
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
