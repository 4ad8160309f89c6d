package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prism-streaming/prism/queue/worker"
)

// cmdWorker is the hidden `prism worker` command: one job's media work in
// its own process, started by a node's worker.Supervisor.
func cmdWorker(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	natsURL := fs.String("nats", "", "NATS URL of the node that started this worker")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return worker.Child(ctx, *natsURL, os.Stdin, stdout, slog.Default())
}
