package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prism-streaming/prism/queue"
	"github.com/prism-streaming/prism/queue/ladderref"
)

// Pacing of a Restart job whose input ended or is unreachable.
const (
	inputRetryMin = 1 * time.Second
	inputRetryMax = 30 * time.Second
	// An input that ran this long resets the pacing: it was up, then dropped.
	inputStable = 10 * time.Second
)

// workerRunner runs each job in a child process (`prism worker`) that
// publishes the media on NATS, so a crash or hang in FFmpeg ends only that
// job. It implements queue.Runner.
type workerRunner struct {
	exe     string // this binary
	natsURL string
	connect string // queue.ConnectOptions as JSON, for the worker
	log     *slog.Logger

	mu   sync.Mutex
	pids map[string]int // job -> worker process, for the API and operators
}

func (w *workerRunner) Run(ctx context.Context, spec queue.JobSpec, running func()) error {
	return runRestarting(ctx, spec, w.log, running, func(running func()) (int, error) {
		return w.runOnce(ctx, spec, running)
	})
}

// runRestarting runs attempts of a job until one ends it: a crash or other
// failure is returned for the node to count; an input that ended or cannot
// be reached ends the job, unless spec.Restart keeps a live stream up by
// trying again (1 s, doubling to 30 s, back to 1 s after a stable run).
// running is passed on to be called once, however many attempts run.
func runRestarting(ctx context.Context, spec queue.JobSpec, log *slog.Logger, running func(),
	attempt func(running func()) (code int, err error)) error {
	var once sync.Once
	report := func() { once.Do(running) }
	backoff := inputRetryMin
	for {
		started := time.Now()
		code, err := attempt(report)
		if ctx.Err() != nil {
			return nil // stopped, lost ownership or draining
		}
		if code != workerInputEnded && code != workerInputUnavailable {
			return err
		}
		if !spec.Restart {
			if code == workerInputEnded {
				return nil
			}
			return err
		}
		// A live stream: its source may come back.
		if time.Since(started) > inputStable {
			backoff = inputRetryMin
		}
		log.Warn("input ended or unavailable, starting again", "job", spec.ID, "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, inputRetryMax)
	}
}

// runOnce starts one worker process and waits for it. The process is
// stopped with SIGTERM (then SIGKILL) when ctx ends, and dies with this
// process: the kernel kills it (Pdeathsig) and it also exits when its stdin,
// held by this process, closes.
func (w *workerRunner) runOnce(ctx context.Context, spec queue.JobSpec, running func()) (int, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return workerFailed, err
	}
	cmd := exec.Command(w.exe, "worker", "--nats", w.natsURL)
	// Credentials travel in the environment, not on the command line.
	cmd.Env = append(os.Environ(), "PRISM_NATS_CONNECT="+w.connect)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return workerFailed, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return workerFailed, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return workerFailed, err
	}
	if err := cmd.Start(); err != nil {
		return workerFailed, fmt.Errorf("starting worker: %w", err)
	}
	pid := cmd.Process.Pid
	w.setPID(spec.ID, pid)
	defer w.setPID(spec.ID, 0)
	log := w.log.With("job", spec.ID, "worker", pid)
	_, _ = stdin.Write(append(specJSON, '\n'))

	tail := &lineTail{max: 8}
	var readers sync.WaitGroup
	readers.Go(func() { // ends when the worker's stdout closes
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "running" {
				running()
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
			case <-time.After(5 * time.Second):
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
		return workerInputEnded, nil
	case errors.As(werr, &ee) && ee.Exited():
		return ee.ExitCode(), fmt.Errorf("worker exited with code %d: %s", ee.ExitCode(), tail.reason())
	default:
		return workerFailed, fmt.Errorf("worker crashed (%v): %s", werr, tail.reason())
	}
}

func (w *workerRunner) setPID(job string, pid int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pids == nil {
		w.pids = map[string]int{}
	}
	if pid == 0 {
		delete(w.pids, job)
	} else {
		w.pids[job] = pid
	}
}

// PID returns the worker process of a job running here, or 0.
func (w *workerRunner) PID(job string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pids[job]
}

// relog re-emits one line of a worker's JSON log under the node's logger,
// at its own level; other lines (a crash trace) are logged as errors.
func relog(log *slog.Logger, line []byte) {
	var rec map[string]any
	if json.Unmarshal(line, &rec) != nil {
		log.Error("worker: " + string(line))
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
			attrs = append(attrs, k, v)
		}
	}
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

// reason is the worker's own error line ("prism: ..."), else its last line.
func (t *lineTail) reason() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(t.lines[i], "prism: ") {
			return strings.TrimPrefix(t.lines[i], "prism: ")
		}
	}
	for i := len(t.lines) - 1; i >= 0; i-- { // else its last error record
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

// inProcessRunner runs jobs inside this process (node.workers: false):
// fewer processes, no crash isolation.
type inProcessRunner struct {
	nc  *nats.Conn
	log *slog.Logger
}

func (r *inProcessRunner) Run(ctx context.Context, spec queue.JobSpec, running func()) error {
	l, err := ladderref.Resolve(spec.Ladder, spec.LadderYAML)
	if err != nil {
		return err
	}
	log := r.log.With("job", spec.ID)
	return runRestarting(ctx, spec, log, running, func(running func()) (int, error) {
		err := runJob(ctx, r.nc, spec, l, log, running)
		if err == nil {
			return workerInputEnded, nil
		}
		return inputExitCode(err), err
	})
}
