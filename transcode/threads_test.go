package transcode

import (
	"fmt"
	"slices"
	"testing"

	"github.com/prism-streaming/prism/transcode/ladder"
)

func TestPlanThreadsForShare(t *testing.T) {
	p1080, p720, p480 := planned("1080p", 1920, 1080, 30), planned("720p", 1280, 720, 30), planned("480p", 854, 480, 30)
	p360, p240 := planned("360p", 640, 360, 30), planned("240p", 426, 240, 30)
	ladders := [][]ladder.PlannedRung{
		{p720},
		{p720, p360},
		{p1080, p720, p360},
		{p1080, p720, p480, p360},
		{p1080, p720, p480, p360, p240},
	}
	// Encoder threads per rung by pixel rate, at least one each; decoder
	// and filter get the share rounded (at least one); GOMAXPROCS is the
	// share rounded up, at least two, on a 16-CPU machine.
	for _, ca := range []struct {
		rungs    int
		share    float64
		encoders []int
		cores    int
		procs    int
	}{
		{1, 0.5, []int{1}, 1, 2},
		{1, 1, []int{1}, 1, 2},
		{1, 2, []int{2}, 2, 2},
		{1, 4, []int{4}, 4, 4},
		{1, 16, []int{16}, 16, 16},
		{2, 0.5, []int{1, 1}, 1, 2},
		{2, 1, []int{1, 1}, 1, 2},
		{2, 2, []int{2, 1}, 2, 2},
		{2, 4, []int{3, 1}, 4, 4},
		{2, 16, []int{13, 3}, 16, 16},
		{3, 0.5, []int{1, 1, 1}, 1, 2},
		{3, 1, []int{1, 1, 1}, 1, 2},
		{3, 2, []int{1, 1, 1}, 2, 2},
		{3, 4, []int{3, 1, 1}, 4, 4},
		{3, 16, []int{10, 5, 1}, 16, 16},
		{4, 0.5, []int{1, 1, 1, 1}, 1, 2},
		{4, 1, []int{1, 1, 1, 1}, 1, 2},
		{4, 2, []int{1, 1, 1, 1}, 2, 2},
		{4, 4, []int{2, 1, 1, 1}, 4, 4},
		{4, 16, []int{9, 4, 2, 1}, 16, 16},
		{5, 0.5, []int{1, 1, 1, 1, 1}, 1, 2},
		{5, 1, []int{1, 1, 1, 1, 1}, 1, 2},
		{5, 2, []int{1, 1, 1, 1, 1}, 2, 2},
		{5, 4, []int{2, 1, 1, 1, 1}, 4, 4},
		{5, 16, []int{9, 4, 2, 1, 1}, 16, 16},
	} {
		t.Run(fmt.Sprintf("%d rungs, %g cores", ca.rungs, ca.share), func(t *testing.T) {
			got := planThreads(ladders[ca.rungs-1], ca.share, 16)
			want := threadPlan{encoders: ca.encoders, decoder: ca.cores, filter: ca.cores, procs: ca.procs}
			if !slices.Equal(got.encoders, want.encoders) || got.decoder != want.decoder ||
				got.filter != want.filter || got.procs != want.procs {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

// Without a share a job plans for the whole machine, as before shares:
// FFmpeg's automatic decoder threads, the filter and the encoders over
// every CPU, GOMAXPROCS left alone.
func TestPlanThreadsWithoutShare(t *testing.T) {
	rungs := []ladder.PlannedRung{planned("1080p", 1920, 1080, 30), planned("720p", 1280, 720, 30), planned("360p", 640, 360, 30)}
	for _, ca := range []struct {
		cpus     int
		encoders []int
	}{
		{2, []int{1, 1, 1}},
		{16, []int{10, 5, 1}},
	} {
		got := planThreads(rungs, 0, ca.cpus)
		if !slices.Equal(got.encoders, ca.encoders) || got.decoder != 0 || got.filter != ca.cpus || got.procs != 0 {
			t.Errorf("%d CPUs: got %+v, want encoders %v, decoder 0, filter %d, procs 0", ca.cpus, got, ca.encoders, ca.cpus)
		}
	}
	rungs[2].Threads = 3
	if got := planThreads(rungs, 0, 16); got.encoders[2] != 3 {
		t.Errorf("explicit threads ignored: %v", got.encoders)
	}
	if got := planThreads(rungs, 1, 16); got.encoders[2] != 3 {
		t.Errorf("explicit threads ignored with a share: %v", got.encoders)
	}
}

// A machine with fewer CPUs than the share gets no more Ps than CPUs.
func TestProcsForSmallMachine(t *testing.T) {
	for _, ca := range []struct {
		share  float64
		numCPU int
		want   int
	}{{0, 2, 0}, {0.5, 1, 1}, {0.5, 2, 2}, {1.5, 2, 2}, {4, 2, 2}, {2.2, 8, 3}} {
		if got := procsFor(ca.share, ca.numCPU); got != ca.want {
			t.Errorf("procsFor(%g, %d) = %d, want %d", ca.share, ca.numCPU, got, ca.want)
		}
	}
}
