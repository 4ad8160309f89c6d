package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prism-streaming/prism/outputs/webrtc"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue"
	"github.com/prism-streaming/prism/queue/ladderref"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// Exit codes of `prism worker`, read by the node that started it.
const (
	workerInputEnded       = 0 // the input ended: a live source stopped
	workerFailed           = 1 // anything else: counts as a failed attempt
	workerInputUnavailable = 3 // the input could not be opened or decoded
)

// errExit carries a worker exit code out of cmdWorker.
type errExit struct {
	code int
	err  error
}

func (e *errExit) Error() string { return e.err.Error() }
func (e *errExit) Unwrap() error { return e.err }

// cmdWorker is the hidden `prism worker` subcommand: one job's FFmpeg work
// in its own process, so a crash or hang there ends only that job. It reads
// the job spec as one JSON line on stdin, publishes the job's media on NATS,
// prints "running" once media flows, and exits when stdin closes (its node
// died), on SIGTERM, or when the input ends.
func cmdWorker(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	natsURL := fs.String("nats", "", "NATS URL of the node that started this worker")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return &errExit{workerFailed, fmt.Errorf("worker: reading the job spec: %w", err)}
	}
	var spec queue.JobSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return &errExit{workerFailed, fmt.Errorf("worker: job spec: %w", err)}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // ends the worker when its node goes away: stdin closes
		_, _ = io.Copy(io.Discard, in)
		stop()
	}()
	log := slog.Default().With("job", spec.ID, "worker", os.Getpid())

	var connect queue.ConnectOptions
	if err := json.Unmarshal([]byte(os.Getenv("PRISM_NATS_CONNECT")), &connect); err != nil {
		return &errExit{workerFailed, fmt.Errorf("worker: PRISM_NATS_CONNECT: %w", err)}
	}
	connect.Name, connect.Log = "prism-worker-"+spec.ID, log
	nc, err := queue.Connect(*natsURL, connect)
	if err != nil {
		return &errExit{workerFailed, err}
	}
	defer nc.Close()
	l, err := ladderref.Resolve(spec.Ladder, spec.LadderYAML)
	if err != nil {
		return &errExit{workerFailed, err}
	}
	if err := runJob(ctx, nc, spec, l, log, func() { fmt.Fprintln(stdout, "running") }); err != nil {
		return &errExit{inputExitCode(err), err}
	}
	return nil // the input ended, or the node stopped the job
}

// runJob is one job's media work, in a worker process or in-process: the
// transcoder, its media on NATS and its WHIP publishes, until the input
// ends (nil), it fails, or ctx ends (nil). running is called once the
// transcoder runs.
func runJob(ctx context.Context, nc *nats.Conn, spec queue.JobSpec, l *ladder.Ladder, log *slog.Logger, running func()) error {
	job, err := transcode.Start(ctx, transcode.Options{Input: spec.Input, Ladder: l, Realtime: true, Logger: log})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	running()
	pubCtx, stopPublishers := context.WithCancel(ctx)
	var publishers sync.WaitGroup
	for _, target := range spec.Publish {
		publishers.Go(func() { publishWHIP(pubCtx, target, job, log) })
	}
	perr := queue.PublishMedia(ctx, nc, spec.ID, job)
	stopPublishers()
	publishers.Wait()
	jerr := job.Close()
	if ctx.Err() != nil {
		return nil // stopped by the node
	}
	return errors.Join(perr, jerr)
}

// publishWHIP keeps the job published to one WHIP target until ctx ends,
// reconnecting with backoff: a target that is down must not stop the job.
func publishWHIP(ctx context.Context, target queue.PublishTarget, job pipeline.Job, log *slog.Logger) {
	log = log.With("whip", target.URL)
	backoff := 2 * time.Second
	for {
		p := &webrtc.Publisher{URL: target.URL, Token: target.Token, Job: job, Log: log}
		if err := p.Start(ctx); err != nil {
			log.Warn("WHIP publish failed", "error", err, "retry in", backoff)
		} else {
			log.Info("publishing over WHIP")
			select {
			case <-p.Done():
				log.Warn("WHIP publish ended", "error", p.Err(), "retry in", backoff)
			case <-ctx.Done():
			}
			p.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func inputExitCode(err error) int {
	for _, e := range []error{transcode.ErrOpenInput, transcode.ErrNoVideo, transcode.ErrDecode} {
		if errors.Is(err, e) {
			return workerInputUnavailable
		}
	}
	return workerFailed
}
