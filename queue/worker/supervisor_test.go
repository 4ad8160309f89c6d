package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/transcode"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

func TestFailedStartLeavesNoPIDAndNoPipes(t *testing.T) {
	testutil.LeakCheck(t)
	s := &Supervisor{Exe: filepath.Join(t.TempDir(), "no-such-prism"), Log: testutil.Logger(t)}
	before := openFDs(t)
	for range 20 { // a leak of three pipes per start would show
		code, err := s.runOnce(context.Background(), jobs.Spec{ID: "cam"}, func() { t.Error("running reported") })
		if code != ExitFailed || err == nil || !strings.Contains(err.Error(), "starting worker") {
			t.Fatalf("runOnce = %d, %v; want ExitFailed, a start error", code, err)
		}
		if pid := s.PID("cam"); pid != 0 {
			t.Fatalf("PID after a failed start = %d", pid)
		}
	}
	if after := openFDs(t); after > before {
		t.Fatalf("open files %d before, %d after 20 failed starts", before, after)
	}
	// Through Run a failed start is a failure the node counts, not an
	// input to retry, even for a live job.
	err := s.Run(context.Background(), jobs.Spec{ID: "cam", Restart: true}, func() {})
	if err == nil || !strings.Contains(err.Error(), "starting worker") {
		t.Fatalf("Run = %v", err)
	}
}

// fakeWorker writes a shell script standing in for the prism binary: it
// reads the spec line, then runs body.
func fakeWorker(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prism")
	script := "#!/bin/sh\nread spec\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSupervisorReadsRunningReasonAndExitCode(t *testing.T) {
	testutil.LeakCheck(t)
	exe := fakeWorker(t, `echo running
echo '{"level":"INFO","msg":"hello"}' >&2
echo 'prism: cannot open input: no such file' >&2
exit 3`)
	s := &Supervisor{Exe: exe, Log: testutil.Logger(t)}
	var running atomic.Int32
	code, err := s.runOnce(context.Background(), jobs.Spec{ID: "cam"}, func() { running.Add(1) })
	if code != ExitInputUnavailable {
		t.Fatalf("code %d, want %d", code, ExitInputUnavailable)
	}
	if err == nil || !strings.Contains(err.Error(), "cannot open input: no such file") {
		t.Fatalf("error %v, want the worker's own reason", err)
	}
	if running.Load() != 1 {
		t.Fatalf("running reported %d times", running.Load())
	}
	if s.PID("cam") != 0 {
		t.Fatal("PID still recorded after the worker exited")
	}
}

// TestSupervisorPassesProgressOn: what a starting worker says it waits for
// reaches the node (jobs.ReportProgress), for the start timeout's reason.
func TestSupervisorPassesProgressOn(t *testing.T) {
	testutil.LeakCheck(t)
	exe := fakeWorker(t, `echo 'waiting input open, no media yet: waiting for the first frames of 720p'`)
	s := &Supervisor{Exe: exe, Log: testutil.Logger(t)}
	var got []string
	ctx := jobs.WithProgressReporter(context.Background(), func(what string) { got = append(got, what) })
	if code, err := s.runOnce(ctx, jobs.Spec{ID: "cam"}, func() { t.Error("running reported") }); code != ExitInputEnded || err != nil {
		t.Fatalf("runOnce = %d, %v", code, err)
	}
	if fmt.Sprint(got) != "[input open, no media yet: waiting for the first frames of 720p]" {
		t.Fatalf("progress %q", got)
	}
}

func TestSupervisorStopsItsWorkerOnCancel(t *testing.T) {
	testutil.LeakCheck(t)
	// The worker runs until signalled; cancelling the job stops it with
	// SIGTERM, and a stopped job is not an error.
	exe := fakeWorker(t, "echo running\nexec sleep 60")
	s := &Supervisor{Exe: exe, Log: testutil.Logger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, jobs.Spec{ID: "cam"}, func() { close(started) })
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("worker never reported running")
	}
	if s.PID("cam") == 0 {
		t.Fatal("no PID while running")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(stopGrace + 5*time.Second):
		t.Fatal("worker not stopped")
	}
}

