package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prism-streaming/prism/internal/redact"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
)

// ConnectEnv is the environment variable that carries a worker's NATS
// connection options (bus.ConnectOptions as JSON): credentials travel in
// the environment, not on the command line.
const ConnectEnv = "PRISM_NATS_CONNECT"

// stopGrace is how long a worker may take to stop after SIGTERM before it
// is killed.
const stopGrace = 5 * time.Second

// Supervisor runs each job in a child process (Exe with the arguments
// "worker --nats NATSURL [--cpus SHARE]") that publishes the media on NATS. It implements
// jobs.Runner.
type Supervisor struct {
	Exe     string // the prism binary
	NATSURL string
	Connect bus.ConnectOptions // for the worker; Log and Name are its own
	// Credentials, if set, gives each worker process its own connection
	// options instead of Connect (the embedded server's per-stream token,
	// bus.Embedded.IssueWorkerToken); revoke is called when the worker
	// exits. With an external cluster workers use Connect: per-worker
	// users are for its operator to configure there.
	Credentials func(job string) (opts bus.ConnectOptions, revoke func(), err error)
	Retry       jobs.RetryPolicy // pacing of a live input's restarts
	// Shares gives each worker its CPU share, passed as --cpus; the zero
	// value passes none (the worker plans for the whole machine).
	Shares Shares
	Log    *slog.Logger

	mu   sync.Mutex
	pids map[string]int // job -> worker process, for the API and operators
}

var _ jobs.Runner = (*Supervisor)(nil)

// Run implements jobs.Runner: worker processes, one after another while
// spec.Restart keeps a live input up, until ctx ends or one ends the job.
func (s *Supervisor) Run(ctx context.Context, spec jobs.Spec, running func()) error {
	return runRestarting(ctx, spec, s.Retry, s.log(), running, func(running func()) (int, error) {
		return s.runOnce(ctx, spec, running)
	})
}

