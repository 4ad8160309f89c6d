// Package benchmarks measures Prism's ladder throughput against the FFmpeg
// CLI on the same input and ladder, in the same run, and formats the result.
package benchmarks

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// Rung is one rung's result.
type Rung struct {
	Name   string  `json:"name"`
	Width  int     `json:"width"`
	Height int     `json:"height"`
	Frames uint64  `json:"frames"`
	FPS    float64 `json:"fps"`
	Kbps   float64 `json:"kbps"`
}

// Run is one tool's result.
type Run struct {
	Tool    string  `json:"tool"`
	Wall    float64 `json:"wall_s"`
	CPU     float64 `json:"cpu_s"`
	PeakRSS int64   `json:"peak_rss_bytes"`
	Media   float64 `json:"media_s"`
	FPS     float64 `json:"fps"`   // source frames per wall second
	Speed   float64 `json:"speed"` // real-time factor
	Rungs   []Rung  `json:"rungs,omitempty"`
	// PixelRate is the encoded pixels per second over all rungs: what this
	// machine can offer as node.capacity for this kind of ladder.
	PixelRate float64 `json:"pixel_rate,omitempty"`
}

// Report is the outcome of one `prism bench`.
type Report struct {
	Input         string  `json:"input"`
	Ladder        string  `json:"ladder"`
	CPUs          int     `json:"cpus"`
	Prism         Run     `json:"prism"`
	FFmpeg        *Run    `json:"ffmpeg,omitempty"`
	FFmpegCommand string  `json:"ffmpeg_command,omitempty"`
	Ratio         float64 `json:"ratio,omitempty"` // Prism fps / FFmpeg fps
}

// Usage is CPU time and peak memory of a process.
type Usage struct {
	CPU    float64 // user + system seconds
	MaxRSS int64   // bytes
}

// SelfUsage returns this process's usage so far.
func SelfUsage() Usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return fromRusage(&ru)
}

// WatchPeakRSS samples a running child's VmHWM (its peak resident set
// since exec) until stop is called, and returns the peak in bytes. The
// child's own ru_maxrss cannot be used: Linux carries the parent's RSS at
// fork into it, so it would report at least this process's size.
func WatchPeakRSS(pid int) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() { // ends when stop is called
		var peak int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := vmHWM(pid); v > peak {
				peak = v
			}
			select {
			case <-done:
				result <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-result
	}
}

func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb); err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// ProcessUsage returns a finished child's usage (CPU only is meaningful;
// see WatchPeakRSS for memory).
func ProcessUsage(ps *os.ProcessState) Usage {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return fromRusage(ru)
	}
	return Usage{CPU: (ps.UserTime() + ps.SystemTime()).Seconds()}
}

func fromRusage(ru *syscall.Rusage) Usage {
	tv := func(t syscall.Timeval) float64 { return time.Duration(t.Nano()).Seconds() }
	return Usage{CPU: tv(ru.Utime) + tv(ru.Stime), MaxRSS: ru.Maxrss * 1024}
}

// Print writes the human-readable report.
func Print(w io.Writer, r *Report) {
	fmt.Fprintf(w, "input %s, ladder %s, %d CPUs\n", r.Input, r.Ladder, r.CPUs)
	row := func(run *Run) {
		fmt.Fprintf(w, "%-7s %7.1f fps  %5.2fx real time  wall %6.2fs  cpu %6.2fs  peak RSS %4d MB\n",
			run.Tool, run.FPS, run.Speed, run.Wall, run.CPU, run.PeakRSS>>20)
	}
	row(&r.Prism)
	for _, g := range r.Prism.Rungs {
		fmt.Fprintf(w, "  %-6s %4dx%-4d %6d frames  %7.1f fps  %6.0f kbit/s\n", g.Name, g.Width, g.Height, g.Frames, g.FPS, g.Kbps)
	}
	fmt.Fprintf(w, "  encoded %.3g pixels/s: about what this machine offers as node.capacity for such ladders\n", r.Prism.PixelRate)
	if r.FFmpeg != nil {
		row(r.FFmpeg)
		fmt.Fprintf(w, "ratio   %.2fx (Prism fps / FFmpeg CLI fps; CPU seconds %.2f vs %.2f)\n",
			r.Ratio, r.Prism.CPU, r.FFmpeg.CPU)
	}
}

// Quote renders a command line for copy and paste.
func Quote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " ;[]=:'\"$*?()") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}