func TestRestartPolicy(t *testing.T) {
	fast := jobs.RetryPolicy{First: time.Millisecond, Max: 4 * time.Millisecond, StableAfter: time.Hour}
	log := testutil.Logger(t)
	attempts := func(codes ...int) (func(func()) (int, error), *int) {
		n := 0
		return func(running func()) (int, error) {
			running()
			c := codes[min(n, len(codes)-1)]
			n++
			if c == ExitInputEnded {
				return c, nil
			}
			return c, errors.New("attempt failed")
		}, &n
	}
	cases := []struct {
		name     string
		restart  bool
		codes    []int
		wantRuns int
		wantErr  bool
	}{
		{"input ends, not live: done", false, []int{ExitInputEnded}, 1, false},
		{"input unavailable, not live: fails", false, []int{ExitInputUnavailable}, 1, true},
		{"crash: counted by the node", true, []int{ExitFailed}, 1, true},
		{"live input comes back, then crashes", true, []int{ExitInputEnded, ExitInputUnavailable, ExitInputEnded, ExitFailed}, 4, true},
	}
	for _, c := range cases {
		attempt, runs := attempts(c.codes...)
		var reported int
		err := runRestarting(context.Background(), jobs.Spec{ID: "j", Restart: c.restart}, fast, log, func() { reported++ }, attempt)
		if *runs != c.wantRuns || (err != nil) != c.wantErr || reported != 1 {
			t.Errorf("%s: %d runs, err %v, running reported %d times; want %d runs, error %v, once", c.name, *runs, err, reported, c.wantRuns, c.wantErr)
		}
	}
	// A cancelled job ends quietly, even while waiting to restart.
	ctx, cancel := context.WithCancel(context.Background())
	slow := jobs.RetryPolicy{First: time.Hour}
	done := make(chan error, 1)
	go func() {
		done <- runRestarting(ctx, jobs.Spec{ID: "j", Restart: true}, slow, log, func() {}, func(func()) (int, error) { return ExitInputEnded, nil })
	}()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestRestartGivesUpOnInputThatNeverRan: a live job whose input never came
// up fails after maxNeverRan attempts, with the last attempt's reason; one
// whose input ran once keeps restarting however often it fails after.
func TestRestartGivesUpOnInputThatNeverRan(t *testing.T) {
	fast := jobs.RetryPolicy{First: time.Millisecond, Max: 4 * time.Millisecond, StableAfter: time.Hour}
	log := testutil.Logger(t)
	live := jobs.Spec{ID: "cam", Restart: true}
	errRefused := errors.New("connection refused")

	runs := 0
	err := runRestarting(context.Background(), live, fast, log, func() { t.Error("running reported") }, func(func()) (int, error) {
		runs++
		return ExitInputUnavailable, fmt.Errorf("attempt %d: %w", runs, errRefused)
	})
	if runs != maxNeverRan || !errors.Is(err, errRefused) || !strings.Contains(err.Error(), fmt.Sprintf("attempt %d", maxNeverRan)) {
		t.Fatalf("%d runs, err %v; want %d runs and the last attempt's error", runs, err, maxNeverRan)
	}

	// An input that ends cleanly every time without running fails too.
	runs = 0
	err = runRestarting(context.Background(), live, fast, log, func() {}, func(func()) (int, error) {
		runs++
		return ExitInputEnded, nil
	})
	if runs != maxNeverRan || err == nil || !strings.Contains(err.Error(), "before it ran") {
		t.Fatalf("ends without running: %d runs, err %v", runs, err)
	}

	// Once it ran, failures to come back are retried as before, far past
	// maxNeverRan, until something else ends the job.
	runs = 0
	reported := 0
	errCrash := errors.New("crash")
	err = runRestarting(context.Background(), live, fast, log, func() { reported++ }, func(running func()) (int, error) {
		runs++
		switch {
		case runs == 1:
			running()
			return ExitInputEnded, nil
		case runs <= 1+3*maxNeverRan:
			return ExitInputUnavailable, errRefused
		default:
			return ExitFailed, errCrash
		}
	})
	if runs != 2+3*maxNeverRan || !errors.Is(err, errCrash) || reported != 1 {
		t.Fatalf("ran once: %d runs, err %v, running reported %d times; want %d runs ending with the crash", runs, err, reported, 2+3*maxNeverRan)
	}
}

func TestRetryPolicyDelays(t *testing.T) {
	p := jobs.RetryPolicy{}.OrDefault()
	var got []time.Duration
	for f := 1; f <= 7; f++ {
		got = append(got, p.Delay(f))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want 1s doubling to 30s", got)
		}
	}
	if !p.Stable(10*time.Second) || p.Stable(9*time.Second) {
		t.Fatal("an attempt is stable after 10 s")
	}
}

