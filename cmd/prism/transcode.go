package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/prism-streaming/prism/outputs/file"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

func cmdTranscode(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("transcode", stderr)
	input := fs.String("input", "", "input URL: file, rtmp://, rtsp://, srt://, http(s):// HLS, or lavfi:<graph>")
	ladderRef := fs.String("ladder", "default", "ladder YAML file, or the name of a shipped ladder")
	outDir := fs.String("output-dir", "", "directory for <rung>.mp4, audio_aac.mp4 and audio_opus.mp4")
	duration := fs.Duration("duration", 0, "stop after this much media time (default: end of input)")
	realtime := fs.Bool("realtime", false, "read file and lavfi inputs at 1x, as a live source")
	cpus := cpusFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cpus < 0 {
		fmt.Fprintln(stderr, "prism transcode: --cpus must not be negative")
		return errUsage
	}
	if *input == "" || *outDir == "" {
		fmt.Fprintln(stderr, "prism transcode: --input and --output-dir are required")
		fs.Usage()
		return errUsage
	}
	l, err := ladder.Resolve(*ladderRef, "")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	transcode.LimitProcs(*cpus)
	job, err := transcode.Start(ctx, transcode.Options{Input: *input, Ladder: l, Duration: *duration, Realtime: *realtime, CPUs: *cpus})
	if err != nil {
		return err
	}
	// One file per rung, and the two audio encodings, each a lossless reader.
	var writers []*file.MP4Writer
	var readers []*pipeline.Reader
	for _, tr := range job.Tracks() {
		name := tr.Name + ".mp4"
		if tr.Kind == pipeline.KindAudio {
			name = "audio_" + tr.Name + ".mp4"
		}
		writers = append(writers, &file.MP4Writer{Path: filepath.Join(*outDir, name), Tracks: []pipeline.Track{tr}})
		readers = append(readers, job.Subscribe(pipeline.WithTracks(tr.ID), pipeline.Lossless(), pipeline.WithName(name)))
	}
	var wg sync.WaitGroup
	werrs := make([]error, len(writers))
	for i, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			werrs[i] = w.Run(context.Background(), readers[i])
			if werrs[i] != nil {
				job.Close() // a writer that cannot write would stall the job
			}
		}()
	}
	select {
	case <-job.Done():
	case <-ctx.Done():
		fmt.Fprintln(stderr, "prism: interrupted, finishing files")
	}
	jerr := job.Close()
	wg.Wait()
	if ctx.Err() != nil {
		jerr = nil // a stop asked for by the user is not a failure
	}
	if err := errors.Join(append([]error{jerr}, werrs...)...); err != nil {
		return err
	}
	printSummary(stdout, job.Stats(), job.Tracks(), writers)
	return nil
}

func printSummary(w io.Writer, s pipeline.SourceStats, tracks []pipeline.Track, writers []*file.MP4Writer) {
	fmt.Fprintf(w, "transcoded %.2fs of media in %.2fs (%.2fx real time)\n",
		s.MediaTime.Seconds(), s.Uptime.Seconds(), s.Speed)
	for i, ts := range s.Tracks {
		tr := tracks[i]
		desc := fmt.Sprintf("%s %s", tr.Codec, tr.Encoder)
		if tr.Kind == pipeline.KindVideo {
			desc = fmt.Sprintf("%dx%d@%.3g %s", tr.Width, tr.Height, tr.FPS, desc)
		}
		fmt.Fprintf(w, "  %-6s %-28s %6d frames  %8.0f kbit/s", ts.Track, desc, ts.Frames, ts.AvgBitrate/1000)
		if i < len(writers) {
			fmt.Fprintf(w, "  -> %s", writers[i].Path)
		}
		fmt.Fprintln(w)
	}
}
