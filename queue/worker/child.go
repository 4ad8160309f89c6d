package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// runningLine is what a worker prints on stdout once media flows.
const runningLine = "running"

// progressPrefix starts the line on which a worker that is not running yet
// says what it waits for (jobs.ReportProgress).
const progressPrefix = "waiting "

// costPrefix starts the line on which a worker reports its job's real cost
// (pixels per second, jobs.ReportCost) once the transcoder planned it.
const costPrefix = "cost "

// encodingPrefix starts the line on which a worker reports, as JSON, how
// each rung is encoded (jobs.ReportEncoding).
const encodingPrefix = "encoding "

// Child is a worker process's whole life (the hidden `prism worker`
// command): it reads the job spec as one JSON line from stdin, connects to
// natsURL with the options in ConnectEnv, publishes the job's media, prints
// "running" on stdout once media flows, and returns when ctx ends (SIGTERM),
// stdin closes (its node died) or the input ends. Errors are *ExitError
// with the code the process must exit with. cpus is the job's CPU share
// (--cpus, from the node's Shares; 0: none).
func Child(ctx context.Context, natsURL string, cpus float64, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return &ExitError{ExitFailed, fmt.Errorf("worker: reading the job spec: %w", err)}
	}
	var spec jobs.Spec
	if err := json.Unmarshal(line, &spec); err != nil {
		return &ExitError{ExitFailed, fmt.Errorf("worker: job spec: %w", err)}
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	// Ends the worker when its node goes away and stdin closes. The
	// goroutine outlives Child only while the process is exiting anyway.
	go func() {
		_, _ = io.Copy(io.Discard, in)
		stop()
	}()
	log = log.With("job", spec.ID, "worker", os.Getpid())

	var connect bus.ConnectOptions
	if err := json.Unmarshal([]byte(os.Getenv(ConnectEnv)), &connect); err != nil {
		return &ExitError{ExitFailed, fmt.Errorf("worker: %s: %w", ConnectEnv, err)}
	}
	connect.Name, connect.Log = "prism-worker-"+spec.ID, log
	nc, err := bus.Connect(natsURL, connect)
	if err != nil {
		return &ExitError{ExitFailed, err}
	}
	defer nc.Close()
	l, err := ladder.Resolve(spec.Ladder, spec.LadderYAML)
	if err != nil {
		return &ExitError{ExitFailed, err}
	}
	ctx = jobs.WithCostReporter(ctx, func(c float64) { fmt.Fprintf(stdout, "%s%g\n", costPrefix, c) })
	ctx = jobs.WithEncodingReporter(ctx, func(e []jobs.RungEncoding) {
		if b, err := json.Marshal(e); err == nil {
			fmt.Fprintf(stdout, "%s%s\n", encodingPrefix, b)
		}
	})
	ctx = jobs.WithProgressReporter(ctx, func(what string) {
		fmt.Fprintln(stdout, progressPrefix+strings.ReplaceAll(what, "\n", " "))
	})
	if err := runJob(ctx, nc, spec, l, cpus, log, func() { fmt.Fprintln(stdout, runningLine) }); err != nil {
		return &ExitError{exitCode(err), err}
	}
	return nil // the input ended, or the node stopped the job
}
