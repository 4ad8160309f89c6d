package worker

import (
	"context"
	"math"

	"github.com/prism-streaming/prism/queue/jobs"
)

// Shares sizes each job's CPU share, the cores its threads are planned for
// (transcode.Options.CPUs): the node's Cores × the capacity the job holds
// (jobs.HeldCost) / the node's Capacity. Jobs admitted by capacity then
// share the node's cores instead of each planning threads for all of them.
// The zero value gives no share: every job plans for the whole machine.
// A worker's share is fixed when it starts: a job still at its ladder's
// nominal price (a pulled input not yet probed) gets that price's share,
// which is more than its source needs when that is smaller than 1080p30.
type Shares struct {
	Cores    int     // the node's CPUs (runtime.GOMAXPROCS(0): a cgroup limit counts)
	Capacity float64 // the node's capacity in pixels per second (jobs.Node.Capacity)
}

// of is the share of the job whose runner was given ctx.
func (s Shares) of(ctx context.Context) float64 {
	return CPUShare(s.Cores, jobs.HeldCost(ctx), s.Capacity)
}

// CPUShare is cores × cost / capacity to a tenth of a core, at least one
// core (a job below that still runs its encoders at one thread each) and
// at most all of them. 0, no share, when any of them is unknown.
func CPUShare(cores int, cost, capacity float64) float64 {
	if cores <= 0 || cost <= 0 || capacity <= 0 {
		return 0
	}
	share := math.Round(float64(cores)*cost/capacity*10) / 10
	return min(max(share, 1), float64(cores))
}
