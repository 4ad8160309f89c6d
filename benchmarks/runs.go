package benchmarks

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// PrismRun turns a finished transcode's tracks and statistics into Prism's
// result: wall is the run's wall time, before and after the process's usage
// around it. It also returns the video frame count the FFmpeg run is
// measured against.
func PrismRun(tracks []pipeline.Track, stats pipeline.SourceStats, wall time.Duration, before, after Usage) (Run, uint64) {
	r := Run{Tool: "prism", Wall: wall.Seconds(), CPU: after.CPU - before.CPU, PeakRSS: after.MaxRSS, Media: stats.MediaTime.Seconds()}
	var videoFrames uint64
	for i, tr := range tracks {
		if tr.Kind != pipeline.KindVideo || i >= len(stats.Tracks) {
			continue
		}
		ts := stats.Tracks[i]
		videoFrames = max(videoFrames, ts.Frames)
		r.Rungs = append(r.Rungs, Rung{
			Name: tr.Name, Width: tr.Width, Height: tr.Height, Frames: ts.Frames,
			FPS: float64(ts.Frames) / wall.Seconds(), Kbps: ts.AvgBitrate / 1000,
		})
	}
	for _, g := range r.Rungs {
		r.PixelRate += float64(g.Width*g.Height) * g.FPS
	}
	r.FPS = float64(videoFrames) / wall.Seconds()
	r.Speed = r.Media / wall.Seconds()
	return r, videoFrames
}

// FFmpegRun runs the FFmpeg CLI with args (its log to stderr) and measures
// it the way PrismRun measures Prism: frames is the video frame count both
// produce, media the media time.
func FFmpegRun(ctx context.Context, bin string, args []string, stderr io.Writer, frames uint64, media float64) (Run, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Run{}, fmt.Errorf("ffmpeg: %w", err)
	}
	peak := WatchPeakRSS(cmd.Process.Pid)
	werr := cmd.Wait()
	wall := time.Since(start)
	peakRSS := peak()
	if werr != nil {
		return Run{}, fmt.Errorf("ffmpeg: %w", werr)
	}
	u := ProcessUsage(cmd.ProcessState)
	r := Run{Tool: "ffmpeg", Wall: wall.Seconds(), CPU: u.CPU, PeakRSS: peakRSS, Media: media}
	r.FPS = float64(frames) / wall.Seconds()
	r.Speed = r.Media / wall.Seconds()
	return r, nil
}