func (s *Supervisor) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// runOnce starts one worker process and waits for it. The process is
// stopped with SIGTERM (then SIGKILL) when ctx ends, and dies with this
// process: the kernel kills it (Pdeathsig) and it also exits when its stdin,
// held by this process, closes. A start that fails leaves no PID recorded
// and no pipe open.
func (s *Supervisor) runOnce(ctx context.Context, spec jobs.Spec, running func()) (int, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return ExitFailed, err
	}
	opts := s.Connect
	if s.Credentials != nil {
		var revoke func()
		if opts, revoke, err = s.Credentials(spec.ID); err != nil {
			return ExitFailed, fmt.Errorf("worker credentials: %w", err)
		}
		defer revoke()
	}
	connect, err := json.Marshal(opts)
	if err != nil {
		return ExitFailed, err
	}
	args := []string{"worker", "--nats", s.NATSURL}
	if cpus := s.Shares.of(ctx); cpus > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(cpus, 'f', -1, 64))
	}
	cmd := exec.Command(s.Exe, args...)
	cmd.Env = append(workerEnv(os.Environ()), ConnectEnv+"="+string(connect))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return ExitFailed, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = stdin.Close()
		return ExitFailed, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		_ = stdin.Close()
		_ = stdout.Close()
		return ExitFailed, err
	}
	// Start closes every pipe it made when it fails.
	if err := cmd.Start(); err != nil {
		return ExitFailed, fmt.Errorf("starting worker: %w", err)
	}
	pid := cmd.Process.Pid
	s.setPID(spec.ID, pid)
	defer s.setPID(spec.ID, 0)
	log := s.log().With("job", spec.ID, "worker", pid)
	_, _ = stdin.Write(append(specJSON, '\n'))

	tail := &lineTail{max: 8}
	var readers sync.WaitGroup
	readers.Go(func() { // ends when the worker's stdout closes
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if line == runningLine {
				running()
			} else if v, ok := strings.CutPrefix(line, costPrefix); ok {
				if c, err := strconv.ParseFloat(v, 64); err == nil {
					jobs.ReportCost(ctx, c)
				}
			} else if v, ok := strings.CutPrefix(line, encodingPrefix); ok {
				var e []jobs.RungEncoding
				if json.Unmarshal([]byte(v), &e) == nil {
					jobs.ReportEncoding(ctx, e)
				}
			} else if v, ok := strings.CutPrefix(line, progressPrefix); ok {
				jobs.ReportProgress(ctx, redact.Text(v))
			}
		}
	})
	readers.Go(func() { // ends when the worker's stderr closes
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			tail.add(sc.Text())
			relog(log, sc.Bytes())
		}
	})
	exited := make(chan struct{})
	var stopper sync.WaitGroup
	stopper.Go(func() { // ends when the worker exits
		select {
		case <-exited:
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(stopGrace):
				log.Warn("worker ignored SIGTERM, killing it")
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	readers.Wait() // pipes close when the worker exits
	werr := cmd.Wait()
	close(exited)
	stopper.Wait()
	_ = stdin.Close()
	var ee *exec.ExitError
	switch {
	case werr == nil:
		return ExitInputEnded, nil
	case errors.As(werr, &ee) && ee.Exited():
		return ee.ExitCode(), fmt.Errorf("worker exited with code %d: %s", ee.ExitCode(), tail.reason())
	default:
		return ExitFailed, fmt.Errorf("worker crashed (%w): %s", werr, tail.reason())
	}
}

// workerEnvNames and workerEnvPrefixes are what a worker inherits from the
// node's environment: what FFmpeg, the GPU libraries and TLS need, and
// Prism's own settings. The rest (a cloud key, the node's NATS
// credentials) stays with the node.
var (
	workerEnvNames = map[string]bool{"PATH": true, "HOME": true, "TMPDIR": true, "LANG": true, "TZ": true,
		"LD_LIBRARY_PATH": true, "SSL_CERT_FILE": true, "SSL_CERT_DIR": true}
	workerEnvPrefixes = []string{"LC_", "PRISM_", "CUDA_", "NVIDIA_"}
)

// workerEnv keeps the entries of env ("NAME=value") a worker needs, except
// ConnectEnv, which the supervisor sets itself.
func workerEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name == ConnectEnv {
			continue
		}
		keep := workerEnvNames[name]
		for _, p := range workerEnvPrefixes {
			keep = keep || strings.HasPrefix(name, p)
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func (s *Supervisor) setPID(job string, pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pids == nil {
		s.pids = map[string]int{}
	}
	if pid == 0 {
		delete(s.pids, job)
	} else {
		s.pids[job] = pid
	}
}

// PID returns the worker process of a job running here, or 0.
func (s *Supervisor) PID(job string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pids[job]
}

// relog re-emits one line of a worker's JSON log under the node's logger,
// at its own level; other lines (a crash trace) are logged as errors.
func relog(log *slog.Logger, line []byte) {
	var rec map[string]any
	if json.Unmarshal(line, &rec) != nil {
		log.Error("worker: " + redact.Text(string(line)))
		return
	}
	var level slog.Level
	if s, ok := rec["level"].(string); ok {
		_ = level.UnmarshalText([]byte(s))
	}
	msg, _ := rec["msg"].(string)
	attrs := make([]any, 0, 2*len(rec))
	for k, v := range rec {
		switch k {
		case "time", "level", "msg", "job":
		default:
			if s, ok := v.(string); ok {
				v = redact.Text(s) // input URLs and FFmpeg's messages quoting them
			}
			attrs = append(attrs, k, v)
		}
	}
	msg = redact.Text(msg)
	log.Log(context.Background(), level, msg, attrs...)
}

// lineTail keeps a worker's last stderr lines: the reason a job failed.
type lineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *lineTail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > t.max {
		t.lines = t.lines[1:]
	}
}

// reason is the worker's own error line ("prism: ..."), else its last
// error record, else its last line.
func (t *lineTail) reason() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(t.lines[i], "prism: ") {
			return strings.TrimPrefix(t.lines[i], "prism: ")
		}
	}
	for i := len(t.lines) - 1; i >= 0; i-- {
		var rec struct{ Level, Msg, Error string }
		if json.Unmarshal([]byte(t.lines[i]), &rec) == nil && rec.Level == "ERROR" {
			return strings.TrimSpace(rec.Msg + " " + rec.Error)
		}
	}
	if len(t.lines) > 0 {
		return t.lines[len(t.lines)-1]
	}
	return "no output"
}
