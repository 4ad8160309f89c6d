package transcode

import (
	"math"
	"runtime"

	"github.com/prism-streaming/prism/transcode/ladder"
)

// maxDecoderThreads is FFmpeg's own cap on automatic decoder threads
// (MAX_AUTO_THREADS): more frame threads only add frames of delay.
const maxDecoderThreads = 16

// threadPlan is how many threads each part of one job may start.
type threadPlan struct {
	encoders []int // per video rung, in rung order; a rung's own threads setting wins
	decoder  int   // video decoder; 0 lets FFmpeg take one per CPU of the machine
	filter   int   // the scaling graph
	procs    int   // GOMAXPROCS of a process that runs only this job; 0 leaves it
}

// planThreads plans a job's threads for its CPU share, in cores (the
// node's cores × the job's cost / the node's capacity). Without a share
// (0) the job plans for all numCPU CPUs, as every job did before shares:
// N such jobs on one node start N machines' worth of threads, and the
// contention costs throughput that capacity does not account for.
func planThreads(rungs []ladder.PlannedRung, share float64, numCPU int) threadPlan {
	if share <= 0 {
		return threadPlan{encoders: splitThreads(rungs, float64(numCPU)), filter: numCPU}
	}
	cores := max(1, int(math.Round(share)))
	return threadPlan{
		encoders: splitThreads(rungs, share),
		decoder:  min(cores, maxDecoderThreads),
		filter:   cores,
		procs:    procsFor(share, numCPU),
	}
}

// splitThreads splits cpus over the rungs' encoders by pixel rate, at
// least one thread each: the encoders together plan for cpus, not each.
func splitThreads(rungs []ladder.PlannedRung, cpus float64) []int {
	total := 0.0
	for _, r := range rungs {
		total += float64(r.OutWidth*r.OutHeight) * r.OutFPS
	}
	out := make([]int, len(rungs))
	for i, r := range rungs {
		if r.Threads > 0 {
			out[i] = r.Threads
			continue
		}
		share := float64(r.OutWidth*r.OutHeight) * r.OutFPS / total
		out[i] = max(1, int(math.Round(share*cpus)))
	}
	return out
}

// procsFor is the GOMAXPROCS of a process that runs one job with this
// share (0: no share, leave it). FFmpeg's threads do the encoding and run
// outside the Go scheduler (a cgo call holds a thread, not a P); the Go
// side moves packets to NATS and the outputs. Two Ps at least, so that a
// GC cycle does not stall that while a share is under two cores.
func procsFor(share float64, numCPU int) int {
	if share <= 0 {
		return 0
	}
	return max(1, min(numCPU, max(2, int(math.Ceil(share)))))
}

// LimitProcs sets this process's GOMAXPROCS for one job with a CPU share
// of cpus cores (Options.CPUs); 0 leaves it. Only a process that runs that
// job alone may call it (a worker, `prism transcode`): GOMAXPROCS is the
// whole process's.
func LimitProcs(cpus float64) {
	if p := procsFor(cpus, runtime.NumCPU()); p > 0 {
		runtime.GOMAXPROCS(p)
	}
}
