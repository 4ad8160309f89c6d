package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/outputs/webrtc"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/relay"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// runJob is one job's media work, in a worker process or in-process: the
// transcoder, its media on NATS and its WHIP publishes, until the input
// ends (nil), it fails, or ctx ends (nil). running is called once media
// flows: every video rung encoded its first IDR and every audio track its
// first packet (an input that opens and delivers nothing stays starting
// until the node's start timeout; jobs.ReportProgress says what it waits
// for). cpus is the job's CPU share (transcode.Options.CPUs; 0: none).
func runJob(ctx context.Context, nc *nats.Conn, spec jobs.Spec, l *ladder.Ladder, cpus float64, log *slog.Logger, running func()) error {
	opts := transcode.Options{Input: spec.Input, Ladder: l, Realtime: spec.Paced(), CPUs: cpus, Logger: log}
	jobs.ReportProgress(ctx, "opening the input")
	if stream, ok := ingest.StreamOfInput(spec.Input); ok {
		source, err := followSource(ctx, nc, stream, spec.Ingest, log)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer source.Close()
		opts.Source = source
	}
	src, err := transcode.Start(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	jobs.ReportCost(ctx, sourceCost(src.Tracks()))
	jobs.ReportEncoding(ctx, encodingOf(src.Tracks()))
	pubCtx, stopPublishers := context.WithCancel(ctx)
	var publishers sync.WaitGroup
	for _, target := range spec.Publish {
		publishers.Go(func() { publishWHIP(pubCtx, target, src, log) })
	}
	// Publishing starts before the first packet, so that the packets that
	// make the job running are on NATS by the time it says so.
	var perr error
	relayed := make(chan struct{})
	publishers.Go(func() { // ends with src or ctx
		defer close(relayed)
		perr = relay.Publish(ctx, nc, spec.ID, src)
	})
	if awaitMedia(ctx, src, relayed) {
		running()
	}
	<-relayed
	stopPublishers()
	publishers.Wait()
	jerr := src.Close()
	if ctx.Err() != nil {
		return nil // stopped by the node
	}
	return errors.Join(perr, jerr)
}

// awaitMedia waits for src to start (Started), reporting meanwhile, when
// it changes, which tracks have published nothing yet. It is false when src
// ended, the relay publisher returned or ctx ended first.
func awaitMedia(ctx context.Context, src *transcode.Transcoder, relayed <-chan struct{}) bool {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		if w := strings.Join(src.Waiting(), ", "); w != last && w != "" {
			jobs.ReportProgress(ctx, "input open, no media yet: waiting for the first frames of "+w)
			last = w
		}
		select {
		case <-src.Started():
			return true
		case <-src.Done():
			return false
		case <-relayed:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// encodingOf is how the video rungs are encoded, for the job's record.
func encodingOf(tracks []pipeline.Track) []jobs.RungEncoding {
	var out []jobs.RungEncoding
	for _, t := range tracks {
		if t.Kind == pipeline.KindVideo {
			out = append(out, jobs.RungEncoding{Rung: t.Name, Encoder: t.Encoder, Device: t.EncoderDevice, Scaler: t.Scaler, Why: t.EncoderWhy})
		}
	}
	return out
}

// sourceCost is the encoding load of the rungs planned for the actual
// source, in pixels per second.
func sourceCost(tracks []pipeline.Track) float64 {
	var c float64
	for _, t := range tracks {
		if t.Kind == pipeline.KindVideo {
			c += float64(t.Width) * float64(t.Height) * t.FPS
		}
	}
	return c
}

// sourceWait is how long a pushed stream's worker waits for the source on
// NATS: the ingest node publishes it as the job is submitted.
const sourceWait = 15 * time.Second

// followSource follows a pushed stream's source, waiting for it to appear.
// Across a publisher reconnect within the grace period the same stream
// continues (relay.FollowSource).
func followSource(ctx context.Context, nc *nats.Conn, stream string, is *jobs.IngestSpec, log *slog.Logger) (*relay.Stream, error) {
	grace := 10 * time.Second
	if is != nil {
		grace = is.Grace
	}
	deadline := time.Now().Add(sourceWait)
	for {
		s, err := relay.FollowSource(ctx, nc, stream, relay.WithPublisherWait(grace), relay.WithLogger(log))
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, relay.ErrStreamNotFound) || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %s: the publisher's source: %w", transcode.ErrOpenInput, stream, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// publishWHIP keeps the job published to one WHIP target until ctx ends,
// reconnecting with backoff: a target that is down must not stop the job.
func publishWHIP(ctx context.Context, target jobs.PublishTarget, src pipeline.Source, log *slog.Logger) {
	log = log.With("whip", target.URL)
	backoff := 2 * time.Second
	for {
		p := &webrtc.Publisher{URL: target.URL, Token: target.Token, Source: src, Log: log}
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

// InProcess runs jobs inside this process (node.workers: false): fewer
// processes, no crash isolation. It implements jobs.Runner.
type InProcess struct {
	NC    *nats.Conn
	Retry jobs.RetryPolicy
	// Shares gives each job its CPU share for its FFmpeg threads (the
	// node's GOMAXPROCS stays: the process is shared).
	Shares Shares
	Log    *slog.Logger
}

var _ jobs.Runner = (*InProcess)(nil)

// Run implements jobs.Runner.
func (r *InProcess) Run(ctx context.Context, spec jobs.Spec, running func()) error {
	l, err := ladder.Resolve(spec.Ladder, spec.LadderYAML)
	if err != nil {
		return err
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("job", spec.ID)
	return runRestarting(ctx, spec, r.Retry, log, running, func(running func()) (int, error) {
		err := runJob(ctx, r.NC, spec, l, r.Shares.of(ctx), log, running)
		return exitCode(err), err
	})
}
