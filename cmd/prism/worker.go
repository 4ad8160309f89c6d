package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prism-streaming/prism/queue/worker"
	"github.com/prism-streaming/prism/transcode"
)

// cmdWorker is the hidden `prism worker` command: one job's media work in
// its own process, started by a node's worker.Supervisor.
func cmdWorker(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	natsURL := fs.String("nats", "", "NATS URL of the node that started this worker")
	cpus := cpusFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	transcode.LimitProcs(*cpus) // this process runs this one job
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return worker.Child(ctx, *natsURL, *cpus, os.Stdin, stdout, slog.Default())
}

// cpusFlag is --cpus, the job's CPU share in cores, for `prism worker`
// (set by the node) and `prism transcode` (by hand).
func cpusFlag(fs *flag.FlagSet) *float64 {
	return fs.Float64("cpus", 0, "CPU share in cores the job's encoder, decoder and filter threads and GOMAXPROCS are planned for, e.g. 1.5 (0: all of this machine's)")
}