func TestLineTailReason(t *testing.T) {
	cases := map[string][]string{
		"cannot open input": {`{"level":"INFO","msg":"x"}`, "prism: cannot open input", `{"level":"INFO","msg":"y"}`},
		"decode failed bad": {`{"level":"ERROR","msg":"decode failed","error":"bad"}`, `{"level":"INFO","msg":"y"}`},
		"panic: boom":       {"goroutine 1", "panic: boom"},
		"no output":         nil,
	}
	for want, lines := range cases {
		tail := &lineTail{max: 8}
		for _, l := range lines {
			tail.add(l)
		}
		if got := tail.reason(); got != want {
			t.Errorf("reason of %q = %q, want %q", lines, got, want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	if exitCode(nil) != ExitInputEnded || exitCode(errors.New("x")) != ExitFailed {
		t.Fatal("nil ends the input, anything else fails")
	}
	for _, code := range []int{ExitInputEnded, ExitInputUnavailable} {
		if !inputGone(code) {
			t.Fatalf("code %d is the input going away", code)
		}
	}
	if exitCode(fmt.Errorf("attempt: %w", transcode.ErrOpenInput)) != ExitInputUnavailable {
		t.Fatal("an input that cannot be opened is unavailable")
	}
	if inputGone(ExitFailed) {
		t.Fatal("a failure is not the input going away")
	}
}

func TestWorkerGetsMinimalEnvironmentAndItsOwnCredentials(t *testing.T) {
	testutil.LeakCheck(t)
	t.Setenv("SECRET_FOR_TEST", "do-not-pass")
	t.Setenv("PRISM_LOG", "debug")
	t.Setenv("LC_ALL", "C")
	t.Setenv(ConnectEnv, `{"Token":"node-token"}`) // the node's own, if it had one
	envFile := filepath.Join(t.TempDir(), "env")
	exe := fakeWorker(t, "env > "+envFile)
	var issued, revoked []string
	s := &Supervisor{Exe: exe, Log: testutil.Logger(t), Connect: bus.ConnectOptions{Token: "node-token"},
		Credentials: func(job string) (bus.ConnectOptions, func(), error) {
			issued = append(issued, job)
			return bus.ConnectOptions{Token: "worker-token-" + job}, func() { revoked = append(revoked, job) }, nil
		}}
	if code, err := s.runOnce(context.Background(), jobs.Spec{ID: "cam"}, func() {}); code != ExitInputEnded || err != nil {
		t.Fatalf("runOnce = %d, %v", code, err)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		env[k] = v
	}
	if _, ok := env["SECRET_FOR_TEST"]; ok {
		t.Error("SECRET_FOR_TEST reached the worker")
	}
	for k, want := range map[string]string{"PATH": os.Getenv("PATH"), "PRISM_LOG": "debug", "LC_ALL": "C"} {
		if env[k] != want {
			t.Errorf("worker %s = %q, want %q", k, env[k], want)
		}
	}
	if got := env[ConnectEnv]; !strings.Contains(got, `"Token":"worker-token-cam"`) || strings.Contains(got, "node-token") {
		t.Errorf("worker %s = %s, want the worker's own token only", ConnectEnv, got)
	}
	if fmt.Sprint(issued) != "[cam]" || fmt.Sprint(revoked) != "[cam]" {
		t.Errorf("credentials issued %v, revoked %v; want cam once each", issued, revoked)
	}

	// Without credentials the worker does not start.
	s.Credentials = func(string) (bus.ConnectOptions, func(), error) {
		return bus.ConnectOptions{}, nil, errors.New("no tokens")
	}
	if code, err := s.runOnce(context.Background(), jobs.Spec{ID: "cam"}, func() {}); code != ExitFailed || err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Fatalf("runOnce without credentials = %d, %v", code, err)
	}
}
