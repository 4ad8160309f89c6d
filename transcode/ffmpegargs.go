package transcode

import (
	"fmt"
	"strings"
	"time"

	"github.com/prism-streaming/prism/transcode/ladder"
)

// FFmpegArgs returns the FFmpeg CLI arguments that do the same work as a
// Transcoder on the same input and planned rungs: the same filter graph, the
// same encoder settings and keyframe placement, audio to AAC and Opus,
// output discarded. It is the benchmark's baseline, so keep it in step with
// the pipeline. The graph is the plain one a CLI user writes, every rung
// scaled from the decoded source (cascade false), or Prism's own (true).
func FFmpegArgs(input string, l *ladder.Ladder, rungs []ladder.PlannedRung, sourceFPS float64, withAudio, cascade bool) []string {
	v := &videoFilter{rungs: rungs, sourceFPS: sourceFPS, cascade: cascade, cliFPS: true}
	graph := strings.Replace(v.graphString(0, 0), "[in]", "[0:v]", 1)
	args := []string{"-hide_banner", "-nostats", "-loglevel", "error"}
	if strings.HasPrefix(input, LavfiPrefix) {
		args = append(args, "-f", "lavfi", "-i", strings.TrimPrefix(input, LavfiPrefix))
	} else {
		args = append(args, "-i", input)
	}
	args = append(args, "-filter_complex", graph)
	gop := time.Duration(l.GOP).Seconds()
	for i, r := range rungs {
		s := fmt.Sprintf(":v:%d", i)
		args = append(args, "-map", fmt.Sprintf("[o%d]", i),
			"-c"+s, "libx264", "-preset"+s, r.Preset, "-profile"+s, r.Profile,
			"-b"+s, fmt.Sprint(int64(r.Bitrate)), "-maxrate"+s, fmt.Sprint(int64(r.Maxrate)),
			"-bufsize"+s, fmt.Sprint(int64(r.Bufsize)), "-bf"+s, fmt.Sprint(r.BFrames),
			"-forced-idr"+s, "1", "-x264-params"+s, "scenecut=0:open-gop=0:keyint=infinite",
			"-force_key_frames"+s, fmt.Sprintf("expr:gte(t,n_forced*%g)", gop))
		if r.Tune != "" && r.Tune != "none" {
			args = append(args, "-tune"+s, r.Tune)
		}
	}
	if withAudio {
		args = append(args,
			"-map", "0:a:0", "-c:a:0", "aac", "-b:a:0", fmt.Sprint(int64(l.Audio.AAC.Bitrate)), "-ar:a:0", "48000", "-ac:a:0", fmt.Sprint(l.Audio.Channels),
			"-map", "0:a:0", "-c:a:1", "libopus", "-b:a:1", fmt.Sprint(int64(l.Audio.Opus.Bitrate)), "-ar:a:1", "48000", "-ac:a:1", fmt.Sprint(l.Audio.Channels))
	}
	return append(args, "-f", "null", "-")
}

// Rungs returns the rungs this job encodes, as planned for its input.
func (t *Transcoder) Rungs() []ladder.PlannedRung { return t.vfilter.rungs }

// SourceFPS returns the input's video frame rate.
func (t *Transcoder) SourceFPS() float64 { return t.vfilter.sourceFPS }

// HasAudio reports whether the input has an audio stream being encoded.
func (t *Transcoder) HasAudio() bool { return t.audio != nil }
