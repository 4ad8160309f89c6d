package benchmarks

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/worker"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// TestNodeLoad (make bench-nodeload; skipped unless PRISM_BENCH_NODELOAD=1)
// fills a node's capacity with N concurrent `prism transcode` processes
// (bin/prism), each a lavfi testsrc2 source at 30 fps through a two-rung
// ladder sized so that the N jobs' costs add up to the capacity, once
// without a CPU share (every job plans threads for the whole machine) and
// once with each job's share (--cpus, worker.CPUShare, as a node passes
// it). The jobs run unpaced: a job's speed (media seconds per wall second)
// at or above 1 is a job that keeps real time with the node full.
//
// PRISM_BENCH_NODELOAD_JOBS (2,3,4), _SECONDS of media per job (20),
// _REPS of each run (1, the modes' order alternating), _CAPACITY in pixels/s (jobs.DefaultCapacity) and _OUT (a file for the
// table) size it.
func TestNodeLoad(t *testing.T) {
	if os.Getenv("PRISM_BENCH_NODELOAD") == "" {
		t.Skip("set PRISM_BENCH_NODELOAD=1 (make bench-nodeload) to run the node load benchmark")
	}
	bin, err := filepath.Abs("../bin/prism")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: build it first (make build)", bin)
	}
	cores := runtime.NumCPU()
	capacity := envFloat(t, "PRISM_BENCH_NODELOAD_CAPACITY", jobs.DefaultCapacity())
	seconds := envFloat(t, "PRISM_BENCH_NODELOAD_SECONDS", 20)
	reps := int(envFloat(t, "PRISM_BENCH_NODELOAD_REPS", 1))
	counts := []int{2, 3, 4}
	if v := os.Getenv("PRISM_BENCH_NODELOAD_JOBS"); v != "" {
		counts = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("PRISM_BENCH_NODELOAD_JOBS: %q is not a job count", f)
			}
			counts = append(counts, n)
		}
	}

	var out strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&out, "# Node load: N concurrent `prism transcode` jobs filling the node's capacity, without and with CPU shares\n")
	fmt.Fprintf(&out, "# %d CPUs (%s), capacity %.3g px/s (%s), %gs of media per job, unpaced; load average before: %s\n",
		cores, cpuModel(), capacity, capacitySource(), seconds, strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&out, "# each job: lavfi testsrc2 WxH@30 (no audio) -> rungs WxH and W/2xH/2, x264 veryfast zerolatency; speed = media s / wall s\n")
	fmt.Fprintf(&out, "# --cpus = worker.CPUShare(CPUs, cost, capacity): CPUs x cost / capacity, at least 1; %d run(s) of each, the order alternating\n", reps)
	fmt.Fprintf(&out, "# CPU = the jobs' user+sys / wall (cores); busy = the whole machine's busy cores over the run (others' load included)\n\n")
	fmt.Fprintf(&out, "| jobs | source | cost/job px/s | --cpus | x264 threads | speed per job | min speed | top rung fps (min) | CPU cores | busy cores |\n")
	fmt.Fprintf(&out, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range counts {
		w, h := sourceFor(capacity / float64(n))
		dir := t.TempDir()
		ladderFile := filepath.Join(dir, "ladder.yaml")
		yaml := fmt.Sprintf("name: nodeload\ngop: 1s\nrungs:\n"+
			"  - name: top\n    width: %d\n    height: %d\n    bitrate: 3000k\n"+
			"  - name: half\n    width: %d\n    height: %d\n    bitrate: 1000k\n", w, h, even(w/2), even(h/2))
		if err := os.WriteFile(ladderFile, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := ladder.Load(ladderFile)
		if err != nil {
			t.Fatal(err)
		}
		cost, err := ladder.Cost(l, w, h, 30)
		if err != nil {
			t.Fatal(err)
		}
		share := worker.CPUShare(cores, cost, capacity)
		modes := []float64{0, share}
		for rep := range reps {
			// Alternate which mode runs first, so that a drift in the
			// machine's other load does not favour one.
			if rep > 0 {
				slices.Reverse(modes)
			}
			for _, cpus := range modes {
				r := runLoad(t, bin, n, w, h, ladderFile, seconds, cpus)
				flag := "none"
				if cpus > 0 {
					flag = strconv.FormatFloat(cpus, 'f', -1, 64)
				}
				speeds := make([]string, len(r.speeds))
				for i, s := range r.speeds {
					speeds[i] = fmt.Sprintf("%.2f", s)
				}
				row := fmt.Sprintf("| %d | %dx%d | %.3g | %s | %s | %s | %.2f | %.1f | %.2f | %.2f |\n", n, w, h, cost, flag, r.threads,
					strings.Join(speeds, " "), slices.Min(r.speeds), r.minTopFPS, r.cpu, r.busy)
				out.WriteString(row)
				t.Log(strings.TrimSpace(row))
			}
		}
	}
	fmt.Print(out.String())
	if p := os.Getenv("PRISM_BENCH_NODELOAD_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// loadRun is what one run of N concurrent jobs measured.
type loadRun struct {
	speeds    []float64 // per job
	minTopFPS float64   // the slowest job's top-rung frames per second
	threads   string    // the x264 threads the jobs planned, per rung
	cpu       float64   // the jobs' CPU time / wall time
	busy      float64   // the machine's busy cores over the run
}

var (
	speedRe   = regexp.MustCompile(`transcoded ([0-9.]+)s of media in ([0-9.]+)s \(([0-9.]+)x real time\)`)
	topRe     = regexp.MustCompile(`(?m)^\s+top\s.*?\s(\d+) frames`)
	threadsRe = regexp.MustCompile(`encoder_threads="?\[([0-9 ]+)\]`)
)

// runLoad runs n `prism transcode` jobs at once and waits for them all.
func runLoad(t *testing.T, bin string, n, w, h int, ladderFile string, seconds, cpus float64) loadRun {
	t.Helper()
	type result struct {
		stdout, stderr bytes.Buffer
		cpu            time.Duration
		err            error
	}
	results := make([]*result, n)
	busy0 := busyJiffies(t)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		r := &result{}
		results[i] = r
		args := []string{"transcode", "--input", fmt.Sprintf("lavfi:testsrc2=size=%dx%d:rate=30", w, h), "--ladder", ladderFile,
			"--output-dir", t.TempDir(), "--duration", fmt.Sprintf("%gs", seconds)}
		if cpus > 0 {
			args = append(args, "--cpus", strconv.FormatFloat(cpus, 'f', -1, 64))
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			r.err = cmd.Wait()
			if cmd.ProcessState != nil {
				r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	busy := float64(busyJiffies(t)-busy0) / clockTicks / wall.Seconds()

	run := loadRun{busy: busy, minTopFPS: math.Inf(1)}
	var cpu time.Duration
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("job %d: %v\n%s", i, r.err, r.stderr.String())
		}
		m := speedRe.FindStringSubmatch(r.stdout.String())
		top := topRe.FindStringSubmatch(r.stdout.String())
		if m == nil || top == nil {
			t.Fatalf("job %d: no summary in\n%s", i, r.stdout.String())
		}
		speed, _ := strconv.ParseFloat(m[3], 64)
		uptime, _ := strconv.ParseFloat(m[2], 64)
		frames, _ := strconv.ParseFloat(top[1], 64)
		run.speeds = append(run.speeds, speed)
		run.minTopFPS = min(run.minTopFPS, frames/uptime)
		if th := threadsRe.FindStringSubmatch(r.stderr.String()); th != nil {
			run.threads = strings.ReplaceAll(th[1], " ", "+")
		}
		cpu += r.cpu
	}
	run.cpu = cpu.Seconds() / wall.Seconds()
	return run
}

// sourceFor is the 16:9 source (even sides) whose two rungs, itself and
// half its size, cost about cost pixels per second at 30 fps.
func sourceFor(cost float64) (w, h int) {
	area := cost / 30 / 1.25
	h = even(int(math.Round(math.Sqrt(area * 9 / 16))))
	return even(int(math.Round(float64(h) * 16 / 9))), h
}

func even(v int) int { return v &^ 1 }

// clockTicks is USER_HZ, the unit of /proc/stat (100 on Linux).
const clockTicks = 100

// busyJiffies is the machine's non-idle CPU time so far (/proc/stat).
func busyJiffies(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var busy int64
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func capacitySource() string {
	if os.Getenv("PRISM_BENCH_NODELOAD_CAPACITY") != "" {
		return "PRISM_BENCH_NODELOAD_CAPACITY"
	}
	return "jobs.DefaultCapacity: 6e7 px/s per CPU"
}

func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s: %q is not a positive number", name, v)
	}
	return f
}
