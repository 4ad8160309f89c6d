package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/prism-streaming/prism/benchmarks"
	"github.com/prism-streaming/prism/internal/node"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	input := fs.String("input", "", "input file (any libavformat URL)")
	ladderRef := fs.String("ladder", "mobile", "ladder YAML file, or the name of a shipped ladder")
	vsFFmpeg := fs.Bool("vs-ffmpeg", false, "also run the equivalent FFmpeg CLI command and print the ratio")
	ffmpegBin := fs.String("ffmpeg", "ffmpeg", "FFmpeg CLI to compare against")
	ffCascade := fs.Bool("ffmpeg-cascade", false, "give the FFmpeg CLI Prism's cascaded scaling graph instead of the plain split")
	direct := fs.Bool("direct-scaling", false, "make Prism scale every rung from the source, as the plain FFmpeg graph does")
	jsonOut := fs.String("json", "", "write the results as JSON to this file")
	calibrate := fs.String("calibrate", "", "save the measured pixel rate as this node's capacity in this data directory (read by prism serve when node.capacity is unset)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *input == "" {
		fmt.Fprintln(stderr, "prism bench: --input is required")
		fs.Usage()
		return errUsage
	}
	l, err := ladder.Resolve(*ladderRef, "")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	res := benchmarks.Report{Input: *input, Ladder: l.Name, CPUs: runtime.NumCPU()}
	before := benchmarks.SelfUsage()
	start := time.Now()
	src, err := transcode.Start(ctx, transcode.Options{Input: *input, Ladder: l, DirectScaling: *direct})
	if err != nil {
		return err
	}
	if err := src.Wait(); err != nil {
		return err
	}
	wall := time.Since(start)
	prism, videoFrames := benchmarks.PrismRun(src.Tracks(), src.Stats(), wall, before, benchmarks.SelfUsage())
	res.Prism = prism
	if *vsFFmpeg {
		args := transcode.FFmpegArgs(*input, l, src.Rungs(), src.SourceFPS(), src.HasAudio(), *ffCascade)
		res.FFmpegCommand = benchmarks.Quote(append([]string{*ffmpegBin}, args...))
		fmt.Fprintf(stdout, "running: %s\n", res.FFmpegCommand)
		ff, err := benchmarks.FFmpegRun(ctx, *ffmpegBin, args, stderr, videoFrames, prism.Media)
		if err != nil {
			return err
		}
		res.FFmpeg, res.Ratio = &ff, prism.FPS/ff.FPS
	}
	benchmarks.Print(stdout, &res)
	if *calibrate != "" {
		if err := node.SaveCapacity(*calibrate, prism.PixelRate, l.Name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "capacity %.3g pixels/s saved in %s\n", prism.PixelRate, node.CapacityFile(*calibrate))
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(&res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
